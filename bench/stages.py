"""A benchmark stage in a fresh interpreter, so that the peak RSS it reports is its own and not its predecessors'."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_stage(script: str | Path, name: str, *args, code: Path | None = None) -> dict:
    """Run ``script --stage name args...`` and return the JSON object its last output line holds; with ``code`` (a
    checkout of another revision), the stage imports ubp_pipeline from there."""
    env = (
        {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
        if code
        else None
    )
    command = [sys.executable, str(script), "--stage", name, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} {' '.join(map(str, args))} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
