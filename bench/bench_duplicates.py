"""Benchmark: ingest's exact-duplicate step, the repeated key hashes found by a NumPy sort against the GROUP BY in
DuckDB that preceded it, on the same staged rows.

One generated data set; its page visits (the largest event table) are placed and staged as ingest stages them, then
each version marks the duplicates of a fresh copy of the staged table, alternating, so that drift in the machine's
load touches both alike. Both must mark the same rows. Writes bench/results/duplicates.json and duplicates.md.

    PYTHONPATH=. python bench/bench_duplicates.py [--events 10000000] [--repeats 5]   (from the repo root)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from hardware import cores, cpu_model, load_average

from ubp_pipeline.core.common.sql import read_sql, run_sql
from ubp_pipeline.core.warehouse import ingest
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.source_layout import SourceLayout
from ubp_pipeline.data.synthetic import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "tmp" / "duplicates"
DAYS = 120
START = date(2022, 6, 23)
EVENTS_PER_USER = 55  # as in bench_ingest.py
EVENT_TYPE = "page_visit"

# The previous form of the step: the same UPDATE, the repeated hashes found by a GROUP BY over every staged row's hash
(UPDATE_SQL,) = read_sql("warehouse/refuse_duplicates")
REPEATED_GIVEN = "SELECT key_hash FROM repeated_key_hashes"
assert REPEATED_GIVEN in UPDATE_SQL, "refuse_duplicates.sql no longer reads repeated_key_hashes: update the baseline"
GROUP_BY_SQL = UPDATE_SQL.replace(REPEATED_GIVEN, "SELECT key_hash FROM staged_events GROUP BY key_hash HAVING count(*) > 1")
VERSIONS = {"group_by": lambda con: con.execute(GROUP_BY_SQL), "numpy_sort": ingest._refuse_duplicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    config = SyntheticConfig(users=max(1, args.events // EVENTS_PER_USER), days=DAYS, start=START, seed=1)
    summary = generate(config, WORK / "source")
    layout = SourceLayout(WORK / "source")
    load_before = load_average()
    seconds: dict[str, list[float]] = {name: [] for name in VERSIONS}
    marked: dict[str, set] = {}
    with connect_warehouse(WORK / "warehouse.duckdb") as con:
        ingest.ingest_product_properties(con, layout)
        days = ingest._day_parameters(START, START + timedelta(days=DAYS - 1), None)
        ingest._place_source_rows(con, EVENT_TYPE, layout.checked_files(EVENT_TYPE), days)
        run_sql(con, "warehouse/stage_events", payload="url")
        con.execute("CREATE TEMP TABLE pristine AS SELECT * FROM staged_events")
        (staged_rows,) = con.execute("SELECT count(*) FROM pristine").fetchone()
        for repeat in range(args.repeats):
            order = list(VERSIONS.items())
            for name, mark in order[:: 1 if repeat % 2 == 0 else -1]:  # each version goes first in turn
                con.execute("CREATE OR REPLACE TEMP TABLE staged_events AS SELECT * FROM pristine")
                started = time.perf_counter()
                mark(con)
                seconds[name].append(time.perf_counter() - started)
                rows = con.execute("SELECT file_index, source_row FROM staged_events WHERE reason = 'duplicate'")
                marked[name] = set(rows.fetchall())
    shutil.rmtree(WORK, ignore_errors=True)
    if marked["group_by"] != marked["numpy_sort"]:
        raise RuntimeError("the two versions marked different rows")

    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "hardware": {"cpu": cpu_model(), "cores": cores(), "load_average_before": load_before, "load_average_after": load_average()},
        "source_events": sum(summary.events.values()),
        "event_type": EVENT_TYPE,
        "staged_rows": staged_rows,
        "duplicates_marked": len(marked["numpy_sort"]),
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": medians,
        "group_by_over_numpy_sort": medians["group_by"] / medians["numpy_sort"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "duplicates.json").write_text(json.dumps(result, indent=2))
    markdown = _markdown(result)
    (RESULTS / "duplicates.md").write_text(markdown)
    print(markdown)


def _markdown(result: dict) -> str:
    hw, medians = result["hardware"], result["median_seconds"]
    return (
        f"Ingest's exact-duplicate step on {result['staged_rows']:,} staged {result['event_type']} rows (of "
        f"{result['source_events']:,} generated events), medians of {result['repeats']} alternated runs on {hw['cpu']} "
        f"({hw['cores']} cores; load average {hw['load_average_before']} before, {hw['load_average_after']} after).\n\n"
        "| repeated key hashes found by | seconds (median) | runs |\n|---|---|---|\n"
        + "".join(
            f"| {name} | {medians[name]:.3f} | {', '.join(f'{s:.3f}' for s in result['seconds'][name])} |\n"
            for name in ("group_by", "numpy_sort")
        )
        + f"\nGROUP BY / NumPy sort: {result['group_by_over_numpy_sort']:.2f}x; both marked the same "
        f"{result['duplicates_marked']:,} rows as duplicates.\n"
    )


if __name__ == "__main__":
    main()
