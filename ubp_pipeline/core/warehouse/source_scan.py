"""What a source directory holds right now: its files with a change signature, and the days they cover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from ubp_pipeline.core.common.sql import run_sql
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.source_layout import PRODUCT_PROPERTIES, SourceError, SourceLayout, reading_source


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


MAX_DETECTED_DAYS = 3660  # ten years of daily partitions: a wider detected range is refused, never planned
DETACHED_GAP_DAYS = 30  # days with data further apart than this split the data into separate stretches
SPARSE_SHARE = 0.01  # a detached stretch with less than this share of all rows is taken for bad clocks, not data
SHOWN_ROWS = 3


@dataclass(frozen=True)
class DetectedRange:
    """The days of a source, with the rows left outside them: sparse stretches far from the bulk of the data."""

    first_day: date
    last_day: date
    outside_rows: int = 0
    outside_examples: tuple[str, ...] = ()  # 'file row N: timestamp' of the earliest and latest rows left outside


def _rows(day_counts: list[tuple[date, int]]) -> int:
    return sum(rows for _, rows in day_counts)


def _stretches(day_counts: list[tuple[date, int]]) -> list[list[tuple[date, int]]]:
    """Split sorted (day, rows) into stretches separated by more than DETACHED_GAP_DAYS without data."""
    stretches = [[day_counts[0]]]
    for day, rows in day_counts[1:]:
        if (day - stretches[-1][-1][0]).days > DETACHED_GAP_DAYS:
            stretches.append([])
        stretches[-1].append((day, rows))
    return stretches


def _rows_outside(con, files: list[str], first_day: date, last_day: date) -> tuple[str, ...]:
    found = run_sql(
        con, "warehouse/source_rows_outside_days", files=files, first_day=first_day, last_day=last_day, shown=SHOWN_ROWS
    ).fetchall()
    return tuple(f"{Path(file).name} row {row}: {ts}" for file, row, ts in found)


def detect_day_range(layout: SourceLayout) -> DetectedRange:
    """The days of a source directory over all event types present, robust to a few rows with a wild clock.

    Rows in detached stretches that hold under SPARSE_SHARE of the data are left outside the range (ingest then
    quarantines them as ``outside_day_range``); a range still longer than MAX_DETECTED_DAYS is refused with the
    rows at its edges named, so a bad source never plans tens of thousands of partitions.
    """
    paths = [f for t in layout.event_types_present() for f in layout.checked_files(t)]
    if not paths:
        raise SourceError(f"no event files (product_buy.parquet, page_visit/, ...) in {layout.directory}")
    files = [str(f) for f in paths]
    with duckdb.connect() as con, reading_source("event files", paths):
        day_counts = run_sql(con, "warehouse/source_day_counts", files=files).fetchall()
        if not day_counts:
            raise SourceError(f"no readable timestamp in the event files of {layout.directory}")
        stretches = _stretches(day_counts)
        total = _rows(day_counts)
        kept = [stretch for stretch in stretches if _rows(stretch) >= SPARSE_SHARE * total] or stretches
        first_day, last_day = kept[0][0][0], kept[-1][-1][0]
        n_days = (last_day - first_day).days + 1
        if n_days > MAX_DETECTED_DAYS:
            bulk = max(stretches, key=_rows)
            examples = _rows_outside(con, files, bulk[0][0], bulk[-1][0])
            raise SourceError(
                f"the events of {layout.directory} span {n_days:,} days ({first_day} .. {last_day}), more than "
                f"{MAX_DETECTED_DAYS:,} daily partitions; the furthest rows: {'; '.join(examples)}. Fix their "
                "timestamps, or set UBP_FIRST_DAY and UBP_LAST_DAY to the days to ingest (rows outside are quarantined)"
            )
        outside = total - _rows([(day, rows) for day, rows in day_counts if first_day <= day <= last_day])
        examples = _rows_outside(con, files, first_day, last_day) if outside else ()
    return DetectedRange(first_day, last_day, outside, examples)
