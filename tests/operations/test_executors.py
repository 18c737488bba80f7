"""The process-per-step executor as a user meets it: `dagster asset materialize ...` and `ubp run` (ubp's runner)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.factories import pipeline_env
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.executors import executor_for

REPO = Path(__file__).resolve().parents[2]


def test_dagster_cli_materializes_a_partition_with_the_multiprocess_executor(tiny_source, tmp_path):
    last_day = TINY.start + timedelta(days=TINY.days - 1)
    env = pipeline_env(tiny_source, tmp_path, TINY.start, last_day, UBP_EXECUTOR="multiprocess")
    (tmp_path / "dagster_home").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "ubp_pipeline.definitions",
               "--select", "product_properties,raw_product_buy", "--partition", "2022-06-30"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "multiprocess" in done.stdout + done.stderr  # the steps ran in child processes
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb", read_only=True) as con:
        days = con.execute("SELECT list(DISTINCT CAST(event_date AS VARCHAR)) FROM events").fetchone()[0]
    assert days == ["2022-06-30"]


def test_an_unknown_executor_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="in_process, multiprocess, k8s, celery"):
        executor_for("threads")


RUNNER_SCRIPT = """
import os, dagster as dg
from datetime import date
from ubp_pipeline.definitions import defs
from ubp_pipeline.runner import materialize
with dg.DagsterInstance.get() as instance:
    result = materialize(defs, ["product_properties", "raw_product_buy"], instance, partition=date(2022, 6, 30))
    starts = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
    print(result.success, os.getpid(), *sorted({entry.dagster_event.pid for entry in starts}))
"""


def test_the_runner_honours_the_executor_setting_and_runs_steps_in_child_processes(tiny_source, tmp_path):
    """What `ubp run` does with UBP_EXECUTOR=multiprocess: the settings come from the environment, as the CLI sets them."""
    last_day = TINY.start + timedelta(days=TINY.days - 1)
    env = pipeline_env(tiny_source, tmp_path, TINY.start, last_day, UBP_EXECUTOR="multiprocess", PYTHONPATH=str(REPO))
    (tmp_path / "dagster_home").mkdir()
    done = subprocess.run([sys.executable, "-c", RUNNER_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    success, runner_pid, *step_pids = done.stdout.split()
    assert success == "True" and len(step_pids) == 2 and runner_pid not in step_pids  # each step in its own process
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb", read_only=True) as con:
        days = con.execute("SELECT list(DISTINCT CAST(event_date AS VARCHAR)) FROM events").fetchone()[0]
    assert days == ["2022-06-30"]
