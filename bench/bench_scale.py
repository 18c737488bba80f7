"""Challenge scale on one machine: the main job's stages on 1M users and 100M+ events, wall time and peak RSS each.

Generates a set in the challenge layout chunk by chunk (--users, --activity: 1M users at 2.2 give about 125M
events), then runs each stage in a fresh interpreter, so that its peak RSS is its own: ingest, the sequences and
statistics of the backtest day D, each block's training and embedding, the profiles, the targets and the backtest
(the profile and both baselines, on a CPU the official probe on 1,500 sampled users, as the job does there). Ingest,
sequences, statistics and targets run at full size, and on a CPU the backtest too. On two cores one GRU epoch over
1M users takes hours, so training is measured on --train-users sampled users and embedding and profiles on
--embed-users, each scaled linearly in users (training at the epochs it took on the sample). The estimate adds the
stages of the main job's profile half as the job runs them: sequences, statistics, training, embedding and profiles
twice (backtest models for D, production models for the newest day), ingest, targets and the backtest once; the
recommender is not included.
With --device cuda the blocks train, embed and probe on the GPU at the method's sizes (as the job does there), the
backtest probes every profiled user (its probe time is scaled like the profiles, the rest is not), and each of those
stages also reports the peak GPU memory torch allocated.
Writes bench/results/scale[_tag].json and .md; the generated set stays in bench/tmp/scale for the next run (--fresh
regenerates it).

    PYTHONPATH=. python bench/bench_scale.py --users 1000000 --activity 2.2 --train-users 3000 --embed-users 50000
    PYTHONPATH=. python bench/bench_scale.py --device cuda --train-users 8000 --tag gpu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from bench_ingest import stage_ingest
from hardware import cores, cpu_model, gpu_model, load_average, peak_rss_mib
from stages import run_stage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "tmp" / "scale"


def _days(work: Path) -> tuple[date, date, date]:
    """First day, backtest day D (the newest with a complete future) and last day of the generated set."""
    from ubp_pipeline.core.evaluation.targets import HORIZON_DAYS

    config = json.loads((work / "source" / "truth" / "config.json").read_text())
    first = date.fromisoformat(config["start"])
    last = first + timedelta(days=config["days"] - 1)
    return first, last - timedelta(days=HORIZON_DAYS), last


def _runtime(device: str):
    from ubp_pipeline.core.common.device import make_runtime

    return make_runtime(device, seed=0, threads=0)


def _measured(started: float, **values) -> dict:
    """Seconds since ``started`` and peak RSS, plus peak GPU memory where the stage used CUDA."""
    measured = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mib())}
    torch = sys.modules.get("torch")  # only stages that trained or probed imported it
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        measured["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return measured | values


def stage_generate(work: Path, users: str, activity: str) -> dict:
    from bench_ingest import DAYS, START

    from ubp_pipeline.data.synthetic import SyntheticConfig, generate

    started = time.perf_counter()
    config = SyntheticConfig(users=int(users), days=DAYS, start=START, seed=3, activity=float(activity))
    summary = generate(config, work / "source")
    return _measured(started, events=sum(summary.events.values()), users=summary.users)


def stage_sequences(work: Path) -> dict:
    from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
    from ubp_pipeline.core.warehouse.database import connect_warehouse

    first, day, _ = _days(work)
    started = time.perf_counter()
    with connect_warehouse(work / "warehouse.duckdb", read_only=True) as con:
        stats = build_sequences(con, SequenceSpec(as_of=day, first_day=first), work / "user_sequences")
    return _measured(started, users=stats.users, events_kept=stats.events_kept)


def stage_statistics(work: Path) -> dict:
    from ubp_pipeline.core.sequences.stat_features import build_stat_features
    from ubp_pipeline.core.sequences.user_sequences import SequenceSpec
    from ubp_pipeline.core.warehouse.database import connect_warehouse

    first, day, _ = _days(work)
    started = time.perf_counter()
    with connect_warehouse(work / "warehouse.duckdb", read_only=True) as con:
        users = build_stat_features(
            con, day, SequenceSpec(as_of=day, first_day=first).lookback_days, work / "stat_features"
        )
    return _measured(started, users=users)


def stage_sample(work: Path, name: str, users: str) -> dict:
    """samples/<name>: the day's inputs restricted to ``users`` randomly chosen users (not timed)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ubp_pipeline.core.sequences.stat_features import FEATURES_FILE
    from ubp_pipeline.core.sequences.user_sequences import SEQUENCES_FILE

    clients = pq.read_table(work / "user_sequences" / SEQUENCES_FILE, columns=["client_id"])["client_id"].to_numpy()
    chosen = np.random.default_rng(0).choice(clients, min(int(users), len(clients)), replace=False)
    for folder, data_file in (("user_sequences", SEQUENCES_FILE), ("stat_features", FEATURES_FILE)):
        target = work / "samples" / name / folder
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / folder, target, ignore=shutil.ignore_patterns(data_file))
        table = pq.read_table(work / folder / data_file)
        pq.write_table(table.filter(pc.is_in(table["client_id"], value_set=pa.array(chosen))), target / data_file)
    return {"users": len(chosen)}


