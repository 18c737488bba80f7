"""The DuckDB file that holds the catalogue, the accepted raw events and the quarantine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ubp_pipeline.core.sql import run_sql


@contextmanager
def connect_warehouse(
    path: str | Path, *, read_only: bool = False, threads: int = 0, memory_limit: str = ""
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, creating its tables on first write.

    Timestamps are naive (TIMESTAMP, no zone): the input format has none, and an event's day must not shift with
    the zone of whatever host runs the pipeline.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist yet: ingest the raw events first")
    path.parent.mkdir(parents=True, exist_ok=True)
    config: dict[str, str] = {}
    if threads:
        config["threads"] = str(threads)
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    try:
        if not read_only:
            run_sql(con, "schema")
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
