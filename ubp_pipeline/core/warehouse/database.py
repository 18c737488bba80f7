"""The DuckDB file that holds the catalogue, the accepted raw events and the quarantine."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ubp_pipeline.core.common.sql import run_sql

LOCK_WAIT_SECONDS = 600.0
MEMORY_CAP_BYTES = 8 * 2**30


def default_memory_limit() -> str:
    """DuckDB's own default (80 % of the machine's memory), capped at 8 GiB. Uncapped, ingesting 125M events held
    19.5 GiB on a 23 GiB machine; capped, DuckDB spilled and took 7.9 GiB in the same time (one run each, README's
    benchmark table)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(MEMORY_CAP_BYTES, int(0.8 * physical)) // 2**20}MiB"


def _connect_when_free(path: Path, read_only: bool, config: dict[str, str], wait: float) -> duckdb.DuckDBPyConnection:
    """DuckDB lets one process write a file at a time; another process waits for the lock instead of failing."""
    deadline, pause = time.monotonic() + wait, 0.1
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


@contextmanager
def connect_warehouse(
    path: str | Path,
    *,
    read_only: bool = False,
    threads: int = 0,
    memory_limit: str = "",
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, creating its tables on first write.

    Timestamps are naive (TIMESTAMP, no zone): the input format has none, and an event's day must not shift with
    the zone of whatever host runs the pipeline. ``memory_limit`` (DuckDB units, e.g. "16GB") defaults to
    ``default_memory_limit()``.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist yet: ingest the raw events first")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"memory_limit": memory_limit or default_memory_limit()}
    if threads:
        config["threads"] = str(threads)
    con = _connect_when_free(path, read_only, config, lock_wait_seconds)
    try:
        if not read_only:
            run_sql(con, "warehouse/schema")
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All statements in the block commit together, or none do."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
