"""What every model asset shares: which input day it trains on, and how its epochs reach the run's log and the
asset's plots."""

from collections.abc import Callable
from typing import Any

import dagster as dg


class ModelTrainingConfig(dg.Config):
    training_day: str = ""  # the input partition to train on (YYYY-MM-DD); empty = the newest materialized one
    overrides: dict[str, Any] = {}  # hyper-parameters to change, e.g. {"max_epochs": 3}


def training_day(context: dg.AssetExecutionContext, config: ModelTrainingConfig, input_asset: str) -> str:
    """The configured day, or the newest materialized partition of the input asset."""
    if config.training_day:
        return config.training_day
    keys = context.instance.get_materialized_partitions(dg.AssetKey(input_asset))
    if not keys:
        raise dg.Failure(f"no partition of {input_asset} is materialized yet: materialize the day to train on first")
    return max(keys)


def epoch_logger(context: dg.AssetExecutionContext, model: str) -> Callable[[int, dict[str, float]], None]:
    """A training callback that logs each epoch's metrics to the run's log and records them as numeric metadata of
    an observation of the model asset (per field: held-out accuracy next to the majority token's, every epoch), so
    the UI plots the curves."""

    def log(epoch: int, metrics: dict[str, float]) -> None:
        context.log.info(f"{model} epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        numbers = {k: dg.MetadataValue.float(float(v)) for k, v in metrics.items()}
        context.log_event(dg.AssetObservation(context.asset_key, metadata={"epoch": epoch, **numbers}))

    return log
