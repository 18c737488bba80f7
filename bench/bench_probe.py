"""How long does one probe cost on this machine? Decides whether the demo can afford the official probe.

Runs the real protocol (``run_probe``, 3 epochs, batch 128) on a small user set with d = 2048 inputs and 100
propensity targets, for the official (W=2048) and the quick (W=256) probe, and extrapolates linearly to 10k users:
per-epoch time (train + inference + metrics) scales with the number of users; net construction is paid once per task.
Each figure is the median over repeats. Writes bench/results/probe.json and bench/results/probe.md.

    PYTHONPATH=. python bench/bench_probe.py [--repeats 3] [--threads 1 2] [--device cpu]   (from the repository root)

Defaults time one thread and one per core: on a shared machine one thread is often faster (see the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hardware import cpu_model
from reports import write_keeping

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.evaluation.probe import OFFICIAL_PROBE, QUICK_PROBE, ProbeSettings, ProbeTask, run_probe
from ubp_pipeline.models.probe import ProbeNet, ProbeNetConfig

INPUT_DIM = 2048  # the challenge's maximum embedding width: the worst case for the input projection
N_TARGETS = 100
REFERENCE_USERS = 10_000
RESULTS = Path(__file__).parent / "results"
TIMED_USERS = {OFFICIAL_PROBE.label: 384, QUICK_PROBE.label: 2560}  # whole batches of 128; a few s per official run
FINDINGS = "## Backtest against the official protocol"  # a section of probe.md measured elsewhere, kept by reruns




def synthetic_task(n_users: int) -> tuple[np.ndarray, ProbeTask]:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(n_users, INPUT_DIM)).astype(np.float16)
    window1, window2 = (rng.random((n_users, N_TARGETS)) < 0.05 for _ in range(2))
    popularity = window1.sum(axis=0).astype(float) + 1
    return embeddings, ProbeTask("propensity_bench", "propensity", np.arange(n_users), window1, window2, popularity)


def parameter_count(width: int) -> int:
    with torch.device("meta"):
        net = ProbeNet(ProbeNetConfig(input_dim=INPUT_DIM, output_dim=N_TARGETS, width=width))
    return sum(p.numel() for p in net.parameters())


def time_probe(settings: ProbeSettings, threads: int, repeats: int, device: str) -> dict:
    n_users = TIMED_USERS[settings.label]
    embeddings, task = synthetic_task(n_users)
    runtime = make_runtime(device, threads=threads)
    epoch_seconds, setup_seconds = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run_probe(embeddings, task, runtime, settings)
        epochs = result.history.series("seconds")
        setup_seconds.append(time.perf_counter() - started - sum(epochs))
        epoch_seconds.extend(epochs)
    per_epoch_10k = statistics.median(epoch_seconds) * REFERENCE_USERS / n_users
    setup = statistics.median(setup_seconds)
    per_task_10k = setup + settings.epochs * per_epoch_10k
    return {
        "probe": settings.label,
        "device": str(runtime.describe()["device_name"]),
        "width": settings.width,
        "parameters": parameter_count(settings.width),
        "threads": threads,
        "timed_users": n_users,
        "repeats": repeats,
        "train_steps_per_epoch_timed": -(-n_users // settings.batch_size),
        "seconds_per_epoch_per_10k_users": round(per_epoch_10k, 3),
        "setup_seconds_per_task": round(setup, 3),
        "seconds_per_task_per_10k_users_3_epochs": round(per_task_10k, 2),
        "hours_per_task_per_1m_users_3_epochs": round((setup + settings.epochs * per_epoch_10k * 100) / 3600, 2),
    }


def write_reports(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "probe.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    hw = report["hardware"]
    lines = [
        "# Probe cost on CPU",
        "",
        f"Hardware: {hw['cpu_model']}, {hw['cores']} cores, torch {hw['torch']}; "
        f"load average {hw['load_average_before']} before, {hw['load_average_after']} after (shared machine).",
        "",
        report["method"],
        "",
        "| probe | device | width | parameters | threads | s / epoch / 10k users | setup s "
        "| s / task / 10k users (3 epochs) | h / task / 1M users |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["runs"]:
        lines.append(
            f"| {row['probe']} | {row['device']} | {row['width']} | {row['parameters'] / 1e6:.2f} M | {row['threads']} "
            f"| {row['seconds_per_epoch_per_10k_users']} | {row['setup_seconds_per_task']} "
            f"| {row['seconds_per_task_per_10k_users_3_epochs']} | {row['hours_per_task_per_1m_users_3_epochs']} |"
        )
    write_keeping(RESULTS / "probe.md", "\n".join(lines) + "\n", FINDINGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, len(os.sched_getaffinity(0))}))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (recorded with every run)")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = [time_probe(s, t, args.repeats, args.device) for t in args.threads for s in (OFFICIAL_PROBE, QUICK_PROBE)]
    report = {
        "hardware": {
            "cpu_model": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "method": (
            f"run_probe (3 epochs, batch 128, AdamW) on synthetic float16 embeddings, d={INPUT_DIM}, "
            f"{N_TARGETS} propensity targets, {', '.join(f'{k}: {v}' for k, v in TIMED_USERS.items())} users; "
            "per-epoch time (train + inference + metrics) is the median over all timed epochs, scaled linearly "
            f"to {REFERENCE_USERS} users; setup (net construction, median) is added once per task. "
            "Extrapolated, not measured at 10k users; metrics on more users cost slightly more than linear."
        ),
        "runs": runs,
    }
    write_reports(report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
