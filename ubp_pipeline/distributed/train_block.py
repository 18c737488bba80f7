"""Train one profile block data-parallel: `torchrun --nproc_per_node N -m ubp_pipeline.distributed.train_block ...`.

Every rank trains on its share of the batches (gloo on CPU, nccl on GPUs); rank 0 alone stores the model and, when
Dagster launched the command through dagster-pipes, reports the materialization with the model's metadata.
"""

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.profiles.blocks import LEARNED_CHECK, train_block, weights_digest
from ubp_pipeline.core.profiles.registry import BLOCKS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", required=True, choices=sorted(BLOCKS))
    parser.add_argument("--input", required=True, type=Path, help="the input partition folder to train on")
    parser.add_argument("--out", required=True, type=Path, help="the model folder (replaced atomically by rank 0)")
    parser.add_argument("--training-day", required=True)
    parser.add_argument("--overrides", default="{}", help="JSON of hyper-parameters to change")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _ranks_agree(digest: str) -> bool:
    """Whether every rank ended with the same weights (a collective: every rank calls it once, after training).
    Data-parallel training averages the gradients of all ranks at every step; without that they would drift apart."""
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    return len(set(digests)) == 1


def _train_as_rank_zero(args: argparse.Namespace, runtime) -> None:
    spec, overrides = BLOCKS[args.block], json.loads(args.overrides)
    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:  # run by hand, not launched by Dagster
        trained = train_block(spec, args.input, args.out, runtime, args.training_day, overrides)
        _ranks_agree(trained.provenance["model_version"].rsplit("/", 1)[-1])
        return
    with open_dagster_pipes() as pipes:
        trained = train_block(
            spec, args.input, args.out, runtime, args.training_day, overrides,
            lambda epoch, metrics: pipes.log.info(f"{args.block} epoch {epoch}: {metrics}"),
        )
        agree = _ranks_agree(trained.provenance["model_version"].rsplit("/", 1)[-1])
        summary = trained.summary()
        curve = summary.pop("training_curve")
        pipes.report_asset_materialization(
            metadata={
                **summary,
                "path": {"raw_value": str(args.out), "type": "path"},
                "training_curve": {"raw_value": curve, "type": "md"},
                "reported_by_rank": runtime.rank,
                "ranks_agree_on_weights": agree,
            }
        )
        if spec.predicts_fields:  # the model asset's blocking check, from the same verdicts as a one-process run
            failed = [v.field for v in trained.verdicts if not v.learned]
            pipes.report_asset_check(
                LEARNED_CHECK,
                passed=not failed,
                severity="ERROR",
                metadata={"fields_not_learned": {"raw_value": ", ".join(failed), "type": "text"}},
            )


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if on_gpu else "gloo")
    try:
        runtime = make_runtime(
            args.device, seed=args.seed, threads=args.threads, rank=dist.get_rank(), world_size=dist.get_world_size()
        )
        if runtime.rank == 0:
            _train_as_rank_zero(args, runtime)
        else:
            fitted = BLOCKS[args.block].build(json.loads(args.overrides), runtime.device.type).fit(args.input, runtime)
            _ranks_agree(weights_digest(fitted))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
