"""One model asset and one daily embeddings asset per profile block, made by one factory from the block registry."""

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.assets.training import ModelTrainingConfig, epoch_logger, training_day
from ubp_pipeline.core.profiles.registry import BlockSpec
from ubp_pipeline.resources import GPU_STEP_TAGS, ArtifactStore, TorchDevice


def model_key(block: str) -> str:
    return f"{block}_model"


def embeddings_key(block: str) -> str:
    return f"{block}_embeddings"


class BlockTrainingConfig(ModelTrainingConfig):
    ranks: int = 1  # > 1: torchrun starts this many data-parallel processes (GRU and transformer blocks)


def _torchrun_command(name: str, config: BlockTrainingConfig, folder, out, day: str, torch_device: TorchDevice) -> list[str]:
    """torchrun on this machine, one process per rank, each with its share of the CPU threads (or its own GPU)."""
    threads = torch_device.threads or max(1, len(os.sched_getaffinity(0)) // config.ranks)
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.ranks}",
        "-m", "ubp_pipeline.distributed.train_block",
        "--block", name, "--input", str(folder), "--out", str(out), "--training-day", day,
        "--overrides", json.dumps(config.overrides), "--device", torch_device.preference,
        "--threads", str(threads), "--seed", str(torch_device.seed),
    ]


LEARNED_CHECK = "learned_every_field"  # = core.profiles.blocks.LEARNED_CHECK, kept here to keep torch out of imports


def learned_check_result(verdicts: list[dict[str, Any]]) -> dg.AssetCheckResult:
    """Passed when every predicted field beats its marginal on held-out users (see ``LEARNED_MARGIN``)."""
    failed = [v["field"] for v in verdicts if not v["learned"]]
    table = "| field | accuracy | majority | loss | unigram loss | learned |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {v['field']} | {v['accuracy']:.4f} | {v['majority_accuracy']:.4f} | {v['loss']:.4f} "
        f"| {v['unigram_loss']:.4f} | {'yes' if v['learned'] else '**no**'} |"
        for v in verdicts
    )
    return dg.AssetCheckResult(
        check_name=LEARNED_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"no better than the marginal on {failed}" if failed else "every field beats its marginal",
        metadata={"fields": dg.MetadataValue.md(table), "fields_not_learned": ", ".join(failed)},
    )


def block_assets(spec: BlockSpec, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """`<block>_model` (unpartitioned, trained on one input day) and `<block>_embeddings` (daily, as of each day).

    A block whose training predicts fields carries a blocking check on its model: a model no better than the
    marginal on some field stops the run before its embeddings (and so any profile) are built."""
    checks = [
        dg.AssetCheckSpec(
            LEARNED_CHECK,
            asset=model_key(spec.name),
            blocking=True,
            description=(
                "Every reconstructed or predicted field beats its marginal on held-out users: 5 % more accuracy "
                "than the majority token, or 5 % less cross-entropy than the unigram."
            ),
        )
    ] if spec.predicts_fields else []

    @dg.asset(
        name=model_key(spec.name),
        deps=[dg.AssetDep(spec.input_asset, partition_mapping=dg.LastPartitionMapping())],
        group_name="models",
        kinds={"pytorch", "safetensors"},
        code_version=spec.version,
        description=f"{spec.description} Trained on one `{spec.input_asset}` day (the training cutoff).",
        op_tags=GPU_STEP_TAGS if spec.distributable else None,
        check_specs=checks,
    )
    def block_model(
        context: dg.AssetExecutionContext,
        config: BlockTrainingConfig,
        artifacts: ArtifactStore,
        torch_device: TorchDevice,
        pipes_subprocess_client: dg.PipesSubprocessClient,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        from ubp_pipeline.core.profiles.blocks import train_block

        day = training_day(context, config, spec.input_asset)
        # one folder per training cutoff: the backtest's and the production models live side by side
        folder, out = artifacts.partition_dir(spec.input_asset, day), artifacts.partition_dir(model_key(spec.name), day)
        if config.ranks > 1:
            if not spec.distributable:
                raise dg.Failure(f"{spec.name} does not train data-parallel; materialize it with ranks = 1")
            command = _torchrun_command(spec.name, config, folder, out, day, torch_device)
            context.log.info(f"training {spec.name} on {config.ranks} ranks: {' '.join(command)}")
            yield from pipes_subprocess_client.run(command=command, context=context).get_results()
            return
        runtime = torch_device.runtime()
        context.log.info(f"training {spec.name} on {spec.input_asset} {day} ({runtime.describe()['device_name']})")
        trained = train_block(spec, folder, out, runtime, day, config.overrides, epoch_logger(context, spec.name))
        summary = trained.summary()
        curve = summary.pop("training_curve")
        yield dg.MaterializeResult(
            metadata={
                **summary,
                "path": dg.MetadataValue.path(str(out)),
                "training_curve": dg.MetadataValue.md(curve),
            }
        )
        if checks:
            yield learned_check_result([{"field": v.field, **v.as_dict()} for v in trained.verdicts])

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
        """With the newest model trained on or before the day (never a later one). A model that failed its
        learned_every_field check embeds nothing: the day's folder says why, and profiles leave the block out."""
        from ubp_pipeline.core.profiles.blocks import (
            UnlearnedModelError,
            embed_block,
            model_for_day,
            save_block_vectors,
            save_excluded_block,
        )

        day = context.partition_key
        out = artifacts.partition_dir(embeddings_key(spec.name), day)
        try:
            model_dir = model_for_day(artifacts.asset_dir(model_key(spec.name)), day)
        except FileNotFoundError as error:
            raise dg.Failure(str(error)) from None
        try:
            block = embed_block(spec, model_dir, artifacts.partition_dir(spec.input_asset, day), torch_device.runtime())
        except UnlearnedModelError as error:
            context.log.warning(f"{spec.name} left out of the profiles of {day}: {error}")
            save_excluded_block(out, spec.name, str(error), {"training_day": model_dir.name})
            return dg.MaterializeResult(
                metadata={"path": dg.MetadataValue.path(str(out)), "excluded": True, "reason": str(error), "training_cutoff": model_dir.name}
            )
        save_block_vectors(out, block)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "excluded": False,
                "users": len(block.client_ids),
                "dims": len(block.fill),
                "model_version": block.provenance["model_version"],
                "training_cutoff": block.provenance["training_day"],
            }
        )

    return [block_model, block_embeddings]
