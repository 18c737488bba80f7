"""Which blocks earn their place? An ablation with the official probe on a generated set of its own.

Generates a set in the challenge layout (another seed and size than the demo), ingests it, builds the sequences and
statistics of the backtest day D (the newest day with a complete 28-day future) and the targets after it, trains
the default blocks and those named by --ablate on D (the CPU recipe of the registry) and scores, with the official
2048-wide probe on a sample of the relevant users: the default ensemble (also with every block at equal mean norm, and with blocks reweighted by
--scale), each block alone, every pair of default blocks (--pairs), the ensemble without (a default block) or with
(an opt-in block) each block named by --ablate, and the aggregated baselines. Every score has a 95 % bootstrap
interval over users; every row's paired difference to the ensemble is marked where it lies beyond noise. Writes
bench/results/blocks_seed<seed>_<users>[_<tag>].json and .md.

    PYTHONPATH=. python bench/bench_blocks.py [--users 8000] [--seed 11] [--sample-users 1500] [--ablate text_codes]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from datetime import timedelta
from fnmatch import fnmatchcase
from itertools import combinations
from pathlib import Path

import numpy as np
from hardware import cpu_model

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.evaluation.backtest import (
    ENSEMBLE,
    TOTAL,
    Candidate,
    Scorer,
    evaluate_candidates,
    probe_plan,
    scaled_baseline,
    score_markdown,
)
from ubp_pipeline.core.evaluation.baseline import baseline_features
from ubp_pipeline.core.evaluation.targets import HORIZON_DAYS, build_targets, make_tasks
from ubp_pipeline.core.profiles.assembly import BlockVectors, assemble_profiles
from ubp_pipeline.core.profiles.blocks import embed_block, train_block
from ubp_pipeline.core.profiles.registry import BLOCKS, default_blocks
from ubp_pipeline.core.sequences.stat_features import build_stat_features
from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceLayout, load_relevant_clients
from ubp_pipeline.data.synthetic import SyntheticConfig, generate

RESULTS = Path(__file__).parent / "results"


def train_blocks(
    names: list[str], day_inputs: dict[str, Path], models: Path, day: str, runtime, log
) -> tuple[dict[str, BlockVectors], list[dict]]:
    """The blocks ``names`` trained and embedded on one day; a block whose model learned nothing is left out."""
    vectors, trained = {}, []
    for name in names:
        spec = BLOCKS[name]
        folder = day_inputs[spec.input_asset]
        block = train_block(spec, folder, models / name, runtime, day)
        trained.append({"block": name, "seconds": block.provenance["training_seconds"], "learned": block.learned,
                        "dims": block.provenance["dims"]})
        log(f"{name}: trained in {block.provenance['training_seconds']:.1f} s, learned={block.learned}")
        if block.learned:
            vectors[name] = embed_block(spec, models / name, folder, runtime)
    return vectors, trained


EQUAL_NORMS = "ensemble, blocks at equal norm"


def reweighted(vectors: dict[str, BlockVectors], names: list[str], clients: np.ndarray, factor) -> np.ndarray:
    """The ensemble with each block's columns multiplied by ``factor(name, columns)``."""
    profiles = assemble_profiles([vectors[n] for n in names], clients)
    matrix = profiles.embeddings.astype(np.float32)
    for block in profiles.manifest["blocks"]:
        columns = slice(block["offset"], block["offset"] + block["dims"])
        matrix[:, columns] *= factor(block["name"], matrix[:, columns])
    return matrix


def equal_block_norms(vectors: dict[str, BlockVectors], names: list[str], clients: np.ndarray) -> np.ndarray:
    """Each block divided by its mean row norm: every block weighs the same in the probe's input projection (the
    statistics block, quantile-scaled to [0, 1], otherwise has rows about 4x longer than the L2-normalised blocks)."""
    return reweighted(vectors, names, clients, lambda _, columns: 1 / max(float(np.linalg.norm(columns, axis=1).mean()), 1e-12))


