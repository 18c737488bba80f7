"""Every benchmark script still imports what it uses: `make bench` runs them rarely, so a refactor that renames a
core function would otherwise break one unnoticed until someone needs its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "bench").glob("bench_*.py"))


def test_the_bench_folder_holds_scripts():
    assert len(SCRIPTS) >= 10, [script.name for script in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda script: script.name)
def test_a_benchmark_script_loads_and_describes_its_options(script):
    # as the README says to run them: from the repository root with the project on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
