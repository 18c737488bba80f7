"""A benchmark stage in a fresh interpreter, so that the peak RSS it reports is its own and not its predecessors'."""

import json
import subprocess
import sys
from pathlib import Path


def run_stage(script: str | Path, name: str, *args) -> dict:
    """Run ``script --stage name args...`` and return the JSON object its last output line holds."""
    done = subprocess.run([sys.executable, str(script), "--stage", name, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} {' '.join(map(str, args))} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
