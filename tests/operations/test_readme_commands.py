"""The README's commands typed as a user types them, in a plain shell where the virtual environment was never
activated: `make run SOURCE=...` in a fresh copy of the repository's top level, then the `ubp export` and
`ubp recommend` commands its summary prints, on what it built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.operations.test_cli import plain_shell
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.data.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]  # the environment `make setup` built, which the copy shares
# Enough users for every stage, the recommender included (see the main job's test in test_cli.py).
SOURCE = SyntheticConfig(users=2_000, days=75, seed=5, start=date(2022, 8, 1))
BACKTEST_DAY = "2022-09-16"  # 28 days before the last day: the models' training day


def _fresh_clone(root: Path) -> Path:
    """What `make` reads (copied with their times, so make judges the set-up as it would in the repository), the
    instance config, and the project's environment at .venv."""
    clone = root / "clone"
    (clone / "dagster_home").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "dagster_home/dagster.yaml"):
        shutil.copy2(REPO / name, clone / name)
    (clone / ".venv").symlink_to(VENV)
    return clone


def _typed(command: str, clone: Path) -> str:
    done = subprocess.run(command, shell=True, cwd=clone, env=plain_shell(), capture_output=True, text=True, timeout=1_100)
    assert done.returncode == 0, f"`{command}` failed:\n{done.stdout[-3_000:]}\n{done.stderr[-3_000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1_200)  # the whole main job on 2,000 users: minutes on two busy cores
def test_make_run_then_export_and_recommend_as_the_readme_says(tmp_path):
    source = tmp_path / "ubc_data"
    generate(SOURCE, source)
    clone = _fresh_clone(tmp_path)

    # -o: the set-up already ran (`make test` does it first): never reinstall into the shared environment here.
    # Variables from the README's Configuration table: the quick probe keeps the backtest short, one torch thread
    # keeps a shared machine from thrashing.
    summary = _typed(f"UBP_PROBE=quick UBP_TORCH_THREADS=1 make -o .venv/bin/.installed run SOURCE={source}", clone)
    assert f"sasrec_model (trained on {BACKTEST_DAY}: " in summary
    # its runs went to an instance beside its data, not to the project's (the demo's)
    assert (clone / "data" / "ubc_data" / "dagster_home" / "history" / "runs.db").is_file()
    assert not (clone / "dagster_home" / "history").exists()

    # the summary names the commands that reach this source again, `--source` included
    assert f"`make ui SOURCE={source}`" in summary
    export = re.search(
        r"for the challenge's evaluator: (\S+ export --day )<day>( --source \S+)$", summary, re.MULTILINE
    )
    assert export and export.group(2) == f" --source {source}", summary[-3_000:]
    exported = _typed(f"{export.group(1)}{BACKTEST_DAY}{export.group(2)}", clone)
    assert "valid: int64 ids, float16 embeddings" in exported
    assert (clone / "data" / "ubc_data" / "export" / BACKTEST_DAY / "embeddings.npy").is_file()

    with connect_warehouse(clone / "data" / "ubc_data" / "warehouse.duckdb", read_only=True) as con:
        (client,) = con.execute(
            "SELECT client_id FROM events WHERE event_type = 'product_buy' GROUP BY ALL ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchone()
    suggested = re.search(
        rf"try it: (\S+ recommend --client {client} --steer \S+ --source \S+)$", summary, re.MULTILINE
    )
    assert suggested or "steering: no feature fired often enough" in summary, summary[-3_000:]
    command = suggested.group(1) if suggested else f".venv/bin/ubp recommend --client {client} --source {source}"
    recommended = _typed(command, clone)  # as the summary printed it, its example client included
    assert re.search(rf"^client {client}: \d+ skus the model knows", recommended, re.MULTILINE)
    assert re.search(r"^ {3}1  \S", recommended, re.MULTILINE)  # the first row of the ranking
