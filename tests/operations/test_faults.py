"""Concurrency and faults: simultaneous runs, a run killed while training, a transient failure retried."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from tests.conftest import TINY
from tests.factories import settings_for
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.resources import Warehouse
from ubp_pipeline.runner import materialize

REPO = Path(__file__).resolve().parents[2]
LAST = TINY.start + timedelta(days=TINY.days - 1)

RUN_SCRIPT = textwrap.dedent(
    """
    import sys, dagster as dg
    from datetime import date
    from pathlib import Path
    from tests.factories import settings_for
    from ubp_pipeline.definitions import build_definitions
    from ubp_pipeline.runner import materialize
    source, home, first, last, selection, config = sys.argv[1:7]
    settings = settings_for(Path(source), Path(home), date.fromisoformat("2022-06-23"), date.fromisoformat("2022-07-13"))
    with dg.DagsterInstance.get() as instance:
        result = materialize(build_definitions(settings), selection.split(","), instance,
                             partition_range=(date.fromisoformat(first), date.fromisoformat(last)) if first else None,
                             run_config=eval(config))
    sys.exit(0 if result.success else 1)
    """
)


def _launch(tmp_path, source, selection, first="", last="", config="None") -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(source), str(tmp_path / "home"), first, last, selection, config],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _dagster_home(tmp_path) -> None:
    """The project's instance config (DuckDB pool of one) in a fresh home, its storage created before runs share it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)):
        pass


def ingest_both_halves_at_once(tiny_source, tmp_path) -> None:
    """Two ingest runs over the two halves of the tiny data, started together; both succeed and every page visit
    of the source is stored or quarantined, on every day."""
    halves = [("2022-06-23", "2022-07-02"), ("2022-07-03", "2022-07-13")]
    runs = [_launch(tmp_path, tiny_source, "group:ingest", first, last) for first, last in halves]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    failed = [f"run {i} exited {run.returncode}:\n{out[-6000:]}" for i, (run, out) in enumerate(zip(runs, outputs))
              if run.returncode]
    if failed:
        pytest.fail("\n\n".join(failed), pytrace=False)  # in full: an assert's message would be cut to a few lines
    source_rows = len(pd.read_parquet(tiny_source / "page_visit.parquet"))
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb", read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM events WHERE event_type = 'page_visit'").fetchone()[0]
        refused = con.execute("SELECT count(*) FROM quarantine WHERE source = 'page_visit'").fetchone()[0]
        days = con.execute("SELECT count(DISTINCT event_date) FROM events").fetchone()[0]
    assert stored + refused == source_rows and days == TINY.days


def test_two_runs_launched_at_once_write_the_warehouse_one_after_the_other(tiny_source, tmp_path):
    _dagster_home(tmp_path)
    ingest_both_halves_at_once(tiny_source, tmp_path)
    # The pool, not the file lock, serialises them: no DuckDB step of one run overlaps one of the other (without the
    # pool both steps would start at once and one would wait on the lock inside its step, seconds of overlap).
    assert not _overlapping_steps(tmp_path / "dagster_home")


SLOT_HANDOVER_SECONDS = 0.5  # a freed pool slot may start the next step before the last one's success is logged


def _overlapping_steps(home: Path) -> list[tuple]:
    """Pairs of steps of the two runs whose (start, end) windows overlap by more than a slot handover."""
    first, second = _step_windows(home)
    return [
        (a, b) for a in first for b in second if min(a[1], b[1]) - max(a[0], b[0]) > SLOT_HANDOVER_SECONDS
    ]


def _step_windows(home: Path) -> list[list[tuple[float, float]]]:
    """Per run of the instance, the (start, end) times of each of its steps."""
    ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    windows = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            started: dict[str, float] = {}
            spans = []
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    started[event.step_key] = entry.timestamp
                elif event.event_type in ends:
                    spans.append((started[event.step_key], entry.timestamp))
            windows.append(spans)
    assert len(windows) == 2 and all(windows), windows
    return windows


def _weights_digest(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "weights.safetensors").read_bytes()).hexdigest()


def test_a_run_killed_while_training_leaves_the_previous_model_and_a_rerun_succeeds(tiny_source, tmp_path):
    settings = settings_for(tiny_source, tmp_path / "home", TINY.start, LAST)
    defs = build_definitions(settings)
    day = (TINY.start + timedelta(days=14)).isoformat()
    model = "gru_day_event_model"
    learns = {"max_epochs": 4, "learning_rate": 3e-3, "warmup_steps": 20}  # passes learned_every_field on the tiny set
    quick = {"ops": {model: {"config": {"training_day": day, "overrides": learns}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(TINY.start, LAST)).success
        assert materialize(defs, "user_sequences", instance, partition=date.fromisoformat(day)).success
        assert materialize(defs, model, instance, run_config=quick).success
    model_dir = settings.artifact_dir / model / day
    before = _weights_digest(model_dir)

    _dagster_home(tmp_path)
    long = {"ops": {model: {"config": {"training_day": day, "overrides": {"max_epochs": 500, "patience": 500}}}}}
    run = _launch(tmp_path, tiny_source, model, config=repr(long))
    seen = _read_until(run, "gru_day_event epoch 2")  # killed mid-training, with epochs already done
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert "gru_day_event epoch 1" in seen

    assert _weights_digest(model_dir) == before  # the killed run never replaced the stored model
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, model, instance, run_config=quick).success


def _read_until(run: subprocess.Popen, marker: str) -> str:
    """The run's output up to the first line holding ``marker``; fails if the run ends first."""
    seen = []
    for line in run.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"the run ended before {marker!r}:\n" + "".join(seen))


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ubp_pipeline.core.common.atomic import atomic_dir
    target, ready = Path(sys.argv[1]), Path(sys.argv[2])
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"half of the new")
        ready.touch()
        time.sleep(60)
    """
)


def test_a_write_killed_halfway_leaves_the_previous_folder_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"the old weights")
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), str(ready)], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the middle of its write"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert (target / "weights.bin").read_bytes() == b"the old weights"


class FlakyWarehouse(Warehouse):
    """The first connection fails like a disk hiccup would; later ones work."""

    marker: str

    @contextmanager
    def connect(self, read_only: bool = False):
        if not Path(self.marker).exists():
            Path(self.marker).touch()
            raise duckdb.IOException("IO Error: could not read from the warehouse file (transient)")
        with super().connect(read_only) as con:
            yield con


def test_a_transient_failure_is_retried_by_policy(tiny_source, tmp_path):
    settings = settings_for(tiny_source, tmp_path / "home", TINY.start, LAST)
    defs = build_definitions(settings)
    flaky = FlakyWarehouse(path=str(settings.warehouse_path), marker=str(tmp_path / "failed-once"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            assets=list(defs.assets), resources={**defs.resources, "warehouse": flaky},
            selection="product_properties", instance=instance,
        )
        events = [e.event_type_value for e in result.all_events]
    assert result.success
    assert "STEP_UP_FOR_RETRY" in events and events.count("STEP_SUCCESS") == 1
