"""The decorator every as-of-day asset over the warehouse shares, so the four of them cannot drift apart.

user_sequences, stat_features, downstream_targets and profile_evaluation are daily partitions (the day D they are
"as of"), hold the warehouse's one writer slot while they run (pool), retry transient failures (bad input is never
retried: see errors.py) and are refreshed at night when their upstream changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.resources import DUCKDB_POOL, TRANSIENT_RETRY


def warehouse_day_asset(
    name: str,
    daily: dg.PartitionsDefinition,
    *,
    deps: Sequence[Any],
    group_name: str,
    kinds: set[str],
    code_version: str = "1",
) -> Callable[..., dg.AssetsDefinition]:
    return dg.asset(
        name=name,
        partitions_def=daily,
        deps=list(deps),
        group_name=group_name,
        kinds=kinds,
        pool=DUCKDB_POOL,
        retry_policy=TRANSIENT_RETRY,
        code_version=code_version,
        automation_condition=REFRESH,
    )
