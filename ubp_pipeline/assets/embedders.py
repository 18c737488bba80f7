"""One model asset and one daily embeddings asset per profile block, made by one factory from the block registry."""

from typing import Any

import dagster as dg

from ubp_pipeline.core.block_registry import BlockSpec
from ubp_pipeline.resources import ArtifactStore, TorchDevice


class ModelTrainingConfig(dg.Config):
    training_day: str = ""  # the input partition to train on (YYYY-MM-DD); empty = the newest materialized one
    overrides: dict[str, Any] = {}  # embedder hyper-parameters to change, e.g. {"max_epochs": 3}


def model_key(block: str) -> str:
    return f"{block}_model"


def embeddings_key(block: str) -> str:
    return f"{block}_embeddings"


def _newest_partition(context: dg.AssetExecutionContext, asset: str) -> str:
    keys = context.instance.get_materialized_partitions(dg.AssetKey(asset))
    if not keys:
        raise dg.Failure(f"no partition of {asset} is materialized yet: materialize the day to train on first")
    return max(keys)


def _curve_markdown(history: list[dict[str, float]]) -> str:
    if not history:
        return "(no epochs)"
    columns = list(history[0])
    rows = [" | ".join(f"{row.get(c, float('nan')):.4g}" for c in columns) for row in history]
    return "\n".join([" | ".join(columns), " | ".join("---" for _ in columns), *rows])


def block_assets(spec: BlockSpec, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """`<block>_model` (unpartitioned, trained on one input day) and `<block>_embeddings` (daily, as of each day)."""

    @dg.asset(
        name=model_key(spec.name),
        deps=[dg.AssetDep(spec.input_asset, partition_mapping=dg.LastPartitionMapping())],
        group_name="models",
        kinds={"pytorch", "safetensors"},
        code_version=spec.version,
        description=f"{spec.description} Trained on one `{spec.input_asset}` day (the training cutoff).",
    )
    def block_model(
        context: dg.AssetExecutionContext, config: ModelTrainingConfig, artifacts: ArtifactStore, torch_device: TorchDevice
    ) -> dg.MaterializeResult:
        from ubp_pipeline.core.blocks import train_block

        day = config.training_day or _newest_partition(context, spec.input_asset)
        runtime = torch_device.runtime()
        context.log.info(f"training {spec.name} on {spec.input_asset} {day} ({runtime.describe()['device_name']})")

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            context.log.info(f"{spec.name} epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

        out = artifacts.asset_dir(model_key(spec.name))
        trained = train_block(
            spec, artifacts.partition_dir(spec.input_asset, day), out, runtime, day, config.overrides, log_epoch
        )
        final = {f"final_{k}": float(v) for k, v in (trained.history[-1] if trained.history else {}).items() if k != "epoch"}
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "training_cutoff": day,
                "model_version": trained.provenance["model_version"],
                "dims": trained.provenance["dims"],
                "training_users": trained.training_users,
                "training_seconds": trained.provenance["training_seconds"],
                "device": trained.provenance["device_name"],
                "epochs": len(trained.history),
                "training_curve": dg.MetadataValue.md(_curve_markdown(trained.history)),
                **final,
            }
        )

    @dg.asset(
        name=embeddings_key(spec.name),
        partitions_def=daily,
        deps=[block_model, spec.input_asset],
        group_name="embeddings",
        kinds={"pytorch", "numpy"},
        code_version=spec.version,
        description=f"{spec.name} vectors of every user active in the lookback window, as of the end of the day.",
    )
    def block_embeddings(
        context: dg.AssetExecutionContext, artifacts: ArtifactStore, torch_device: TorchDevice
    ) -> dg.MaterializeResult:
        from ubp_pipeline.core.blocks import embed_block, save_block_vectors

        day = context.partition_key
        block = embed_block(
            spec, artifacts.asset_dir(model_key(spec.name)), artifacts.partition_dir(spec.input_asset, day), torch_device.runtime()
        )
        cutoff = block.provenance["training_day"]
        if cutoff > day:
            context.log.warning(f"{spec.name} was trained on {cutoff}, after {day}: these vectors see the future")
        out = save_block_vectors(artifacts.partition_dir(embeddings_key(spec.name), day), block)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "users": len(block.client_ids),
                "dims": len(block.fill),
                "model_version": block.provenance["model_version"],
                "training_cutoff": cutoff,
                "trained_after_this_day": cutoff > day,
            }
        )

    return [block_model, block_embeddings]
