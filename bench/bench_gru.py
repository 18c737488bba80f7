"""GRU autoencoder on CPU or a GPU (--device): does length bucketing pay, and what does each sequence embedder cost on the demo?

1. Training, at equal loss. The product path (``ReconstructionObjective`` on ``length_batches``: every batch padded
   only to its own longest user, output heads on real events only) against a straightforward implementation of the
   *same model class and loss* (random batches, every batch padded to the partition's max_events, heads and a
   masked cross-entropy on every position). Both train the demo configuration from the same initial weights with
   the same optimizer, batch size and number of epochs on the same sample of demo users, take their steps with the
   product's ``train_epoch`` and are scored by the same validation evaluator. The speed-up is the ratio of the
   times to reach the same validation loss (the worse of the two medians after the last epoch, read off each run's
   loss-vs-training-time curve). Each run is its own process (clean peak RSS), bucketed and padded runs alternate
   (the machine is shared), medians over repeats.
2. Inference: encoding every demo user in batches of ``inference_batch_size``, length-sorted vs padded to max_events.
3. Full fits on the demo sequences with the shipped defaults: every GRU variant and the next-event transformer.

    PYTHONPATH=. python bench/bench_gru.py [--users 2000] [--epochs 3] [--repeats 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hardware import describe, load_average, peak_rss_mib
from reports import write_keeping

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.profiles.embedders.batching import RaggedTokens, length_batches
from ubp_pipeline.core.profiles.embedders.gru_autoencoder import (
    ReconstructionObjective,
    ragged_tokens,
)
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput
from ubp_pipeline.core.profiles.embedders.training import (
    BatchOutcome,
    classification_outcome,
    evaluate,
    split_rows,
    train_epoch,
)
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.core.sequences.user_sequences import read_manifest
from ubp_pipeline.core.sequences.vocabulary import PAD
from ubp_pipeline.models.gru_autoencoder import GRUAutoencoderNet, GRUAutoencoderNetConfig

DEMO = Path("data/demo/artifacts/user_sequences/2022-09-22")
RESULTS = Path(__file__).parent / "results"
GPU_SECTION = "## The sequence blocks at the method's size on one GPU"  # a section of gru.md measured elsewhere
CONFIG = BLOCKS["gru_week_all"].build().config  # the CPU (demo) configuration of the multi-field GRU
SEQUENCE_BLOCKS = [name for name, spec in BLOCKS.items() if spec.predicts_fields]
SEED = 0


@dataclass
class PaddedReconstruction:
    """The straightforward objective: pad every batch to ``max_length`` and let ignore_index drop the padding."""

    tokens: RaggedTokens
    fields: tuple[str, ...]
    max_length: int
    device: torch.device
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = self.tokens.lengths

    def __call__(self, model: GRUAutoencoderNet, rows: np.ndarray) -> BatchOutcome:
        tokens, lengths = self.tokens.padded(rows)
        tokens = F.pad(tokens, (0, 0, 0, self.max_length - tokens.shape[1]), value=PAD).to(self.device, non_blocking=True)
        _, outputs = model(tokens, lengths)
        logits = {f: v.flatten(0, 1) for f, v in model.logits(outputs).items()}  # heads on every position
        return classification_outcome(logits, tokens.flatten(0, 1), {f: i for i, f in enumerate(self.fields)})


def uniform_batches(n_rows: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n_rows)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def sample_tokens(users: int) -> tuple[RaggedTokens, int]:
    data = SequenceInput.load(DEMO)
    n = len(data.sequences)
    rows = np.sort(np.random.default_rng(SEED).choice(n, size=min(users, n), replace=False))
    sample = SequenceInput(data.sequences.select(rows), data.as_of_day, data.lookback_days, data.vocabularies)
    space = data.token_space().most_frequent(CONFIG.vocabulary_limit)
    return ragged_tokens(sample, space, CONFIG.fields), int(read_manifest(DEMO)["spec"]["max_events"])


def new_model(sizes: tuple[int, ...]) -> GRUAutoencoderNet:
    torch.manual_seed(SEED)
    return GRUAutoencoderNet(
        GRUAutoencoderNetConfig(
            CONFIG.fields, sizes, CONFIG.embedding_dim, CONFIG.hidden_dim, CONFIG.layers, CONFIG.dropout
        )
    )


def vocabulary_sizes() -> tuple[int, ...]:
    space = SequenceInput.load(DEMO).token_space().most_frequent(CONFIG.vocabulary_limit)
    return tuple(space.size(f) for f in CONFIG.fields)


def training_run(method: str, users: int, epochs: int, threads: int, repeat: int, device: str) -> dict:
    """One training run of ``method`` ('bucketed' or 'padded'); validation is scored identically for both."""
    runtime = make_runtime(device, seed=SEED, threads=threads)
    tokens, max_length = sample_tokens(users)
    train_rows, valid_rows = split_rows(len(tokens), 0.1, SEED)
    real = ReconstructionObjective(tokens, CONFIG.fields, runtime.device)
    objective = real if method == "bucketed" else PaddedReconstruction(tokens, CONFIG.fields, max_length, runtime.device)
    model = new_model(vocabulary_sizes()).to(runtime.device)
    recipe = CONFIG.recipe
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (recipe.warmup_steps + 1)))
    rng = np.random.default_rng(SEED + repeat)
    valid_batch = recipe.batch_size * 4
    initial = evaluate(model, real, valid_rows, valid_batch, runtime)["valid_loss"]
    curve = [{"epoch": 0, "train_seconds": 0.0, "valid_loss": initial}]
    train_tokens, elapsed = int(tokens.lengths[train_rows].sum()), 0.0
    for epoch in range(1, epochs + 1):
        if method == "bucketed":
            batches = [train_rows[b] for b in length_batches(tokens.lengths[train_rows], recipe.batch_size, rng)]
        else:
            batches = [train_rows[b] for b in uniform_batches(len(train_rows), recipe.batch_size, rng)]
        started = time.perf_counter()
        train_epoch(model, objective, batches, optimizer, warmup, recipe.clip_norm, runtime)
        elapsed += time.perf_counter() - started
        valid = evaluate(model, real, valid_rows, valid_batch, runtime)
        curve.append({"epoch": epoch, "train_seconds": elapsed, "valid_loss": valid["valid_loss"]})
    return {
        "method": method,
        "repeat": repeat,
        "train_users": len(train_rows),
        "train_tokens_per_epoch": train_tokens,
        "curve": curve,
        "sequences_per_second": len(train_rows) * epochs / elapsed,
        "tokens_per_second": train_tokens * epochs / elapsed,
        "peak_rss_mib": peak_rss_mib(),
    }


def same_loss_check(users: int) -> float:
    """|loss(bucketed) - loss(padded)| for the same weights and rows: the two implementations compute one loss."""
    tokens, max_length = sample_tokens(min(users, 256))
    model = new_model(vocabulary_sizes()).eval()
    rows = np.arange(min(len(tokens), 64))
    with torch.no_grad():
        bucketed = ReconstructionObjective(tokens, CONFIG.fields, torch.device("cpu"))(model, rows).loss
        padded = PaddedReconstruction(tokens, CONFIG.fields, max_length, torch.device("cpu"))(model, rows).loss
    return float(abs(bucketed - padded))


def inference_run(threads: int, device: str) -> dict:
    """Encode every demo user: length-sorted batches (the product path) vs batches padded to max_events."""
    runtime = make_runtime(device, seed=SEED, threads=threads)
    data = SequenceInput.load(DEMO)
    tokens = ragged_tokens(data, data.token_space().most_frequent(CONFIG.vocabulary_limit), CONFIG.fields)
    max_length = int(read_manifest(DEMO)["spec"]["max_events"])
    model = new_model(vocabulary_sizes()).to(runtime.device).eval()
    size = CONFIG.inference_batch_size
    plans = {
        "bucketed": (length_batches(tokens.lengths, size), None),
        "padded": ([np.arange(i, min(i + size, len(tokens))) for i in range(0, len(tokens), size)], max_length),
    }
    result = {"users": len(tokens), "tokens": int(tokens.lengths.sum())}
    for method, (batches, pad_to) in plans.items():
        started = time.perf_counter()
        with torch.no_grad(), runtime.autocast():
            for rows in batches:
                batch, lengths = tokens.padded(rows)
                if pad_to is not None:
                    batch = F.pad(batch, (0, 0, 0, pad_to - batch.shape[1]), value=PAD)
                model.encode(batch.to(runtime.device, non_blocking=True), lengths)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        result[method] = {
            "seconds": seconds,
            "users_per_second": len(tokens) / seconds,
            "tokens_per_second": result["tokens"] / seconds,
        }
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def demo_fit(name: str, threads: int, device: str) -> dict:
    """Fit one block's embedder with its shipped defaults for the device on the whole demo partition, then embed it."""
    runtime = make_runtime(device, seed=SEED, threads=threads)
    embedder = BLOCKS[name].build(device_type=runtime.device.type)
    started = time.perf_counter()
    fitted = embedder.fit(DEMO, runtime)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = embedder.embed(fitted, DEMO, runtime)
    last = fitted.history.last()
    return {
        "embedder": name,
        "config": asdict(embedder.config),
        "fit_seconds": fit_seconds,
        "epochs": len(fitted.history.epochs),
        "best_epoch": fitted.config["best_epoch"],
        "seconds_per_epoch": statistics.median(fitted.history.series("seconds")),
        "train_tokens_per_second": statistics.median(fitted.history.series("train_tokens_per_second")),
        "embed_seconds": time.perf_counter() - started,
        "users_embedded": len(embeddings.client_ids),
        "dims": embeddings.vectors.shape[1],
        "last_epoch": {k: round(v, 4) for k, v in last.items()},
        "peak_rss_mib": peak_rss_mib(),
    }


