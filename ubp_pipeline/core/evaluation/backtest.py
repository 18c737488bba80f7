"""The backtest table: every candidate representation probed on every task, side by side.

Candidates are the ensemble profile, each of its blocks alone (the same columns, fills included), the challenge's
aggregated-features baseline and, on synthetic data, an oracle built from the planted truth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.markdown_tables import markdown_table
from ubp_pipeline.core.evaluation.baseline import baseline_features
from ubp_pipeline.core.evaluation.metrics import total_score
from ubp_pipeline.core.evaluation.probe import OFFICIAL_PROBE, QUICK_PROBE, ProbeSettings, ProbeTask, run_probe
from ubp_pipeline.core.evaluation.targets import load_targets, make_tasks
from ubp_pipeline.core.profiles.assembly import CLIENT_IDS_FILE, EMBEDDINGS_FILE, MANIFEST_FILE

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class Candidate:
    """One row of the table: a matrix whose rows follow the evaluated clients."""

    name: str
    kind: str  # "ensemble", "block", "baseline" or "oracle"
    matrix: np.ndarray


def profile_candidates(folder: str | Path) -> tuple[np.ndarray, list[Candidate], dict]:
    """The clients of a profile day, the ensemble and each block alone (column slices), and the manifest."""
    folder = Path(folder)
    clients = np.load(folder / CLIENT_IDS_FILE)
    embeddings = np.load(folder / EMBEDDINGS_FILE)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    candidates = [Candidate(ENSEMBLE, "ensemble", embeddings)]
    for block in manifest["blocks"]:
        columns = embeddings[:, block["offset"] : block["offset"] + block["dims"]]
        candidates.append(Candidate(block["name"], "block", columns))
    return clients, candidates, manifest


def evaluate_candidates(
    candidates: list[Candidate],
    tasks: list[ProbeTask],
    runtime: TorchRuntime,
    settings: ProbeSettings,
    on_result: Callable[[str, str, float], None] | None = None,
) -> pd.DataFrame:
    """Long table: one row per (candidate, task) with auroc, novelty, diversity, score, best epoch and the probe."""
    rows = []
    for candidate in candidates:
        for task in tasks:
            started = time.perf_counter()
            result = run_probe(candidate.matrix, task, runtime, settings)
            rows.append({"row": candidate.name, "kind": candidate.kind, **result.summary(), "seconds": time.perf_counter() - started})
            if on_result is not None:
                on_result(candidate.name, task.name, result.score)
    return pd.DataFrame(rows)


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Wide table: candidates x tasks (task scores) plus their total, in candidate order."""
    wide = scores.pivot(index="row", columns="task", values="score")
    wide = wide.loc[list(dict.fromkeys(scores["row"])), list(dict.fromkeys(scores["task"]))]
    wide["total"] = [total_score(values) for values in wide.to_numpy()]
    return wide


def score_markdown(scores: pd.DataFrame) -> str:
    probe = ", ".join(sorted(scores["probe"].unique()))
    table = markdown_table(score_table(scores).round(4), index=True)
    return table + f"\n\nprobe: {probe}; task score = AUROC (churn, conversion) or 0.8 AUROC + 0.1 novelty + 0.1 diversity"


def plot_scores(scores: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Grouped bars: one group per task, one bar per candidate; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = score_table(scores).drop(columns="total")
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(wide.columns)), 4.5))
    width = 0.8 / len(wide)
    for i, (name, values) in enumerate(wide.iterrows()):
        ax.bar(np.arange(len(wide.columns)) + i * width, values.to_numpy(), width, label=str(name))
    ax.set_xticks(np.arange(len(wide.columns)) + 0.4 - width / 2, wide.columns, rotation=15)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("task score")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


class LeakageError(ValueError):
    """A block of the profile was trained on data after the evaluated day."""


@dataclass(frozen=True)
class Backtest:
    folder: Path
    scores: pd.DataFrame
    chart: Path
    probe: str
    leaking_blocks: list[str]


def scaled_baseline(counts: np.ndarray) -> np.ndarray:
    """The same 320 counts after log1p and per-column standardisation: what a careful user would feed a probe."""
    logged = np.log1p(np.maximum(counts, 0))
    return ((logged - logged.mean(axis=0)) / (logged.std(axis=0) + 1e-6)).astype(np.float32)


def run_backtest(
    con: duckdb.DuckDBPyConnection,
    day: date,
    profile_dir: Path,
    targets_dir: Path,
    runtime: TorchRuntime,
    out_dir: Path,
    *,
    probe: str = "quick",
    score_blocks: bool = True,
    allow_leakage: bool = False,
    oracle: Callable[[np.ndarray], np.ndarray | None] = lambda clients: None,
    log: Callable[[str], None] = print,
) -> Backtest:
    """Score the day's profile (and its blocks, the baseline and the oracle when available); write table and chart."""
    clients, candidates, manifest = profile_candidates(profile_dir)
    leaking = [b["name"] for b in manifest["blocks"] if b.get("training_day", "") > day.isoformat()]
    if leaking and not allow_leakage:
        raise LeakageError(
            f"blocks {leaking} were trained on data after {day}: their scores would see the future; retrain with "
            f"training_day <= {day} or set allow_models_trained_after_day"
        )
    if not score_blocks:
        candidates = candidates[:1]
    counts = baseline_features(con, day, clients)
    candidates += [Candidate("baseline", "baseline", counts), Candidate("baseline_scaled", "baseline", scaled_baseline(counts))]
    planted = oracle(clients)
    if planted is not None:
        candidates.append(Candidate("oracle", "oracle", planted))
    tasks = make_tasks(load_targets(targets_dir), clients)
    settings = QUICK_PROBE if probe == "quick" else OFFICIAL_PROBE
    log(f"probing {len(candidates)} candidates x {len(tasks)} tasks with the {settings.label} probe")
    scores = evaluate_candidates(
        candidates, tasks, runtime, settings, on_result=lambda row, task, score: log(f"{row} {task}: {score:.4f}")
    )
    with atomic_dir(out_dir) as tmp:
        scores.to_parquet(tmp / "scores.parquet", index=False)
        (tmp / "scores.md").write_text(score_markdown(scores) + "\n")
        plot_scores(scores, tmp / "scores.png", f"Backtest as of {day} ({settings.label} probe)")
    return Backtest(Path(out_dir), scores, Path(out_dir) / "scores.png", settings.label, leaking)
