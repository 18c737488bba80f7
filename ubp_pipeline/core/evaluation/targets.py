"""Downstream targets of a day D: purchases in the two 14-day windows after D, turned into the challenge's tasks.

The probe trains on window 1 = (D, D+14] and is scored on window 2 = (D+14, D+28], for the same users and the same
embeddings. Nothing here is ever an input of a profile: targets only read events after D.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.common.sql import run_sql
from ubp_pipeline.core.evaluation.probe import ProbeTask

WINDOW_DAYS = 14
HORIZON_DAYS = 2 * WINDOW_DAYS
N_TARGETS = 100
PURCHASES_FILE = "purchases.parquet"
PAST_BUYERS_FILE = "past_buyers.npy"
MANIFEST_FILE = "manifest.json"

# propensity task -> (purchase column that holds the target, only purchases of skus new after D?)
PROPENSITY_TASKS = {
    "propensity_category": ("category", False),
    "propensity_sku": ("sku", False),
    "propensity_price": ("price", False),
    "propensity_new_sku": ("sku", True),
}


class IncompleteFutureError(ValueError):
    """The day has no complete 28-day future in the data, so it cannot be evaluated."""


@dataclass(frozen=True)
class Targets:
    as_of: date
    purchases: pd.DataFrame  # client_id, target_window (1/2), sku, category, price, new_sku
    past_buyers: np.ndarray  # users with a purchase on or before D: the churn population


def require_complete_future(as_of: date, last_day: date) -> None:
    end = as_of + timedelta(days=HORIZON_DAYS)
    if end > last_day:
        raise IncompleteFutureError(
            f"{as_of} has no complete {HORIZON_DAYS}-day future: the target windows end on {end}, "
            f"after the last day of data {last_day}; the newest day that can be evaluated is "
            f"{last_day - timedelta(days=HORIZON_DAYS)}"
        )


def build_targets(con: duckdb.DuckDBPyConnection, as_of: date, last_day: date, out_dir: str | Path) -> Targets:
    require_complete_future(as_of, last_day)
    purchases = run_sql(con, "evaluation/target_purchases", as_of=as_of, window_days=WINDOW_DAYS).df()
    past_buyers = np.array([row[0] for row in run_sql(con, "evaluation/past_buyers", as_of=as_of).fetchall()], dtype=np.int64)
    with atomic_dir(out_dir) as tmp:
        purchases.to_parquet(tmp / PURCHASES_FILE, index=False)
        np.save(tmp / PAST_BUYERS_FILE, past_buyers)
        window_sizes = purchases.groupby("target_window").size().to_dict()
        manifest = {"as_of": as_of.isoformat(), "window_days": WINDOW_DAYS, "purchases_per_window": window_sizes}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return Targets(as_of, purchases, past_buyers)


def load_targets(folder: str | Path) -> Targets:
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    return Targets(
        as_of=date.fromisoformat(manifest["as_of"]),
        purchases=pd.read_parquet(folder / PURCHASES_FILE),
        past_buyers=np.load(folder / PAST_BUYERS_FILE),
    )


def _buyers(purchases: pd.DataFrame, window: int, clients: np.ndarray) -> np.ndarray:
    return np.isin(clients, purchases.loc[purchases["target_window"] == window, "client_id"].to_numpy())


def _label_matrix(purchases: pd.DataFrame, window: int, column: str, targets: np.ndarray, clients: np.ndarray) -> np.ndarray:
    """(clients x targets) 1 where the client bought a target in the window."""
    rows = purchases[(purchases["target_window"] == window) & purchases[column].isin(targets)]
    user = pd.Index(clients).get_indexer(rows["client_id"])
    target = pd.Index(targets).get_indexer(rows[column])
    labels = np.zeros((len(clients), len(targets)), dtype=np.uint8)
    known = user >= 0
    labels[user[known], target[known]] = 1
    return labels


def make_tasks(targets: Targets, clients: np.ndarray) -> list[ProbeTask]:
    """The challenge's six tasks for users ``clients`` (the rows of the embeddings, in order).

    churn: users who bought on or before D, label 1 = no purchase in the window; conversion: the same label for all
    users; propensity_*: the 100 most bought categories / skus / price buckets / new skus of window 1, with their
    window-1 purchase counts as popularity. A task whose targets do not exist (no new sku bought) is left out.
    """
    purchases, everyone = targets.purchases, np.arange(len(clients))
    tasks = []
    past = np.flatnonzero(np.isin(clients, targets.past_buyers))
    for name, users in (("churn", past), ("conversion", everyone)):
        if len(users):
            no_buy = [(~_buyers(purchases, w, clients[users])).astype(np.uint8) for w in (1, 2)]
            tasks.append(ProbeTask(name, "binary", users, no_buy[0], no_buy[1]))
    for name, (column, new_only) in PROPENSITY_TASKS.items():
        pool = purchases[purchases["new_sku"]] if new_only else purchases
        counts = pool.loc[pool["target_window"] == 1, column].value_counts(sort=False)
        counts = counts.sort_index().sort_values(ascending=False, kind="stable").head(N_TARGETS)
        if counts.empty:
            continue
        values = counts.index.to_numpy()
        labels = [_label_matrix(pool, w, column, values, clients) for w in (1, 2)]
        tasks.append(ProbeTask(name, "propensity", everyone, labels[0], labels[1], counts.to_numpy().astype(np.float64)))
    return tasks
