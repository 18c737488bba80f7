"""The challenge's aggregated-features baseline, reimplemented over the warehouse (for the evaluation's reference row).

320 raw counts per user, as the organisers built them: for cart/buy events the 10 most frequent skus, categories and
price buckets, for visits the 10 most frequent urls, each counted in the last 1/7/30 days, plus each type's total;
for searches the mean of the 16 query codes. No scaling (that is part of what the baseline is).
"""

from __future__ import annotations

from datetime import date
from itertools import product

import duckdb
import numpy as np
import pandas as pd

from ubp_pipeline.core.common.sql import query_sql, run_sql
from ubp_pipeline.core.warehouse.events import N_CODES, PRODUCT_EVENT_TYPES, parse_codes

WINDOWS_DAYS = (1, 7, 30)
TOP_N = 10


def baseline_feature_names() -> list[str]:
    names = []
    for event_type in PRODUCT_EVENT_TYPES:
        names += [f"{event_type}.{c}.top{r}.{d}d" for c, r, d in product(("sku", "category", "price"), range(1, TOP_N + 1), WINDOWS_DAYS)]
        names.append(f"{event_type}.count")
    names += [f"page_visit.url.top{r}.{d}d" for r, d in product(range(1, TOP_N + 1), WINDOWS_DAYS)] + ["page_visit.count"]
    return names + [f"search_query.code{i}" for i in range(N_CODES)]


def baseline_features(con: duckdb.DuckDBPyConnection, as_of: date, clients: np.ndarray) -> np.ndarray:
    """(len(clients), 320) float32 counts; users without events are all zeros."""
    names = baseline_feature_names()
    column = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(clients), len(names)), dtype=np.float32)
    index = pd.Index(clients)
    counts = run_sql(con, "evaluation/baseline_features", as_of=as_of, relevant_clients=clients.tolist()).df()
    rows = index.get_indexer(counts["client_id"])
    matrix[rows, counts["feature"].map(column).to_numpy()] = counts["value"].to_numpy()
    searches = query_sql(con, "evaluation/search_queries", as_of=as_of, clients=clients.tolist()).to_arrow_table()
    if searches.num_rows:
        codes = parse_codes(searches["query"]).astype(np.float64)
        user = index.get_indexer(searches["client_id"].to_numpy())
        sums = np.zeros((len(clients), N_CODES))
        np.add.at(sums, user, codes)
        n = np.bincount(user, minlength=len(clients))[:, None]
        matrix[:, column["search_query.code0"] :] = np.divide(sums, n, out=np.zeros_like(sums), where=n > 0)
    return matrix