def stage_train(work: Path, block: str, device: str) -> dict:
    from ubp_pipeline.core.profiles.blocks import train_block
    from ubp_pipeline.core.profiles.registry import BLOCKS

    spec = BLOCKS[block]
    _, day, _ = _days(work)
    started = time.perf_counter()
    trained = train_block(
        spec, work / "samples" / "train" / spec.input_asset, work / "models" / block, _runtime(device), day.isoformat()
    )
    return _measured(started, learned=trained.learned, epochs=len(trained.history), users=trained.training_users)


def stage_embed(work: Path, block: str, device: str) -> dict:
    import numpy as np

    from ubp_pipeline.core.profiles.blocks import embed_block
    from ubp_pipeline.core.profiles.registry import BLOCKS

    spec = BLOCKS[block]
    started = time.perf_counter()
    vectors = embed_block(
        spec, work / "models" / block, work / "samples" / "embed" / spec.input_asset, _runtime(device)
    )
    result = _measured(started, users=len(vectors.client_ids), dims=int(vectors.vectors.shape[1]))
    (work / "vectors").mkdir(exist_ok=True)
    np.savez(
        work / "vectors" / f"{block}.npz", client_ids=vectors.client_ids, vectors=vectors.vectors, fill=vectors.fill
    )
    return result


def _relevant_ensemble(work: Path, blocks: list[str]):
    """The blocks' stored vectors, the relevant users among those embedded (the embedding sample's) and the number
    of relevant users in all."""
    import numpy as np

    from ubp_pipeline.core.profiles.assembly import BlockVectors
    from ubp_pipeline.core.warehouse.source_layout import SourceLayout, load_relevant_clients

    loaded = []
    for name in blocks:
        with np.load(work / "vectors" / f"{name}.npz") as stored:
            loaded.append(BlockVectors(name, stored["client_ids"], stored["vectors"], stored["fill"]))
    relevant = load_relevant_clients(SourceLayout(work / "source"), fallback=[b.client_ids for b in loaded])
    embedded = np.unique(np.concatenate([b.client_ids for b in loaded]))
    return loaded, relevant[np.isin(relevant, embedded)], len(relevant)


def stage_profiles(work: Path, *blocks: str) -> dict:
    """The profiles of the relevant users among the embedding sample (the job profiles every relevant user)."""
    from ubp_pipeline.core.profiles.assembly import assemble_profiles, validate_profiles, write_profiles

    loaded, clients, relevant = _relevant_ensemble(work, list(blocks))
    started = time.perf_counter()
    profiles = assemble_profiles(loaded, clients)
    validate_profiles(write_profiles(profiles, work / "profiles"))
    return _measured(started, users=len(clients), relevant_users=relevant, dims=int(profiles.embeddings.shape[1]))


def stage_targets(work: Path) -> dict:
    from ubp_pipeline.core.evaluation.targets import build_targets
    from ubp_pipeline.core.warehouse.database import connect_warehouse

    _, day, last = _days(work)
    started = time.perf_counter()
    with connect_warehouse(work / "warehouse.duckdb", read_only=True) as con:
        build_targets(con, day, last, work / "targets")
    return _measured(started)


def stage_backtest(work: Path, device: str) -> dict:
    """The main job's backtest: the profile and both aggregated baselines (their SQL over the warehouse), the official
    probe on the device's default users (a sample on a CPU, all on a GPU); no oracle (real data has no planted
    truth)."""
    from ubp_pipeline.core.evaluation.backtest import ENSEMBLE, TOTAL, run_backtest
    from ubp_pipeline.core.warehouse.database import connect_warehouse

    _, day, _ = _days(work)
    started = time.perf_counter()
    with connect_warehouse(work / "warehouse.duckdb", read_only=True) as con:
        backtest = run_backtest(
            con,
            day,
            work / "profiles",
            work / "targets",
            _runtime(device),
            work / "backtest",
            probe="official",
            score_blocks=False,
            log=lambda _: None,
        )
    totals = backtest.scores[backtest.scores["task"] == TOTAL].set_index("row")["score"]
    probed = int(backtest.scores["n_users"].max())
    probing = round(float(backtest.scores.loc[backtest.scores["task"] == TOTAL, "seconds"].sum()), 2)
    return _measured(
        started,
        probe=backtest.probe,
        users=probed,
        probe_seconds=probing,
        rows=len(totals),
        ensemble_total=round(float(totals[ENSEMBLE]), 3),
    )


