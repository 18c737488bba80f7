"""Hand-made behaviour statistics per user as of a day (sql/sequences/stat_features.sql), stored as a parquet partition."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.common.sql import run_sql

FEATURES_FILE = "features.parquet"
MANIFEST_FILE = "manifest.json"
NOT_APPLICABLE = -1.0  # means and shares of something the user never did: below every real value


@dataclass(frozen=True)
class StatFeatures:
    client_ids: np.ndarray
    values: np.ndarray  # float32 (users, features), defaults filled
    names: tuple[str, ...]


def build_stat_features(con: duckdb.DuckDBPyConnection, as_of: date, lookback_days: int, out_dir: str | Path) -> int:
    """Write the features of users active in the lookback window; returns the number of users."""
    with atomic_dir(out_dir) as tmp:
        run_sql(con, "sequences/stat_features", as_of=as_of, lookback_days=lookback_days, out=str(tmp / FEATURES_FILE))
        users = pq.read_metadata(tmp / FEATURES_FILE).num_rows
        manifest = {"as_of": as_of.isoformat(), "lookback_days": lookback_days, "users": users}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return users


def _default(name: str, lookback_days: int) -> float:
    """Missing means "did not happen in the window": no events, no change, or as long ago as the window reaches."""
    if name.endswith(("_count", "_change")) or name == "total_bought_price":
        return 0.0
    if name.endswith(("_mean_gap_days", "_days_since_first", "_days_since_last")):
        return float(lookback_days)
    return NOT_APPLICABLE


def load_stat_features(folder: str | Path) -> StatFeatures:
    folder = Path(folder)
    lookback_days = json.loads((folder / MANIFEST_FILE).read_text())["lookback_days"]
    table = pq.read_table(folder / FEATURES_FILE)
    names = tuple(n for n in table.column_names if n != "client_id")
    columns = []
    for name in names:
        column = table[name].to_numpy(zero_copy_only=False).astype(np.float64)
        columns.append(np.where(np.isnan(column), _default(name, lookback_days), column))
    values = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((table.num_rows, 0), np.float32)
    return StatFeatures(client_ids=table["client_id"].to_numpy(), values=values, names=names)
