"""A `ubp` process killed in the middle of a run cannot record the run's end: the next `ubp` start on the host marks
that run failed, with a message, instead of leaving it STARTED forever."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import dagster as dg

from tests.factories import stop_process_group, write_source
from tests.operations.test_cli import BIN, _free_port, _without_venv
from ubp_pipeline.cli import _ensure_dagster_home
from ubp_pipeline.core.warehouse.database import connect_warehouse

UNFINISHED = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])


def _wait_for(condition, what: str, process: subprocess.Popen, log, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:.0f} s:\n{log.read_text()}"
        time.sleep(0.2)
    return found


def _started_step(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """The run that is STARTED with a step under way, if any."""
    for record in instance.get_run_records(UNFINISHED):
        if instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START):
            return record.dagster_run
    return None


def _ubp(args: list[str], tmp_path, log_name: str) -> subprocess.Popen:
    with open(tmp_path / log_name, "w") as log:
        return subprocess.Popen(
            [str(BIN / "ubp"), *args], env=_without_venv(tmp_path), cwd=tmp_path, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT,
        )


def test_a_run_whose_process_was_killed_is_marked_failed_by_the_next_start(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", {"page_visit": [(1, "2022-07-01 10:00:00", 5), (2, "2022-07-02 10:00:00", 6)]})
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    _ensure_dagster_home()  # the instance storage exists before the run, so the test never reads it half-created
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb"):  # holds the file: the run's first step waits on it
        killed = _ubp(["run", "--source", str(source)], tmp_path, "run.log")
        with dg.DagsterInstance.get() as instance:
            run = _wait_for(lambda: _started_step(instance), "a step start", killed, tmp_path / "run.log")
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)

    message = (
        f"run {run.run_id} was left STARTED by process {killed.pid} on {socket.gethostname()}, which no longer runs "
        "(killed?): marked as failed"
    )
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nobody recorded its end
        ui = _ubp(["ui", "--port", str(_free_port()), "--source", str(source)], tmp_path, "ui.log")
        try:
            # the line is printed after the failure is recorded: waiting for the status alone could stop `ubp ui`
            # between the two
            _wait_for(
                lambda: f"ubp: {message}" in (tmp_path / "ui.log").read_text(),
                "saying the run was marked failed", ui, tmp_path / "ui.log", seconds=120,
            )
        finally:
            stop_process_group(ui)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.message == message
    assert "Dagster UI on http://" in (tmp_path / "ui.log").read_text()  # printed before `ubp ui` becomes Dagster's
