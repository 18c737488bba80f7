"""Every benchmark script still imports what it uses: `make bench` runs them rarely, so a refactor that renames a
core function would otherwise break one unnoticed until someone needs its figures."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
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


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda script: script.name)
def test_every_project_name_a_benchmark_imports_inside_its_functions_exists(script):
    # stages import inside their functions (each runs in a fresh interpreter), which --help never reaches
    imports = [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(script.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ubp_pipeline")
        for alias in node.names
    ]
    assert imports, f"{script.name} imports nothing from ubp_pipeline"
    missing = [f"from {module} import {name}" for module, name in imports if not _resolves(module, name)]
    assert not missing, missing


def _resolves(module: str, name: str) -> bool:
    """``from module import name`` would work: an attribute of the module, or a submodule of the package."""
    imported = importlib.import_module(module)
    if hasattr(imported, name):
        return True
    return hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None


def test_the_sae_sweep_keeps_one_sasrec_recipe_per_page(tmp_path, monkeypatch):
    # a rerun of one seed after a recipe change would otherwise mix two recipes on one page
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sweep = importlib.import_module("bench_sae_sweep")
    monkeypatch.setattr(sweep, "RESULTS", tmp_path)
    monkeypatch.setattr(sweep, "render", lambda report: f"{len(report['runs'])} runs")
    stored = tmp_path / f"{sweep.STEM}.json"
    recipe = {"sasrec": sweep.SASREC, "sasrec_training": {"epochs": 40}}
    stored.write_text(json.dumps({"runs": [{"seed": 0} | recipe | {"sasrec": {"n_blocks": 2}}]}))
    before = stored.read_text()
    with pytest.raises(SystemExit, match="another SASRec recipe"):
        sweep.merge_and_render([{"seed": 1} | recipe])
    assert stored.read_text() == before and not (tmp_path / f"{sweep.STEM}.md").exists()

    sweep.merge_and_render([{"seed": 1} | recipe], replacing=[0, 1])  # seed 0 to be rerun too: one recipe
    assert [run["seed"] for run in json.loads(stored.read_text())["runs"]] == [1]
    assert (tmp_path / f"{sweep.STEM}.md").read_text() == "1 runs"
    sweep.merge_and_render([{"seed": 0} | recipe], replacing=[0, 1])
    assert [run["seed"] for run in json.loads(stored.read_text())["runs"]] == [0, 1]
    with pytest.raises(SystemExit, match="another SASRec recipe"):  # the training recipe counts as well
        sweep.merge_and_render([{"seed": 2} | recipe | {"sasrec_training": {"epochs": 80}}])
