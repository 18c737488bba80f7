"""Small hand-made sources in the challenge layout, for tests that need exact control over rows."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubp_pipeline.core.warehouse.events import EVENT_TYPES, format_codes
from ubp_pipeline.settings import Settings


def codes(*values: int) -> str:
    """A valid 16-code string whose first codes are ``values`` (the rest zero)."""
    padded = np.zeros((1, 16), dtype=np.uint8)
    padded[0, : len(values)] = values
    return format_codes(padded)[0].as_py()


CATALOGUE = pd.DataFrame(
    {"sku": [10, 11, 12, 13], "category": [1, 1, 2, 3], "price": [5, 50, 60, 99], "name": [codes(i) for i in range(4)]}
)


def event_frame(event_type: str, rows: list[tuple]) -> pd.DataFrame:
    """Rows of (client_id, 'YYYY-MM-DD HH:MM:SS', payload) as a frame with the type's payload column."""
    payload = {"product_buy": "sku", "add_to_cart": "sku", "remove_from_cart": "sku", "page_visit": "url"}.get(
        event_type, "query"
    )
    frame = pd.DataFrame(rows, columns=["client_id", "timestamp", payload])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["client_id"] = frame["client_id"].astype("Int64")  # nullable, so a missing id stays an integer column
    if payload != "query":
        frame[payload] = frame[payload].astype("Int64")
    return frame


def write_table(directory: Path, name: str, frame: pd.DataFrame | pa.Table) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    path = directory / f"{name}.parquet"
    pq.write_table(table, path)
    return path


def write_source(directory: Path, events: dict[str, list[tuple]] | None = None, catalogue=CATALOGUE) -> Path:
    """A complete source: the catalogue plus every event type (empty unless given)."""
    events = events or {}
    write_table(directory, "product_properties", catalogue)
    for event_type in EVENT_TYPES:
        write_table(directory, event_type, event_frame(event_type, events.get(event_type, [])))
    return directory


def settings_for(source: Path, home: Path, first_day: date, last_day: date, lookback_days: int = 180) -> Settings:
    return Settings(
        source_dir=source, home=home, first_day=first_day, fixed_last_day=last_day, lookback_days=lookback_days,
        torch_threads=1,  # tiny models gain nothing from more threads, and on a busy machine extra threads only wait
        probe="quick",  # the official probe costs minutes per task on a CPU; tests check mechanics, not the ranking
    )


def pipeline_env(source: Path, root: Path, first_day: date, last_day: date, **extra: str) -> dict[str, str]:
    """Environment for a `dagster` or `ubp` subprocess over ``source``, with its homes under ``root``."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "UBP_SOURCE_DIR": str(source),
        "UBP_HOME": str(root / "home"),
        "UBP_FIRST_DAY": first_day.isoformat(),
        "UBP_LAST_DAY": last_day.isoformat(),
        "UBP_PROBE": "quick",
        **extra,
    }


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 60) -> None:
    """SIGTERM a server started with start_new_session (e.g. `ubp ui`: webserver, daemon, code server), SIGKILL it
    when it has not stopped within the grace period (a loaded machine can slow a clean shutdown down)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
