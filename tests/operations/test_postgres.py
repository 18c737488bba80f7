"""The instance storage a team deploys: the pipeline's runs, backfills and pools against a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import dagster as dg
import pytest

from tests.conftest import TINY
from tests.factories import settings_for
from tests.operations.test_faults import _overlapping_steps, ingest_both_halves_at_once
from tests.postgres import REPO, postgres_home, postgres_server
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.resources import DUCKDB_POOL
from ubp_pipeline.runner import materialize

LAST = TINY.start + timedelta(days=TINY.days - 1)


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_instance_home(postgres_url, tmp_path, monkeypatch):
    """A fresh DAGSTER_HOME on a fresh database of the server (the previous test's runs dropped)."""
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    home = postgres_home(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.wipe()
    return home


def test_a_range_backfill_is_one_run_whose_partitions_postgres_records(tiny_source, tmp_path, postgres_instance_home):
    defs = build_definitions(settings_for(tiny_source, tmp_path / "home", TINY.start, LAST))
    with dg.DagsterInstance.from_config(str(postgres_instance_home)) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        assert materialize(defs, "group:ingest", instance, partition_range=(TINY.start, LAST)).success
        assert materialize(defs, "user_sequences", instance, partition=LAST).success
        assert len(instance.get_run_records()) == 2
        days = instance.get_materialized_partitions(dg.AssetKey("raw_page_visit"))
        assert len(days) == TINY.days and LAST.isoformat() in days
        assert instance.get_materialized_partitions(dg.AssetKey("user_sequences")) == {LAST.isoformat()}


def test_two_runs_started_at_once_share_postgres_and_the_duckdb_pool(tiny_source, tmp_path, postgres_instance_home):
    ingest_both_halves_at_once(tiny_source, tmp_path)
    assert not _overlapping_steps(postgres_instance_home)


# Waits until the given time, then creates the warehouse pool as `ubp run` does before its run starts.
CREATE_POOL_AT = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from ubp_pipeline.runner import ensure_pools
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.get_concurrency_keys()  # connected and migrated before the start line
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        ensure_pools(instance)
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_runs_starting_together_on_a_fresh_database_both_create_the_pool(postgres_instance_home, attempt):
    """Dagster's own first claim of a pool fails one of two runs that make it at the same moment on PostgreSQL
    (dagster#33552; it failed every one of 25 such starts here): the pool is made before the run, race-safe."""
    env = {**os.environ, "DAGSTER_HOME": str(postgres_instance_home), "PYTHONPATH": str(REPO)}
    start = time.time() + 3
    creators = [subprocess.Popen([sys.executable, "-c", CREATE_POOL_AT, str(start)], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [creator.communicate(timeout=120)[0] for creator in creators]
    assert [creator.returncode for creator in creators] == [0, 0], outputs
    with dg.DagsterInstance.from_config(str(postgres_instance_home)) as instance:
        assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1
