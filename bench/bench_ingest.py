"""Benchmark: ingest + sequence building on synthetic data, against a plain pandas build of the same sequences.

Each stage runs in a fresh subprocess (so its peak RSS is its own) and is repeated; medians are reported. The
pandas build holds every event in memory (6 GB at 10M events), so it runs only up to --pandas-max-events.
With --baseline (another checkout of the project, e.g. `git worktree add ../baseline <revision>`), that revision's
ingest and sequences run on the same files, alternating with this one's, and the table gains the ratios; up to
--pandas-max-events their warehouses are compared row for row and their sequences files column for column.
Writes bench/results/ingest.json and bench/results/ingest.md.

    python bench/bench_ingest.py --events 1000000 10000000 100000000 --repeats 3 [--baseline ../baseline]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

from hardware import cores, cpu_model, load_average, peak_rss_mib
from stages import run_stage

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "tmp"
DAYS = 120
START = date(2022, 6, 23)
EVENTS_PER_USER = 55  # what the generator produces per user over 120 days, measured on the demo
MAX_EVENTS = 128


def stage_ingest(source: Path, warehouse: Path) -> dict:
    from ubp_pipeline.core.warehouse.database import connect_warehouse
    from ubp_pipeline.core.warehouse.events import EVENT_TYPES
    from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
    from ubp_pipeline.core.warehouse.source_layout import SourceLayout

    warehouse.unlink(missing_ok=True)
    layout = SourceLayout(source)
    started = time.perf_counter()
    with connect_warehouse(warehouse) as con:
        ingest_product_properties(con, layout)
        reports = ingest_event_tables(con, layout, EVENT_TYPES, START, START + timedelta(days=DAYS - 1))
    accepted = sum(report.accepted_rows for report in reports.values())
    return {"seconds": time.perf_counter() - started, "accepted": accepted, "peak_rss_mb": peak_rss_mib()}


def stage_sequences(warehouse: Path, out: Path) -> dict:
    from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
    from ubp_pipeline.core.warehouse.database import connect_warehouse

    started = time.perf_counter()
    with connect_warehouse(warehouse, read_only=True) as con:
        stats = build_sequences(
            con, SequenceSpec(as_of=START + timedelta(days=DAYS - 1), first_day=START, max_events=MAX_EVENTS), out
        )
    return {
        "seconds": time.perf_counter() - started,
        "users": stats.users,
        "events_kept": stats.events_kept,
        "peak_rss_mb": peak_rss_mib(),
    }


def stage_checkout() -> dict:
    """The checkout whose ubp_pipeline a stage imports (a baseline run must not measure this one's)."""
    import ubp_pipeline

    return {"checkout": str(Path(ubp_pipeline.__file__).resolve().parents[1])}


def stage_pandas(source: Path, out: Path) -> dict:
    """The same sequences file with plain pandas from the same source files: read, drop what ingest would refuse
    (unknown skus, exact duplicates), merge the catalogue, sort, keep the last N per user, pack the list columns
    (vectorised, with the project's schema), write parquet."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ubp_pipeline.core.sequences.schema import SEQUENCE_SCHEMA, STORED_FIELDS
    from ubp_pipeline.core.warehouse.events import EVENT_CODE, EVENT_TYPES

    started = time.perf_counter()
    catalogue = pd.read_parquet(source / "product_properties.parquet", columns=["sku", "category", "price", "name"])
    frames = []
    for event_type in EVENT_TYPES:
        frame = pd.read_parquet(source / f"{event_type}.parquet").rename(columns={"timestamp": "ts"})
        frame["event_type"] = EVENT_CODE[event_type]
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events = events[events["sku"].isna() | events["sku"].isin(catalogue["sku"])]
    events = events.drop_duplicates(subset=["client_id", "ts", "event_type", "sku", "url", "query"])
    events = events.merge(catalogue, on="sku", how="left")
    events = events.sort_values(
        ["client_id", "ts", "event_type", "sku", "url", "query"], na_position="last", kind="stable"
    )
    seconds = events["ts"].to_numpy().astype("datetime64[s]").astype(np.int64)
    first_of_user = np.r_[True, events["client_id"].to_numpy()[1:] != events["client_id"].to_numpy()[:-1]]
    events["seconds_since_previous"] = pd.array(
        np.where(first_of_user, 0, seconds - np.r_[seconds[:1], seconds[:-1]]), dtype="Int64"
    )
    events.loc[first_of_user, "seconds_since_previous"] = pd.NA
    sizes = events.groupby("client_id", sort=True).size()
    events = events[events.groupby("client_id").cumcount(ascending=False) < MAX_EVENTS]
    kept = np.minimum(sizes.to_numpy(), MAX_EVENTS)
    offsets = pa.array(np.r_[0, np.cumsum(kept)].astype(np.int32))
    columns = {"client_id": pa.array(sizes.index.to_numpy()), "n_events": pa.array(sizes.to_numpy().astype(np.int64))}
    for field in STORED_FIELDS:
        values = pa.Array.from_pandas(events[field.name]).cast(field.stored)
        columns[field.name] = pa.ListArray.from_arrays(offsets, values)
    pq.write_table(pa.table(columns, schema=SEQUENCE_SCHEMA), out)
    return {
        "seconds": time.perf_counter() - started,
        "users": len(sizes),
        "events_kept": int(kept.sum()),
        "peak_rss_mb": peak_rss_mib(),
    }


def same_sequences(duckdb_folder: Path, pandas_file: Path) -> bool:
    """Both sides wrote the same table: every column equal, value for value."""
    import pyarrow.parquet as pq

    from ubp_pipeline.core.sequences.user_sequences import SEQUENCES_FILE

    return pq.read_table(duckdb_folder / SEQUENCES_FILE).equals(pq.read_table(pandas_file))


def same_as_baseline(folder: Path) -> dict:
    """The baseline's outputs against this revision's: the warehouse's tables row for row (EXCEPT ALL both ways; the
    quarantine without its ingestion time) and the sequences column for column, over the columns both files hold, and
    a baseline's stored ``day`` against the day this revision computes on load."""
    import duckdb
    import numpy as np
    import pyarrow.parquet as pq

    from ubp_pipeline.core.sequences.user_sequences import SEQUENCES_FILE, load_sequences

    con = duckdb.connect()
    con.execute(f"ATTACH '{folder / 'warehouse.duckdb'}' AS new (READ_ONLY)")
    con.execute(f"ATTACH '{folder / 'baseline_warehouse.duckdb'}' AS old (READ_ONLY)")
    differing = {}
    for table, columns in (("events", "*"), ("quarantine", "* EXCLUDE (ingested_at)"), ("product_properties", "*")):
        (n,) = con.execute(
            f"SELECT count(*) FROM ((SELECT {columns} FROM new.{table} EXCEPT ALL SELECT {columns} FROM old.{table}) "
            f"UNION ALL (SELECT {columns} FROM old.{table} EXCEPT ALL SELECT {columns} FROM new.{table}))"
        ).fetchone()
        differing[table] = n
    con.close()
    new, old = (
        pq.read_table(folder / "sequences" / SEQUENCES_FILE),
        pq.read_table(folder / "baseline_sequences" / SEQUENCES_FILE),
    )
    shared = [name for name in new.column_names if name in old.column_names]
    day_equal = None
    if "day" in old.column_names and "day" not in shared:  # stored by the baseline, computed on load here
        day_equal = np.array_equal(load_sequences(folder / "sequences").day, old["day"].combine_chunks().flatten())
    return {
        "rows_differing": differing,
        "sequences_equal_on_shared_columns": new.select(shared).equals(old.select(shared)),
        "baseline_day_equals_day_on_load": day_equal,
        "sequences_columns_only_in_baseline": [name for name in old.column_names if name not in shared],
        "sequences_columns_only_here": [name for name in new.column_names if name not in shared],
    }


