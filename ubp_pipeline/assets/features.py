"""stat_features: hand-made behaviour statistics per user as of the end of each day (pure SQL)."""

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.assets.errors import no_retry_for_bad_input
from ubp_pipeline.assets.sequences import lookback_deps
from ubp_pipeline.core.sequences.stat_features import build_stat_features
from ubp_pipeline.partitions import partition_day
from ubp_pipeline.resources import DUCKDB_POOL, TRANSIENT_RETRY, ArtifactStore, Warehouse
from ubp_pipeline.settings import Settings

STAT_FEATURES = "stat_features"


def feature_assets(settings: Settings, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=STAT_FEATURES,
        partitions_def=daily,
        deps=lookback_deps(settings),
        group_name="sequences",
        kinds={"duckdb", "parquet"},
        pool=DUCKDB_POOL,
        retry_policy=TRANSIENT_RETRY,
        code_version="1",
        automation_condition=REFRESH,
    )
    def stat_features(context: dg.AssetExecutionContext, warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
        """Per user and event type: counts, mean gaps, week/month trends, recency; plus popularity of what they
        touched, prices, cart-to-buy conversion and active days (sql/sequences/stat_features.sql)."""
        out = artifacts.partition_dir(STAT_FEATURES, context.partition_key)
        with no_retry_for_bad_input(), warehouse.connect() as con:
            users = build_stat_features(con, partition_day(context.partition_key), settings.lookback_days, out)
        return dg.MaterializeResult(metadata={"users": users, "path": dg.MetadataValue.path(str(out))})

    return [stat_features]