STAGES = {
    "generate": stage_generate,
    "ingest": lambda work: stage_ingest(work / "source", work / "warehouse.duckdb"),
    "sequences": stage_sequences,
    "statistics": stage_statistics,
    "sample": stage_sample,
    "train": stage_train,
    "embed": stage_embed,
    "profiles": stage_profiles,
    "targets": stage_targets,
    "backtest": stage_backtest,
}


def run(work: Path, users: int, activity: float, samples: dict[str, int], fresh: bool, device: str) -> dict:
    from ubp_pipeline.core.profiles.registry import BLOCKS, default_blocks

    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    generated = work / "generation.json"
    wanted = {"users": users, "activity": activity}
    if not generated.exists() or json.loads(generated.read_text())["config"] != wanted:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        generation = run_stage(__file__, "generate", work, users, activity)
        generated.write_text(json.dumps({"config": wanted, "generation": generation}))
    stages = {"generate": json.loads(generated.read_text())["generation"]}
    for name in ("ingest", "sequences", "statistics"):
        stages[name] = run_stage(__file__, name, work)
        print(name, stages[name], flush=True)
    for name, size in samples.items():
        stages[f"sample {name}"] = run_stage(__file__, "sample", work, name, size)
    for block in BLOCKS:
        stages[f"train {block}"] = run_stage(__file__, "train", work, block, device)
        if stages[f"train {block}"]["learned"]:  # as in the job, a model that learned nothing embeds nothing
            stages[f"embed {block}"] = run_stage(__file__, "embed", work, block, device)
        print(block, stages[f"train {block}"], stages.get(f"embed {block}"), flush=True)
    defaults = default_blocks()
    learned = [b for b in defaults if stages[f"train {b}"]["learned"]]
    stages["profiles"] = run_stage(__file__, "profiles", work, *learned)
    stages["targets"] = run_stage(__file__, "targets", work)
    stages["backtest"] = run_stage(__file__, "backtest", work, device)
    return {"users": users, "activity": activity, "device": device, "default_blocks": defaults, "stages": stages}


def estimate(result: dict) -> dict:
    """Seconds of the profile half of the main job at full size: training, embedding and profiles scaled linearly
    from their samples to every user (profiles: every relevant user; on a GPU the backtest's probing too, which sees
    every profiled user there); sequences, statistics, training, embedding and profiles twice (models and profiles
    for D and for the newest day, both taken to cost what D's do). The job trains the default blocks; the opt-in
    ones (UBP_OPT_IN_BLOCKS) are measured too and their cost, also twice, is given apart. The default blocks are the
    run's (today's registry for a result that predates recording them)."""
    from ubp_pipeline.core.profiles.registry import default_blocks

    stages, defaults = result["stages"], result.get("default_blocks") or default_blocks()
    scales = {name: stages["sequences"]["users"] / stages[f"sample {name}"]["users"] for name in ("train", "embed")}
    scales["profiles"] = stages["profiles"]["relevant_users"] / stages["profiles"]["users"]
    scaled = {
        stage: row["seconds"] * scales[stage.split()[0]]
        for stage, row in stages.items()
        if stage.startswith(("train ", "embed ", "profiles"))
    }
    if result.get("device", "cpu") != "cpu":  # the probe's cost grows with the users; the baselines' SQL does not
        probing = stages["backtest"]["probe_seconds"]
        scaled["backtest"] = stages["backtest"]["seconds"] - probing + probing * scales["profiles"]
    opt_in = {
        stage for stage in scaled if stage.startswith(("train ", "embed ")) and stage.split()[1] not in defaults
    }
    twice = stages["sequences"]["seconds"] + stages["statistics"]["seconds"]
    twice += sum(seconds for stage, seconds in scaled.items() if stage != "backtest" and stage not in opt_in)
    backtest = scaled.get("backtest", stages["backtest"]["seconds"])
    total = stages["ingest"]["seconds"] + 2 * twice + stages["targets"]["seconds"] + backtest
    return {
        "scales": scales,
        "scaled_seconds": scaled,
        "main_job_seconds": total,
        "opt_in_blocks": sorted({stage.split()[1] for stage in opt_in}),
        "opt_in_blocks_seconds": 2 * sum(scaled[stage] for stage in opt_in),
    }


