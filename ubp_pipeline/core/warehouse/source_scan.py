"""What a source directory holds right now: its files with a change signature, and the days they cover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from ubp_pipeline.core.common.sql import run_sql
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.source_layout import PRODUCT_PROPERTIES, SourceError, SourceLayout


@dataclass(frozen=True)
class FileChange:
    table: str
    path: str
    signature: str  # size and modification time: a new signature means new content to ingest


def _signature(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def changed_files(layout: SourceLayout, seen: dict[str, str]) -> tuple[list[FileChange], dict[str, str]]:
    """Files whose signature differs from ``seen`` (path -> signature), and the signatures of all files now."""
    now: dict[str, str] = {}
    changes = []
    for table in (PRODUCT_PROPERTIES, *EVENT_TYPES):
        try:
            files = layout.files(table)
        except SourceError:
            continue  # a table not (yet) delivered is not a change
        for path in files:
            signature = _signature(path)
            now[str(path)] = signature
            if seen.get(str(path)) != signature:
                changes.append(FileChange(table, str(path), signature))
    return changes, now


def day_range(files: list[str | Path]) -> tuple[date, date]:
    """First and last event day in the given parquet files (unreadable timestamps ignored)."""
    with duckdb.connect() as con:
        first_day, last_day = run_sql(con, "warehouse/source_day_range", files=[str(f) for f in files]).fetchone()
    if first_day is None:
        raise SourceError(f"no readable timestamp in {', '.join(map(str, files))}")
    return first_day, last_day


def detect_day_range(layout: SourceLayout) -> tuple[date, date]:
    """The first and last event day of a source directory, over all event types present."""
    files = [f for t in layout.event_types_present() for f in layout.checked_files(t)]
    if not files:
        raise SourceError(f"no event files in {layout.directory}")
    return day_range(files)
