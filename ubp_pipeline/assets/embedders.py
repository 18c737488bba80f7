"""One model asset and one daily embeddings asset per profile block, made by one factory from the block registry."""

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.assets.training import ModelTrainingConfig, epoch_logger, training_day
from ubp_pipeline.core.block_registry import BlockSpec
from ubp_pipeline.resources import ArtifactStore, TorchDevice


def model_key(block: str) -> str:
    return f"{block}_model"


def embeddings_key(block: str) -> str:
    return f"{block}_embeddings"


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
        import pandas as pd

        from ubp_pipeline.core.blocks import train_block
        from ubp_pipeline.core.markdown_tables import markdown_table

        day = training_day(context, config, spec.input_asset)
        runtime = torch_device.runtime()
        context.log.info(f"training {spec.name} on {spec.input_asset} {day} ({runtime.describe()['device_name']})")
        out = artifacts.asset_dir(model_key(spec.name))
        trained = train_block(
            spec, artifacts.partition_dir(spec.input_asset, day), out, runtime, day, config.overrides,
            epoch_logger(context, spec.name),
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
                "training_curve": dg.MetadataValue.md(markdown_table(pd.DataFrame(trained.history))),
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
        automation_condition=REFRESH,
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
