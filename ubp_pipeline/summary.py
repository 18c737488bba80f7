"""What the main job printed at the end: counts, sequence statistics and where every result lives."""

import json

from ubp_pipeline.assets.profiles import UNIVERSAL_PROFILES
from ubp_pipeline.assets.sequences import USER_SEQUENCES
from ubp_pipeline.core.profiles import MANIFEST_FILE
from ubp_pipeline.core.sequences import read_manifest
from ubp_pipeline.core.sql import run_sql
from ubp_pipeline.core.warehouse import connect_warehouse
from ubp_pipeline.pipeline import PipelineRuns, as_of_days
from ubp_pipeline.settings import Settings


def _relative(path) -> str:
    try:
        return str(path.relative_to(path.cwd()))
    except ValueError:
        return str(path)


def print_summary(settings: Settings, runs: PipelineRuns, seconds: float) -> None:
    print()
    print(f"ubp_pipeline: {settings.first_day} .. {settings.last_day}, {len(runs.run_ids)} Dagster runs, {seconds:.1f} s")
    print(f"source     {_relative(settings.source_dir)}")
    print(f"warehouse  {_relative(settings.warehouse_path)}")
    print(f"  {'table':<20} {'accepted':>12} {'users':>9} {'days':>5} {'quarantined':>12}")
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        for source, accepted, users, days, quarantined in run_sql(con, "warehouse_summary").fetchall():
            users_text = f"{users:,}" if users is not None else "-"
            days_text = str(days) if days is not None else "-"
            print(f"  {source:<20} {accepted:>12,} {users_text:>9} {days_text:>5} {quarantined:>12,}")
    print("user_sequences (as of the end of the day)")
    for day in as_of_days(settings):
        folder = settings.artifact_dir / USER_SEQUENCES / day.isoformat()
        stats = read_manifest(folder)["stats"]
        print(
            f"  {day}  {stats['users']:>8,} users  {stats['events_kept']:>11,} events  length p50 {stats['length_p50']:.0f}"
            f" p90 {stats['length_p90']:.0f} max {stats['length_max']}  {_relative(folder)}"
        )
    print("universal_profiles (client_ids.npy + embeddings.npy in the challenge layout, profiles.parquet, manifest.json)")
    for day in as_of_days(settings):
        folder = settings.artifact_dir / UNIVERSAL_PROFILES / day.isoformat()
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        print(f"  {day}  {manifest['users']:>8,} users x {manifest['dims']} dims  {_relative(folder)}")
    print("  blocks: " + ", ".join(f"{b['name']} {b['dims']}d ({b['coverage']:.0%} covered)" for b in manifest["blocks"]))
    print(f"  models trained on {manifest['blocks'][0].get('training_day')}, in {_relative(settings.artifact_dir)}/<block>_model/")
    print("Open the Dagster UI with `make ui` (http://127.0.0.1:3000) to see the assets, partitions, lineage and runs.")
