"""universal_profiles: the blocks of a day concatenated into one float16 vector per relevant client."""

import dagster as dg

from ubp_pipeline.assets.automation import REFRESH
from ubp_pipeline.assets.embedders import embeddings_key
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.resources import ArtifactStore, EventSource

UNIVERSAL_PROFILES = "universal_profiles"
VALID_SUBMISSION = "valid_submission"


class ProfilesConfig(dg.Config):
    blocks: list[str] = []  # block names to concatenate, in order; empty = every block of the registry


def _blocks_markdown(manifest: dict) -> str:
    lines = ["block | offset | dims | coverage | training cutoff | model version", "---|---|---|---|---|---"]
    for b in manifest["blocks"]:
        lines.append(
            f"{b['name']} | {b['offset']} | {b['dims']} | {b['coverage']:.1%} | {b.get('training_day', '')} | {b.get('model_version', '')}"
        )
    return "\n".join(lines)


def profile_assets(daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=UNIVERSAL_PROFILES,
        partitions_def=daily,
        deps=[embeddings_key(name) for name in BLOCKS],
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
        from ubp_pipeline.core.profiles.assembly import assemble_profiles, validate_profiles, write_profiles
        from ubp_pipeline.core.profiles.blocks import load_block_vectors
        from ubp_pipeline.core.warehouse.source_layout import load_relevant_clients

        names = config.blocks or list(BLOCKS)
        unknown = sorted(set(names) - set(BLOCKS))
        if unknown:
            raise dg.Failure(f"unknown blocks {unknown}; known: {sorted(BLOCKS)}")
        day = context.partition_key
        blocks = [load_block_vectors(artifacts.partition_dir(embeddings_key(name), day)) for name in names]
        clients = load_relevant_clients(source.layout(), fallback=[b.client_ids for b in blocks])
        profiles = assemble_profiles(blocks, clients)
        out = write_profiles(profiles, artifacts.partition_dir(UNIVERSAL_PROFILES, day), {"as_of": day})
        problems = validate_profiles(out, clients)
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "users": profiles.manifest["users"],
                "dims": profiles.manifest["dims"],
                "blocks": dg.MetadataValue.md(_blocks_markdown(profiles.manifest)),
                **{f"coverage_{b['name']}": b["coverage"] for b in profiles.manifest["blocks"]},
            }
        )
        yield dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    return [universal_profiles]
