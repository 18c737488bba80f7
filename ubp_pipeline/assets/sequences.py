"""The sequences stage: user_sequences (one chronological event sequence per user as of the end of each day) and
stat_features (hand-made behaviour statistics per user as of the same day, pure SQL)."""

import dagster as dg

from ubp_pipeline.assets.as_of import warehouse_day_asset
from ubp_pipeline.assets.errors import no_retry_for_bad_input
from ubp_pipeline.assets.ingest import RAW_EVENT_KEYS, product_properties
from ubp_pipeline.core.sequences.stat_features import build_stat_features
from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
from ubp_pipeline.partitions import partition_day
from ubp_pipeline.resources import ArtifactStore, Warehouse
from ubp_pipeline.settings import Settings

USER_SEQUENCES = "user_sequences"
STAT_FEATURES = "stat_features"


class SequencesConfig(dg.Config):
    max_events: int = 128
    top_skus: int = 5_000
    top_urls: int = 5_000


def lookback_deps(settings: Settings) -> list:
    """An as-of-day asset reads the whole lookback window, so every raw day in it is upstream (lineage, staleness)."""
    lookback = dg.TimeWindowPartitionMapping(
        start_offset=-(settings.lookback_days - 1), allow_nonexistent_upstream_partitions=True
    )
    return [product_properties, *(dg.AssetDep(key, partition_mapping=lookback) for key in RAW_EVENT_KEYS.values())]


def sequence_assets(settings: Settings, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @warehouse_day_asset(USER_SEQUENCES, daily, deps=lookback_deps(settings), group_name="sequences", kinds={"duckdb", "parquet"}, code_version="2")
    def user_sequences(
        context: dg.AssetExecutionContext, config: SequencesConfig, warehouse: Warehouse, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        """Each user's last `max_events` events up to the end of the day (all five types merged, time-ordered),
        with typed fields, plus the top-K sku/url/category vocabularies of that day."""
        spec = SequenceSpec(
            as_of=partition_day(context.partition_key),
            first_day=settings.first_day,
            lookback_days=settings.lookback_days,
            max_events=config.max_events,
            top_skus=config.top_skus,
            top_urls=config.top_urls,
        )
        out = artifacts.partition_dir(USER_SEQUENCES, context.partition_key)
        with no_retry_for_bad_input(), warehouse.connect() as con:
            stats = build_sequences(con, spec, out)
        context.log.info(f"{stats.users} users, {stats.events_kept} events kept of {stats.events_in_window}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "users": stats.users,
                "events_in_window": stats.events_in_window,
                "events_kept": stats.events_kept,
                "truncated_users": stats.truncated_users,
                "length_p50": stats.length_p50,
                "length_p90": stats.length_p90,
                "length_max": stats.length_max,
                "vocabulary_sizes": dg.MetadataValue.json(stats.vocabulary_sizes),
                "vocabulary_version": stats.vocabulary_version,
                "lookback_days": settings.lookback_days,
            }
        )

    @warehouse_day_asset(STAT_FEATURES, daily, deps=lookback_deps(settings), group_name="sequences", kinds={"duckdb", "parquet"})
    def stat_features(context: dg.AssetExecutionContext, warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
        """Per user and event type: counts, mean gaps, week/month trends, recency; plus popularity of what they
        touched, prices, cart-to-buy conversion and active days (sql/sequences/stat_features.sql)."""
        out = artifacts.partition_dir(STAT_FEATURES, context.partition_key)
        with no_retry_for_bad_input(), warehouse.connect() as con:
            users = build_stat_features(con, partition_day(context.partition_key), settings.lookback_days, out)
        return dg.MaterializeResult(metadata={"users": users, "path": dg.MetadataValue.path(str(out))})

    return [user_sequences, stat_features]