def time_to_reach(curve: list[dict], target: float) -> float:
    """Training seconds at which the validation loss first reaches ``target`` (linear between epochs)."""
    for before, after in zip(curve, curve[1:]):
        if after["valid_loss"] <= target:
            span = before["valid_loss"] - after["valid_loss"]
            share = (before["valid_loss"] - target) / span if span > 0 else 1.0
            return before["train_seconds"] + share * (after["train_seconds"] - before["train_seconds"])
    return float("nan")


def summarise(runs: list[dict]) -> dict:
    by_method = {m: [r for r in runs if r["method"] == m] for m in ("bucketed", "padded")}
    final = {m: statistics.median(r["curve"][-1]["valid_loss"] for r in rs) for m, rs in by_method.items()}
    target = max(final.values())
    summary = {"target_valid_loss": target}
    for method, rs in by_method.items():
        summary[method] = {
            "final_valid_loss_median": final[method],
            "seconds_to_target_median": statistics.median(time_to_reach(r["curve"], target) for r in rs),
            "train_seconds_median": statistics.median(r["curve"][-1]["train_seconds"] for r in rs),
            "sequences_per_second_median": statistics.median(r["sequences_per_second"] for r in rs),
            "tokens_per_second_median": statistics.median(r["tokens_per_second"] for r in rs),
            "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in rs),
        }
    padded, bucketed = summary["padded"], summary["bucketed"]
    summary["speedup_at_equal_loss"] = padded["seconds_to_target_median"] / bucketed["seconds_to_target_median"]
    summary["speedup_same_epochs"] = padded["train_seconds_median"] / bucketed["train_seconds_median"]
    return summary