def candidates_for(
    vectors: dict[str, BlockVectors],
    clients: np.ndarray,
    counts: np.ndarray,
    ablate: list[str],
    scales: list[tuple[str, float]],
    pairs: bool = False,
) -> list[Candidate]:
    """The default ensemble, each block alone, every pair of default blocks (with ``pairs``), the ensemble without (a
    default block) or with (an opt-in block) each block of ``ablate``, and the two aggregated baselines."""

    def profile(names: list[str]) -> np.ndarray:
        return assemble_profiles([vectors[n] for n in names], clients).embeddings

    ensemble = [name for name in default_blocks() if name in vectors]
    variants = {
        (f"ensemble without {name}" if name in ensemble else f"ensemble with {name}"): (
            [n for n in ensemble if n != name] if name in ensemble else [*ensemble, name]
        )
        for name in ablate
        if name in vectors
    }
    return [
        Candidate(ENSEMBLE, "ensemble", profile(ensemble)),
        Candidate(EQUAL_NORMS, "selection", equal_block_norms(vectors, ensemble, clients)),
        *[Candidate(name, "block", profile([name])) for name in vectors],
        *[Candidate(f"{a} + {b}", "selection", profile([a, b])) for a, b in combinations(ensemble, 2) if pairs],
        *[Candidate(label, "selection", profile(names)) for label, names in variants.items()],
        *[
            Candidate(f"ensemble, {name} x{k:g}", "selection",
                      reweighted(vectors, ensemble, clients, lambda block, _, name=name, k=k: k if block == name else 1.0))
            for name, k in scales
        ],
        Candidate("baseline", "baseline", counts),
        Candidate("baseline_scaled", "baseline", scaled_baseline(counts)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--sample-users", type=int, default=1_500, help="relevant users the probe sees (0 = all)")
    parser.add_argument("--ablate", nargs="*", default=["text_codes"], help="blocks to leave out of (or add to) the ensemble")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = one per core)")
    parser.add_argument("--scale", nargs="*", default=[], metavar="BLOCK=FACTOR", help="ensemble rows with a block reweighted")
    parser.add_argument("--pairs", action="store_true", help="score every pair of default blocks as well")
    parser.add_argument("--only", nargs="*", default=None,
                        help="score only the rows matching these names or patterns, e.g. '* + *' (the ensemble always)")
    parser.add_argument("--tag", default="", help="suffix of the result files (for a run with --only)")
    args = parser.parse_args()
    unknown = sorted(set(args.ablate) - set(BLOCKS))
    if unknown:
        parser.error(f"--ablate {unknown}: not blocks of the registry ({', '.join(BLOCKS)})")
    started = time.perf_counter()
    config = SyntheticConfig(users=args.users, days=args.days, seed=args.seed)
    last_day = config.start + timedelta(days=args.days - 1)
    day = last_day - timedelta(days=HORIZON_DAYS)
    runtime = make_runtime("cpu", seed=0, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(config, work / "source")
        layout = SourceLayout(work / "source")
        with connect_warehouse(work / "warehouse.duckdb") as con:
            ingest_product_properties(con, layout)
            ingest_event_tables(con, layout, EVENT_TYPES, config.start, last_day)
            spec = SequenceSpec(as_of=day, first_day=config.start)
            build_sequences(con, spec, work / "user_sequences")
            build_stat_features(con, day, spec.lookback_days, work / "stat_features")
            targets = build_targets(con, day, last_day, work / "targets")
            prepared = time.perf_counter() - started
            inputs = {"user_sequences": work / "user_sequences", "stat_features": work / "stat_features"}
            names = [*default_blocks(), *[n for n in args.ablate if n not in default_blocks()]]
            vectors, trained = train_blocks(names, inputs, work / "models", day.isoformat(), runtime, print)
            clients = load_relevant_clients(layout, fallback=[v.client_ids for v in vectors.values()])
            settings, sampled = probe_plan("official", "cpu", len(clients), args.sample_users, seed=0)
            clients = clients if sampled is None else clients[sampled]
            scales = [(name, float(k)) for name, k in (item.split("=") for item in args.scale)]
            candidates = candidates_for(vectors, clients, baseline_features(con, day, clients), args.ablate, scales,
                                        args.pairs)
            if args.only is not None:
                candidates = [c for c in candidates if c.name == ENSEMBLE or any(fnmatchcase(c.name, p) for p in args.only)]
        scorer = Scorer(make_tasks(targets, clients), runtime, settings)
        probing = time.perf_counter()
        scores, _ = evaluate_candidates(candidates, scorer)
    probe_seconds = time.perf_counter() - probing
    record = {
        "data": {"generator_seed": args.seed, "users": args.users, "days": args.days, "backtest_day": day.isoformat(),
                 "probed_users": len(clients), "probe": settings.label},
        "blocks": trained,
        "seconds": {"prepare": round(prepared, 1), "probe": round(probe_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "hardware": {"cpu": cpu_model(), "torch_threads": runtime.threads, "python": platform.python_version()},
        "scores": scores.to_dict(orient="records"),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"blocks_seed{args.seed}_{args.users}{'_' + args.tag if args.tag else ''}"
    with atomic_path(stem.with_suffix(".json")) as path:
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    totals = scores[scores["task"] == TOTAL].set_index("row")["score"]
    header = (
        f"# Block ablation with the {settings.label} probe\n\n"
        f"Generated set: {args.users:,} users, {args.days} days, generator seed {args.seed}; backtest day {day}; "
        f"{len(clients):,} relevant users probed{' (sampled)' if sampled is not None else ''}, 95 % bootstrap intervals over users, one probe seed. "
        f"{cpu_model()}, {runtime.threads} torch threads; {record['seconds']['total']:.0f} s in all "
        f"({probe_seconds:.0f} s probing). `PYTHONPATH=. python bench/bench_blocks.py {shlex.join(sys.argv[1:])}`\n\n"
    )
    stem.with_suffix(".md").write_text(header + score_markdown(scores) + "\n")
    print(totals.sort_values(ascending=False).to_string())


if __name__ == "__main__":
    main()
