"""universal_profiles: the blocks of a day concatenated into one float16 vector per relevant client.

Which blocks: those pinned in run config (`blocks: [...]`), else the newest selection of profile_evaluation whose
evidence ends on or before the day (the backtest of day D chooses blocks for days from D + 28 on, so the newest day's
profile follows the last complete backtest and no backtest ever scores a profile shaped by its own future), else the
default blocks (every block of the registry but the opt-in ones). Opt-in blocks are trained only where
UBP_OPT_IN_BLOCKS names them, and only those can be pinned or selected. The choice and its evidence are recorded in
the manifest (`block_selection`).
"""

from datetime import date
from pathlib import Path

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.assets.embedders import embeddings_key
from ubp_pipeline.core.profiles.registry import BLOCKS, default_blocks, opt_in_blocks
from ubp_pipeline.partitions import partition_day
from ubp_pipeline.resources import ArtifactStore, EventSource
from ubp_pipeline.settings import Settings

UNIVERSAL_PROFILES = "universal_profiles"
VALID_SUBMISSION = "valid_submission"


class ProfilesConfig(dg.Config):
    blocks: list[str] = []  # block names to concatenate, in order; empty = the backtest's selection, else the defaults


def choose_blocks(pinned: list[str], active: list[str], backtest_root: Path, day: date) -> tuple[list[str], dict]:
    """The blocks of a profile day and why: pinned, selected by a backtest (with its evidence), or the default ones
    (every block but the opt-in ones, which earned no default place in their ablation). Only ``active`` blocks
    (those the deployment trains) can be pinned or selected."""
    from ubp_pipeline.core.profiles.assembly import latest_selection

    if pinned:
        unknown = sorted(set(pinned) - set(BLOCKS))
        if unknown:
            raise dg.Failure(f"unknown blocks {unknown}; known: {sorted(BLOCKS)}")
        untrained = sorted(set(pinned) - set(active))
        if untrained:
            raise dg.Failure(f"blocks {untrained} are opt-in and not trained here: add them to UBP_OPT_IN_BLOCKS")
        return list(pinned), {"source": "pinned in run config"}
    selection = latest_selection(backtest_root, day)
    known = [name for name in (selection or {}).get("blocks", []) if name in active]
    if not known:
        return default_blocks(), {
            "source": "the default blocks (no backtest selection is usable for this day)",
            "opt_in_blocks_not_used": opt_in_blocks(),  # add them to UBP_OPT_IN_BLOCKS, then pin them or let a selection
        }
    return known, {"source": "backtest selection", **selection}


def _blocks_markdown(manifest: dict) -> str:
    lines = ["block | offset | dims | coverage | training cutoff | model version", "---|---|---|---|---|---"]
    for b in manifest["blocks"]:
        lines.append(
            f"{b['name']} | {b['offset']} | {b['dims']} | {b['coverage']:.1%} | {b.get('training_day', '')} | {b.get('model_version', '')}"
        )
    return "\n".join(lines)


def profile_assets(settings: Settings, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=UNIVERSAL_PROFILES,
        partitions_def=daily,
        deps=[embeddings_key(name) for name in settings.blocks],
        group_name="profiles",
        kinds={"numpy", "parquet"},
        automation_condition=REFRESH,
        check_specs=[
            dg.AssetCheckSpec(
                VALID_SUBMISSION,
                asset=UNIVERSAL_PROFILES,
                blocking=True,
                description="The written files pass the challenge's validation: int64 ids, float16 <= 2048 columns, "
                "finite, every relevant client exactly once.",
            )
        ],
    )
    def universal_profiles(context: dg.AssetExecutionContext, config: ProfilesConfig, artifacts: ArtifactStore, source: EventSource):
        """One row per relevant client: each block's vector (PCA/L2/quantile-scaled as configured, the block's
        training-day mean where the block does not cover the user), concatenated, float16."""
        from ubp_pipeline.assets.evaluation import PROFILE_EVALUATION
        from ubp_pipeline.core.profiles.assembly import assemble_profiles, validate_profiles, write_profiles
        from ubp_pipeline.core.profiles.blocks import excluded_reason, load_block_vectors
        from ubp_pipeline.core.warehouse.source_layout import load_relevant_clients

        day = context.partition_key
        names, selection = choose_blocks(
            config.blocks, settings.blocks, artifacts.asset_dir(PROFILE_EVALUATION), partition_day(day)
        )
        context.log.info(f"blocks {names}: {selection['source']}")
        folders = {name: artifacts.partition_dir(embeddings_key(name), day) for name in names}
        excluded = {name: reason for name, folder in folders.items() if (reason := excluded_reason(folder))}
        for name, reason in excluded.items():
            context.log.warning(f"{name} is left out: {reason}")
        blocks = [load_block_vectors(folder) for name, folder in folders.items() if name not in excluded]
        clients = load_relevant_clients(source.layout(), fallback=[b.client_ids for b in blocks])
        profiles = assemble_profiles(blocks, clients)
        extra = {"as_of": day, "block_selection": selection, "excluded_blocks": excluded}
        out = write_profiles(profiles, artifacts.partition_dir(UNIVERSAL_PROFILES, day), extra)
        problems = validate_profiles(out, clients)
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "users": profiles.manifest["users"],
                "dims": profiles.manifest["dims"],
                "blocks": dg.MetadataValue.md(_blocks_markdown(profiles.manifest)),
                "block_selection": dg.MetadataValue.json(selection),
                "excluded_blocks": dg.MetadataValue.json(excluded),
                **{f"coverage_{b['name']}": b["coverage"] for b in profiles.manifest["blocks"]},
            }
        )
        yield dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    return [universal_profiles]