def markdown(result: dict) -> str:
    stages, hw, est = result["stages"], result["hardware"], result["estimate"]
    events = stages["generate"]["events"]
    lines = [
        "# Challenge scale on one machine",
        "",
        f"{hw['cpu']}, {hw['cores']} cores, {_device_words(result)}; load average {hw['load_before']} before, "
        f"{hw['load_after']} after. "
        f"Generated set: {result['users']:,} users, activity {result['activity']} ({events:,} source events, 120 days). "
        "One run; each stage in a fresh interpreter. Training measured on "
        f"{stages['sample train']['users']:,} sampled users (at the epochs it took there), embedding on "
        f"{stages['sample embed']['users']:,}, scaled linearly to the day's {stages['sequences']['users']:,} users, "
        f"profiles to its {stages['profiles']['relevant_users']:,} relevant users (marked ~, the measured seconds in "
        "brackets; their peak RSS is the sample's). Ingest, sequences, statistics and targets ran at full size; the "
        f"backtest probes {_probed_words(result)}.",
        "",
    ]
    on_gpu = any("peak_gpu_mb" in row for row in stages.values())
    lines += ["| stage | seconds | peak RSS MiB | " + ("peak GPU MiB allocated | " if on_gpu else "") + "notes |"]
    lines += ["|---|---|---|" + ("---|" if on_gpu else "") + "---|"]
    measures = ("seconds", "peak_rss_mb", "peak_gpu_mb")
    for name, row in stages.items():
        if name == "generate" or name.startswith("sample"):
            continue
        seconds = f"{row['seconds']:,.1f}"
        if name in est["scaled_seconds"]:
            seconds = f"~{est['scaled_seconds'][name]:,.0f} ({row['seconds']:,.1f})"
        notes = ", ".join(f"{k} {v:,}" if type(v) is int else f"{k} {v}" for k, v in row.items() if k not in measures)
        rss = f"{row['peak_rss_mb']:,.0f}" + (" (sample)" if name in est["scaled_seconds"] else "")
        gpu = (f"{row['peak_gpu_mb']:,} | " if "peak_gpu_mb" in row else "- | ") if on_gpu else ""
        lines.append(f"| {name} | {seconds} | {rss} | {gpu}{notes} |")
    full_size = ("ingest", "sequences", "statistics", "targets")
    rss = max(stages[name]["peak_rss_mb"] for name in full_size)
    ingest_sequences = stages["ingest"]["seconds"] + stages["sequences"]["seconds"]
    lines += [
        "",
        f"Ingest + sequences: {ingest_sequences:,.1f} s, {events / ingest_sequences:,.0f} events/s end to end. "
        f"Largest peak RSS of the stages run at full size ({', '.join(full_size)}): {rss:,.0f} MiB. "
        f"Estimate of the main job's profile half on this machine (ingest once; sequences, statistics, training, "
        f"embedding and profiles for two days, the newest taken to cost what D does; targets and the backtest once; "
        f"the default blocks; the recommender not included): {est['main_job_seconds'] / 3600:,.1f} h."
        + (
            f" The opt-in blocks ({', '.join(est['opt_in_blocks'])}) would add "
            f"{est['opt_in_blocks_seconds'] / 3600:,.1f} h (training and embedding, for two days)."
            if est["opt_in_blocks"]
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def _device_words(result: dict) -> str:
    gpu, device = result["hardware"].get("gpu", "none"), result.get("device", "cpu")
    if device == "cpu":
        return "no GPU" if gpu == "none" else f"blocks on the CPU ({gpu} unused)"
    return f"blocks trained, embedded and probed on {gpu if device == 'cuda' else device} ({device})"


def _probed_words(result: dict) -> str:
    if result.get("device", "cpu") == "cpu":
        return "its default 1,500 sampled users, as on any CPU"
    return (
        "every profiled user (the embedding sample's relevant users), as on any GPU; its probing is scaled like the "
        "profiles"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--activity", type=float, default=2.2)
    parser.add_argument("--train-users", type=int, default=3_000)
    parser.add_argument("--embed-users", type=int, default=50_000)
    parser.add_argument("--fresh", action="store_true", help="regenerate the set even if bench/tmp/scale holds it")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--work", type=Path, default=WORK, help="where the generated set and stage outputs live")
    parser.add_argument("--device", default="cpu", help="where the blocks train, embed and probe: cpu, cuda or auto")
    parser.add_argument(
        "--render", action="store_true", help="only recompute the tag's estimate; rewrite its .json and .md"
    )
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        name, work, *rest = args.stage
        print(json.dumps(STAGES[name](Path(work), *rest), default=str))
        return
    stem = RESULTS / f"scale{'_' + args.tag if args.tag else ''}"
    if args.render:
        result = json.loads(stem.with_suffix(".json").read_text())
        _write(stem, result | {"estimate": estimate(result)})
        return
    load_before = load_average()
    from ubp_pipeline.core.common.device import select_device

    samples = {"train": args.train_users, "embed": args.embed_users}
    device = select_device(args.device).type  # fails here, before generating, when the device is missing
    result = run(args.work, args.users, args.activity, samples, args.fresh, device)
    result["hardware"] = {
        "cpu": cpu_model(),
        "cores": cores(),
        "gpu": gpu_model(),
        "load_before": load_before,
        "load_after": load_average(),
    }
    result["estimate"] = estimate(result)
    _write(stem, result)


def _write(stem: Path, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
