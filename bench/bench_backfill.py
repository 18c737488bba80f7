"""Dagster's bookkeeping of a single-run backfill: the ingest of 180 days x 5 raw event tables + the catalogue, as
one run, on the local SQLite instance storage and on PostgreSQL (Debian's server, started on a local port).

The source is tiny (a few events a day), so the run's wall time is the orchestration's cost: the events the instance
stores, one materialization per partition per asset and, at the run's start, one "planned" event per partition per
asset. Each storage runs twice: as Dagster defaults, and with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1,
which plans each asset's whole range in one event (Dagster's own switch; then the partitions of a run that fails are
not marked failed). Medians over ``--repeats`` runs on fresh homes. Writes bench/results/backfill.json and
bench/results/backfill.md.

    python bench/bench_backfill.py [--days 180] [--repeats 3]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from hardware import cores, cpu_model, load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' throw-away PostgreSQL server

from tests.postgres import postgres_home, postgres_server  # noqa: E402

RESULTS = ROOT / "bench" / "results"
START = date(2022, 1, 1)
PLANNED_PER_RANGE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"  # Dagster reads it when it plans a run


def one_backfill(source: Path, work: Path, days: int, storage: str) -> dict:
    import dagster as dg

    from ubp_pipeline.definitions import build_definitions
    from ubp_pipeline.runner import materialize
    from ubp_pipeline.settings import Settings

    last = START + timedelta(days=days - 1)
    settings = Settings(source_dir=source, home=work / "home", first_day=START, fixed_last_day=last, lookback_days=180, torch_threads=1)
    home = work / "dagster_home"
    if storage == "postgres":
        postgres_home(home)
    else:
        home.mkdir(parents=True)
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.wipe()
        started = time.perf_counter()
        result = materialize(build_definitions(settings), "group:ingest", instance, partition_range=(START, last))
        seconds = time.perf_counter() - started
        events = len(instance.all_logs(result.run_id))
    assert result.success
    return {"seconds": seconds, "event_log_entries": events}


def main() -> None:
    from ubp_pipeline.data.synthetic import SyntheticConfig, generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="ubp-backfill-") as tmp:
        source = Path(tmp) / "source"
        generate(SyntheticConfig(users=60, days=args.days, start=START, seed=3), source)
        variants = [(storage, planned) for storage in ("sqlite", "postgres") for planned in ("per partition", "per range")]
        runs: dict[tuple[str, str], list[dict]] = {variant: [] for variant in variants}
        with postgres_server() as url:
            os.environ["DAGSTER_PG_URL"] = url
            for repeat in range(args.repeats):
                for storage, planned in variants:
                    os.environ[PLANNED_PER_RANGE] = "1" if planned == "per range" else ""
                    work = Path(tmp) / f"{storage}-{planned.replace(' ', '-')}-{repeat}"
                    runs[storage, planned].append(one_backfill(source, work, args.days, storage))
            os.environ.pop(PLANNED_PER_RANGE)
    rows = [
        {
            "storage": storage,
            "planned_events": planned,
            "median_seconds": statistics.median(r["seconds"] for r in results),
            "seconds_per_partition": statistics.median(r["seconds"] for r in results) / (args.days * 5 + 1),
            "event_log_entries": results[0]["event_log_entries"],
            "runs": [round(r["seconds"], 2) for r in results],
        }
        for (storage, planned), results in runs.items()
    ]
    hardware = {"cpu": cpu_model(), "cores": cores(), "load_average_before": load_before, "load_average_after": load_average()}
    report = {"days": args.days, "assets": 6, "repeats": args.repeats, "hardware": hardware, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backfill.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Single-run backfill bookkeeping: {args.days} days x 5 raw tables + catalogue, one run",
        "",
        f"{hardware['cpu']}, {hardware['cores']} cores; load average {load_before} before, {hardware['load_average_after']} "
        f"after; median of {args.repeats} runs on fresh homes; a 60-user source, so the time is the orchestration's.",
        "",
        "| instance storage | planned events | run wall s (median) | s per asset-partition | event-log entries | runs s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['storage']} | {r['planned_events']} | {r['median_seconds']:.1f} | {r['seconds_per_partition'] * 1000:.1f} ms | "
            f"{r['event_log_entries']:,} | {', '.join(map(str, r['runs']))} |"
            for r in rows
        ),
    ]
    (RESULTS / "backfill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