STAGES = {"ingest": stage_ingest, "sequences": stage_sequences, "pandas": stage_pandas, "checkout": stage_checkout}


def _revision(checkout: Path) -> str:
    """The checkout's commit, marked when its files differ from it."""
    git = ["git", "-C", str(checkout)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return "unknown"
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return head.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")


def _hardware() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "gpu": "none",
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def _require_checkout(code: Path | None, expected: Path) -> None:
    imported = run_stage(__file__, "checkout", code=code)["checkout"]
    if imported != str(expected):
        raise RuntimeError(f"the stages would import ubp_pipeline from elsewhere than {expected}")


def bench_size(target_events: int, repeats: int, with_pandas: bool, baseline: Path | None) -> dict:
    from ubp_pipeline.data.synthetic import SyntheticConfig, generate

    folder = WORK / f"events_{target_events}"
    shutil.rmtree(folder, ignore_errors=True)
    summary = generate(
        SyntheticConfig(users=max(1, target_events // EVENTS_PER_USER), days=DAYS, start=START, seed=1),
        folder / "source",
    )
    source_events = sum(summary.events.values())
    runs: dict[str, list[dict]] = {
        name: [] for name in ("ingest", "sequences", "pandas") if with_pandas or name != "pandas"
    }
    if baseline:
        runs |= {"baseline_ingest": [], "baseline_sequences": []}
    for _ in range(repeats):
        runs["ingest"].append(run_stage(__file__, "ingest", folder / "source", folder / "warehouse.duckdb"))
        runs["sequences"].append(run_stage(__file__, "sequences", folder / "warehouse.duckdb", folder / "sequences"))
        if baseline:
            warehouse, sequences = folder / "baseline_warehouse.duckdb", folder / "baseline_sequences"
            runs["baseline_ingest"].append(run_stage(__file__, "ingest", folder / "source", warehouse, code=baseline))
            runs["baseline_sequences"].append(run_stage(__file__, "sequences", warehouse, sequences, code=baseline))
        if with_pandas:
            runs["pandas"].append(run_stage(__file__, "pandas", folder / "source", folder / "pandas.parquet"))
    if with_pandas and not same_sequences(folder / "sequences", folder / "pandas.parquet"):
        raise RuntimeError("pandas and DuckDB wrote different sequences")
    against_baseline = same_as_baseline(folder) if baseline and with_pandas else None
    if against_baseline and (
        any(against_baseline["rows_differing"].values())
        or not against_baseline["sequences_equal_on_shared_columns"]
        or against_baseline["baseline_day_equals_day_on_load"] is False
    ):
        raise RuntimeError(f"the baseline wrote different outputs: {against_baseline}")
    shutil.rmtree(folder, ignore_errors=True)
    ingest_s, sequences_s = _median(runs["ingest"], "seconds"), _median(runs["sequences"], "seconds")
    pandas_s = _median(runs["pandas"], "seconds") if with_pandas else None
    return {
        "source_events": source_events,
        "users": summary.users,
        "repeats": repeats,
        "ingest_seconds": ingest_s,
        "sequences_seconds": sequences_s,
        "end_to_end_seconds": ingest_s + sequences_s,
        "end_to_end_events_per_second": source_events / (ingest_s + sequences_s),
        "ingest_events_per_second": source_events / ingest_s,
        "sequences_events_per_second": source_events / sequences_s,
        "pandas_seconds": pandas_s,
        "pandas_over_duckdb_end_to_end": pandas_s / (ingest_s + sequences_s) if with_pandas else None,
        "peak_rss_mb": {name: max(row["peak_rss_mb"] for row in rows) for name, rows in runs.items()},
        "baseline": _baseline_ratios(runs, source_events) if baseline else None,
        "same_as_baseline": against_baseline,
        "runs": runs,
    }


def _baseline_ratios(runs: dict[str, list[dict]], source_events: int) -> dict:
    """The baseline's medians and its time over this revision's (> 1: this one is faster)."""
    ingest, sequences = _median(runs["baseline_ingest"], "seconds"), _median(runs["baseline_sequences"], "seconds")
    new_ingest, new_sequences = _median(runs["ingest"], "seconds"), _median(runs["sequences"], "seconds")
    return {
        "ingest_seconds": ingest,
        "sequences_seconds": sequences,
        "end_to_end_events_per_second": source_events / (ingest + sequences),
        "ingest_ratio": ingest / new_ingest,
        "sequences_ratio": sequences / new_sequences,
        "end_to_end_ratio": (ingest + sequences) / (new_ingest + new_sequences),
    }


def _markdown(result: dict) -> str:
    hw = result["hardware"]
    lines = [
        f"Ingest + sequence building, medians over the runs of each size, on {hw['cpu']} ({hw['cores']} cores, no GPU).",
        "",
        "| source events | runs | ingest s | sequences s | end-to-end events/s | pandas s | pandas / DuckDB end to end "
        "| peak RSS MiB (ingest / sequences / pandas) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        rss = row["peak_rss_mb"]
        ran_pandas = row["pandas_seconds"] is not None
        pandas = (
            f"{row['pandas_seconds']:.2f} | {row['pandas_over_duckdb_end_to_end']:.1f}x"
            if ran_pandas
            else "not run | -"
        )
        pandas_rss = f"{rss['pandas']:,.0f}" if ran_pandas else "-"
        lines.append(
            f"| {row['source_events']:,} | {row['repeats']} | {row['ingest_seconds']:.2f} | {row['sequences_seconds']:.2f} | "
            f"{row['end_to_end_events_per_second']:,.0f} | {pandas} | "
            f"{rss['ingest']:,.0f} / {rss['sequences']:,.0f} / {pandas_rss} |"
        )
    notes = (
        "\nBoth sides start from the same source files and end with the same sequences file, compared column by column "
        "(the run fails if they differ). DuckDB ingest also validates every row (types, unknown skus, code strings, "
        "exact duplicates), keeps a warehouse and a quarantine and reconciles counts; the pandas build only drops unknown "
        "skus and duplicates, and packs the list columns vectorised (no Python loop per user). Above "
        f"{result['pandas_max_events']:,} source events the pandas build is not run (it holds every event in memory)."
    )
    return "\n".join(lines) + "\n" + notes + "\n" + (_baseline_markdown(result) if result["baseline_revision"] else "")


def _baseline_markdown(result: dict) -> str:
    lines = [
        "",
        f"Against the baseline revision {result['baseline_revision']} (this one: {result['revision']}), run by the same "
        "script on the same files, each run of the baseline right after this revision's (ratios = baseline time / "
        "this revision's time, medians):",
        "",
        "| source events | runs | baseline ingest s | baseline sequences s | baseline end-to-end events/s | ingest ratio "
        "| sequences ratio | end-to-end ratio | outputs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        base, same = row["baseline"], row["same_as_baseline"]
        if same is None:
            outputs = "not compared (above the comparison size)"
        else:
            only = ", ".join(same["sequences_columns_only_in_baseline"])
            day = "; its stored day equals the day computed on load" if same["baseline_day_equals_day_on_load"] else ""
            outputs = "warehouse tables and sequences equal" + (
                f" (without the baseline's {only}{day})" if only else ""
            )
        lines.append(
            f"| {row['source_events']:,} | {row['repeats']} | {base['ingest_seconds']:.2f} | {base['sequences_seconds']:.2f} | "
            f"{base['end_to_end_events_per_second']:,.0f} | {base['ingest_ratio']:.2f}x | {base['sequences_ratio']:.2f}x | "
            f"{base['end_to_end_ratio']:.2f}x | {outputs} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pandas-max-events", type=int, default=20_000_000)
    parser.add_argument("--baseline", type=Path, help="a checkout of another revision to run alongside (see above)")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        name, *paths = args.stage
        print(json.dumps(STAGES[name](*map(Path, paths))))
        return
    baseline = args.baseline.resolve() if args.baseline else None
    _require_checkout(None, ROOT)
    if baseline:
        _require_checkout(baseline, baseline)
    sizes = [bench_size(n, args.repeats, n <= args.pandas_max_events, baseline) for n in args.events]
    result = {
        "hardware": _hardware(),
        "pandas_max_events": args.pandas_max_events,
        "baseline_revision": _revision(baseline) if baseline else None,
        "revision": _revision(ROOT),
        "sizes": sizes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "ingest.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