def write_reports(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "gru.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    hw, s, inf = report["hardware"], report["training"]["summary"], report["inference"]
    b, p = s["bucketed"], s["padded"]
    lines = [
        f"# GRU autoencoder and next-event transformer on {hw['device']}",
        "",
        f"Hardware: {hw['device']}; {hw['cpu_model']}, {hw['cores']} cores, {hw['threads']} torch thread(s), torch {hw['torch']}; "
        f"load average {hw['load_average_before']} before, {hw['load_average_after']} after (shared machine).",
        f"Data: {report['data']}.",
        "",
        "## Training at equal loss (demo configuration)",
        "",
        report["training"]["method"],
        "",
        "Same weights and rows through both implementations: |loss difference| = "
        f"{report['training']['same_loss_check']:.2e}.",
        "",
        "| implementation | train seq/s | train tokens/s | epochs | final valid loss | s to valid loss "
        f"{s['target_valid_loss']:.4f} | train s ({report['training']['epochs']} epochs) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in (("length-bucketed (product)", b), ("padded to max_events (baseline)", p)):
        lines.append(
            f"| {name} | {row['sequences_per_second_median']:.1f} | {row['tokens_per_second_median']:.0f} "
            f"| {report['training']['epochs']} | {row['final_valid_loss_median']:.4f} "
            f"| {row['seconds_to_target_median']:.1f} | {row['train_seconds_median']:.1f} "
            f"| {row['peak_rss_mib_median']:.0f} |"
        )
    lines += [
        "",
        f"**Speed-up at equal validation loss: {s['speedup_at_equal_loss']:.2f}x** "
        f"(same number of epochs: {s['speedup_same_epochs']:.2f}x).",
        "",
        "## Inference (encode every demo user)",
        "",
        "| implementation | users/s | tokens/s | seconds |",
        "|---|---|---|---|",
    ]
    for method in ("bucketed", "padded"):
        row = inf[method]
        lines.append(
            f"| {method} | {row['users_per_second']:.0f} | {row['tokens_per_second']:.0f} | {row['seconds']:.1f} |"
        )
    lines += [
        "",
        f"Speed-up: {inf['padded']['seconds'] / inf['bucketed']['seconds']:.2f}x "
        f"({inf['users']} users, {inf['tokens']} events); peak RSS {inf['peak_rss_mib']:.0f} MiB.",
        "",
        "## Full fits on the demo sequences (shipped defaults)",
        "",
        "| embedder | dims | users embedded | epochs (best) | fit s | s / epoch | train tokens/s | embed s "
        "| last valid loss | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["demo_fits"]:
        lines.append(
            f"| {row['embedder']} | {row['dims']} | {row['users_embedded']} | {row['epochs']} ({row['best_epoch']}) "
            f"| {row['fit_seconds']:.0f} | {row['seconds_per_epoch']:.1f} | {row['train_tokens_per_second']:.0f} "
            f"| {row['embed_seconds']:.1f} | {row['last_epoch']['valid_loss']:.3f} | {row['peak_rss_mib']:.0f} |"
        )
    lines += ["", "Per-field validation token accuracy, last epoch (majority-token baseline in brackets):", ""]
    for row in report["demo_fits"]:
        last = row["last_epoch"]
        fields = [k.removeprefix("valid_accuracy_") for k in last if k.startswith("valid_accuracy_")]
        accuracies = [f"{f} {last[f'valid_accuracy_{f}']:.3f} ({last[f'majority_accuracy_{f}']:.3f})" for f in fields]
        lines.append(f"- {row['embedder']}: " + ", ".join(accuracies))
    write_keeping(RESULTS / "gru.md", "\n".join(lines) + "\n", GPU_SECTION)


def in_child(function, *args):
    """Run ``function(*args)`` in a fresh process: its peak RSS is its own, and nothing warms up the next run."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="demo users sampled for the equal-loss comparison")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy shared 2-core machine")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (recorded in the report)")
    parser.add_argument("--fits", nargs="*", default=SEQUENCE_BLOCKS, help="blocks whose embedders to fit on the demo")
    args = parser.parse_args()
    load_before = load_average()
    runs = []
    for repeat in range(args.repeats):
        for method in ("bucketed", "padded"):
            runs.append(in_child(training_run, method, args.users, args.epochs, args.threads, repeat, args.device))
            print(method, repeat, f"{runs[-1]['curve'][-1]}", flush=True)
    inference = in_child(inference_run, args.threads, args.device)
    print("inference", inference, flush=True)
    fits = []
    for name in args.fits:
        fits.append(in_child(demo_fit, name, args.threads, args.device))
        print("fit", name, fits[-1]["fit_seconds"], flush=True)
    stats = read_manifest(DEMO)["stats"]
    report = {
        "hardware": {**describe(args.threads, load_before), "device": make_runtime(args.device).describe()["device_name"]},
        "data": (
            f"{DEMO} ({stats['users']} users, {stats['events_kept']} events, length p50 {stats['length_p50']}, "
            f"p90 {stats['length_p90']}, max {stats['length_max']})"
        ),
        "training": {
            "method": (
                f"Demo configuration {CONFIG.fields}, embedding/hidden {CONFIG.embedding_dim}/{CONFIG.hidden_dim}, "
                f"{CONFIG.layers} layer, vocabularies cut to {CONFIG.vocabulary_limit}, batch {CONFIG.recipe.batch_size}, "
                f"Adam lr {CONFIG.recipe.learning_rate} (warm-up {CONFIG.recipe.warmup_steps} steps, gradient norm "
                f"clipped to {CONFIG.recipe.clip_norm}); {args.users} demo users sampled (seed {SEED}), 10% held out for "
                f"validation; {args.epochs} epochs; {args.repeats} runs per implementation, medians. Time = training "
                "steps only (validation excluded, identical for both)."
            ),
            "epochs": args.epochs,
            "same_loss_check": same_loss_check(args.users),
            "summary": summarise(runs),
            "runs": runs,
        },
        "inference": inference,
        "demo_fits": fits,
    }
    write_reports(report)
    print(json.dumps(report["training"]["summary"], indent=2))


if __name__ == "__main__":
    main()
