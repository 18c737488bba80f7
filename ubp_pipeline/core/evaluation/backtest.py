"""The backtest table: every candidate representation probed on every task, side by side, each score with its noise.

Candidates are the ensemble profile, each block alone, the challenge's aggregated-features baseline and, on synthetic
data, an oracle built from the planted truth. Every score carries a 95 % interval (a bootstrap over the scoring
window's users, optionally pooled over several probe seeds), and every row is compared with the ensemble pairwise:
a difference is beyond noise when the interval of the paired difference excludes 0.

The flow of the block selection: the backtest of day D also runs a forward selection over the blocks (selection.py)
and writes it as ``selection.json`` next to the scores. Its evidence reaches D + 28, so it never changes D's own
numbers: universal_profiles applies the newest selection whose evidence ends on or before the profile's day, and the
backtest refuses a profile built from a selection that saw its own future.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.markdown_tables import markdown_table
from ubp_pipeline.core.evaluation.baseline import baseline_features
from ubp_pipeline.core.evaluation.noise import REPLICATES, beyond_noise, bootstrap_weights, interval, score_draws
from ubp_pipeline.core.evaluation.probe import OFFICIAL_PROBE, QUICK_PROBE, ProbeSettings, ProbeTask, run_probe
from ubp_pipeline.core.evaluation.selection import forward_select, trials_markdown
from ubp_pipeline.core.evaluation.targets import HORIZON_DAYS, load_targets, make_tasks
from ubp_pipeline.core.profiles.assembly import (
    CLIENT_IDS_FILE,
    EMBEDDINGS_FILE,
    MANIFEST_FILE,
    SELECTION_FILE,
    assemble_profiles,
)
from ubp_pipeline.core.profiles.blocks import load_block_vectors
from ubp_pipeline.core.profiles.registry import default_blocks

ENSEMBLE = "ensemble"
TOTAL = "total"

Draws = dict[str, np.ndarray]  # task (or "total") -> bootstrap draws of one row's score


@dataclass(frozen=True)
class Candidate:
    """One row of the table: a matrix whose rows follow the evaluated clients."""

    name: str
    kind: str  # "ensemble", "block", "baseline", "oracle" or "selection" (a set of blocks tried by the selection)
    matrix: np.ndarray


@dataclass(frozen=True)
class NoiseSettings:
    """How intervals are drawn: bootstrap replicates over users per probe seed, and how many probe seeds."""

    replicates: int = REPLICATES
    probe_seeds: int = 1  # > 1 retrains every probe with seeds 1278, 1279, ...: slower, and covers the probe's noise


def block_candidates(matrix: np.ndarray, blocks: list[dict]) -> list[Candidate]:
    """Each block alone: its column slice of a matrix laid out as ``blocks`` (name, offset, dims) say."""
    return [Candidate(b["name"], "block", matrix[:, b["offset"] : b["offset"] + b["dims"]]) for b in blocks]


def load_profile(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The clients, embeddings and manifest of a profile day."""
    folder = Path(folder)
    return np.load(folder / CLIENT_IDS_FILE), np.load(folder / EMBEDDINGS_FILE), json.loads((folder / MANIFEST_FILE).read_text())


class Scorer:
    """Probes a matrix on every task (once per probe seed) and bootstraps each score with draws shared by all rows.

    The same user weights serve every candidate, so the draws of two rows can be subtracted: a paired bootstrap.
    """

    def __init__(
        self,
        tasks: list[ProbeTask],
        runtime: TorchRuntime,
        settings: ProbeSettings,
        noise: NoiseSettings = NoiseSettings(),
        log: Callable[[str], None] = print,
    ) -> None:
        self.tasks, self.runtime, self.settings, self.log = tasks, runtime, settings, log
        self.seeds = [settings.seed + i for i in range(noise.probe_seeds)]
        self.weights = [bootstrap_weights(len(task.users), noise.replicates, seed=i) for i, task in enumerate(tasks)]

    def score(self, candidate: Candidate) -> tuple[list[dict], Draws]:
        """One row per task (metrics averaged over seeds; best_epoch of the first seed) and the draws per task."""
        rows, draws = [], {}
        for task, weights in zip(self.tasks, self.weights, strict=True):
            started = time.perf_counter()
            results = [run_probe(candidate.matrix, task, self.runtime, replace(self.settings, seed=s)) for s in self.seeds]
            draws[task.name] = np.concatenate(
                [score_draws(task.kind, task.score_labels, r.probabilities, task.popularity, weights) for r in results]
            )
            means = pd.DataFrame([r.summary() for r in results])[["auroc", "novelty", "diversity", "score"]].mean()
            rows.append(
                {
                    "row": candidate.name,
                    "kind": candidate.kind,
                    **results[0].summary(),
                    **means.to_dict(),
                    "probe": self.settings.label,
                    "probe_seeds": len(self.seeds),
                    "replicates": weights.shape[1],
                    "seconds": time.perf_counter() - started,
                }
            )
            low, high = interval(draws[task.name])
            self.log(f"{candidate.name} {task.name}: {rows[-1]['score']:.4f} [{low:.4f}, {high:.4f}]")
        return rows, draws

    def total(self, candidate: Candidate) -> tuple[float, np.ndarray]:
        """The sum of task scores and its draws (what the block selection compares)."""
        rows, draws = self.score(candidate)
        return float(sum(row["score"] for row in rows)), sum(draws.values())


def with_intervals(rows: list[dict], draws: dict[str, Draws], reference: str = ENSEMBLE) -> pd.DataFrame:
    """The long table plus a ``total`` row per candidate, each with score_lower/upper, the interval of its paired
    difference to ``reference`` (diff_lower/upper) and ``beyond_noise`` (that interval excludes 0)."""
    scores = pd.DataFrame(rows)
    totals = scores.groupby("row", sort=False).agg(
        kind=("kind", "first"), score=("score", "sum"), probe=("probe", "first"), probe_seeds=("probe_seeds", "first"),
        replicates=("replicates", "first"), n_users=("n_users", "max"), seconds=("seconds", "sum"),
    )
    scores = pd.concat([scores, totals.reset_index().assign(task=TOTAL)], ignore_index=True)
    with_total = {row: {**tasks, TOTAL: sum(tasks.values())} for row, tasks in draws.items()}
    bounds = []
    for row, task in zip(scores["row"], scores["task"], strict=True):
        difference = interval(with_total[row][task] - with_total[reference][task])
        bounds.append((*interval(with_total[row][task]), *difference, row != reference and beyond_noise(*difference)))
    scores[["score_lower", "score_upper", "diff_lower", "diff_upper", "beyond_noise"]] = pd.DataFrame(bounds)
    return scores


def evaluate_candidates(candidates: list[Candidate], scorer: Scorer, reference: str = ENSEMBLE) -> tuple[pd.DataFrame, dict[str, Draws]]:
    """Long table: one row per (candidate, task) and per candidate total, with metrics, intervals and flags."""
    rows, draws = [], {}
    for candidate in candidates:
        candidate_rows, draws[candidate.name] = scorer.score(candidate)
        rows += candidate_rows
    return with_intervals(rows, draws, reference), draws


def score_table(scores: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """Wide table: candidates x tasks (and total) of one column of the long table, in candidate order."""
    wide = scores.pivot(index="row", columns="task", values=value)
    return wide.loc[list(dict.fromkeys(scores["row"])), list(dict.fromkeys(scores["task"]))]


def _cell(row) -> str:
    mark = (" ▲" if row.diff_lower > 0 else " ▼") if row.beyond_noise else ""
    digits = 3 if row.task == TOTAL else 4
    return f"{row.score:.{digits}f} [{row.score_lower:.{digits}f}, {row.score_upper:.{digits}f}]{mark}"


def score_markdown(scores: pd.DataFrame) -> str:
    cells = scores.assign(cell=[_cell(row) for row in scores.itertuples()])
    first = scores.iloc[0]
    own = scores[(scores["row"] == first["row"]) & (scores["task"] != TOTAL)]
    users = ", ".join(f"{task} {n:,}" for task, n in zip(own["task"], own["n_users"], strict=True))
    return (
        markdown_table(score_table(cells, "cell"), index=True)
        + f"\n\nprobe: {first['probe']} x {first['probe_seeds']} seed(s); task score = AUROC (churn, conversion) or "
        "0.8 AUROC + 0.1 novelty + 0.1 diversity. [low, high]: 95 % interval of a bootstrap over the scoring window's "
        f"users ({first['replicates']} draws per seed; users: {users}). ▲ / ▼: above / below the {ENSEMBLE} beyond "
        "noise (the paired bootstrap interval of the difference excludes 0)."
    )


def plot_scores(scores: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Grouped bars with their intervals: one group per task, one bar per candidate; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = scores[scores["task"] != TOTAL]
    wide, lower, upper = (score_table(tasks, value).to_numpy() for value in ("score", "score_lower", "score_upper"))
    names, columns = list(dict.fromkeys(tasks["row"])), list(dict.fromkeys(tasks["task"]))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(columns)), 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        errors = np.stack([wide[i] - lower[i], upper[i] - wide[i]])
        ax.bar(np.arange(len(columns)) + i * width, wide[i], width, yerr=errors, capsize=1.5, label=name)
    ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns, rotation=15)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("task score (95 % interval)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


class LeakageError(ValueError):
    """Something in the profile saw data after the evaluated day: a block's training, or the choice of its blocks."""


@dataclass(frozen=True)
class Backtest:
    folder: Path
    scores: pd.DataFrame
    chart: Path
    probe: str
    leaking_blocks: list[str]
    selection: dict | None  # what selection.json holds; None when no selection was run


def scaled_baseline(counts: np.ndarray) -> np.ndarray:
    """The same 320 counts after log1p and per-column standardisation: what a careful user would feed a probe."""
    logged = np.log1p(np.maximum(counts, 0))
    return ((logged - logged.mean(axis=0)) / (logged.std(axis=0) + 1e-6)).astype(np.float32)


def check_leakage(day: date, manifest: dict, blocks: list[dict], allow_leakage: bool) -> list[str]:
    """Blocks (of the profile or the pool) trained after ``day``; refused unless allowed, as is a profile whose blocks
    were chosen by a backtest that saw purchases after ``day``."""
    leaking = sorted({b["name"] for b in [*manifest["blocks"], *blocks] if b.get("training_day", "") > day.isoformat()})
    if leaking and not allow_leakage:
        raise LeakageError(
            f"blocks {leaking} were trained on data after {day}: their scores would see the future; retrain with "
            f"training_day <= {day} or set allow_models_trained_after_day"
        )
    evidence = manifest.get("block_selection", {}).get("evidence_until", "")
    if evidence > day.isoformat() and not allow_leakage:
        raise LeakageError(
            f"the profile's blocks were chosen by a backtest that saw purchases up to {evidence}, after {day}: rebuild "
            f"the profile of {day} with pinned blocks or without that selection"
        )
    return leaking


def select_blocks(scorer: Scorer, blocks: list[Candidate], scores: pd.DataFrame, draws: dict[str, Draws], day: date) -> dict:
    """Forward selection over the blocks, reusing the single blocks' scores; the record selection.json holds."""
    columns = {block.name: block.matrix for block in blocks}
    totals = scores[scores["task"] == TOTAL].set_index("row")["score"]
    known = {(b.name,): (float(totals[b.name]), sum(draws[b.name].values())) for b in blocks}

    def total_of(names: tuple[str, ...]) -> tuple[float, np.ndarray]:
        if names not in known:
            known[names] = scorer.total(Candidate(" + ".join(names), "selection", np.hstack([columns[n] for n in names])))
        return known[names]

    chosen, trials = forward_select(list(columns), total_of, [name for name in default_blocks() if name in columns])
    return {
        "blocks": chosen,
        "decided_on": day.isoformat(),
        "evidence_until": (day + timedelta(days=HORIZON_DAYS)).isoformat(),
        "probe": scorer.settings.label,
        "rule": "forward selection on the total score; a block is added only when the paired bootstrap interval of "
        "its gain lies above 0; the selection replaces the default blocks only when it beats them beyond noise",
        "trials": [asdict(trial) for trial in trials],
    }


CPU_SAMPLE_USERS = 1_500  # the official probe costs ~15 ms per user and task on 2 CPU cores (bench/results/probe.md)


def probe_plan(
    probe: str, device_type: str, n_users: int, sample_users: int | None, seed: int = 0
) -> tuple[ProbeSettings, np.ndarray | None]:
    """Which probe, on which users (row indices in profile order, or None for all).

    ``auto`` is the official probe: the quick one does not rank rows as the official one does (bench/results/probe.md),
    so it is never chosen for the user. On a GPU it sees every user; on a CPU, ``sample_users`` of them
    (default CPU_SAMPLE_USERS), so that the backtest ends in minutes; the intervals then say whether that is enough.
    ``sample_users`` = 0 means every user on any device.
    """
    if probe not in ("auto", "official", "quick"):
        raise ValueError(f"probe {probe!r}: choose auto, official or quick")
    settings = QUICK_PROBE if probe == "quick" else OFFICIAL_PROBE
    limit = sample_users if sample_users is not None else (0 if device_type == "cuda" or probe == "quick" else CPU_SAMPLE_USERS)
    if not limit or limit >= n_users:
        return settings, None
    rows = np.sort(np.random.default_rng(seed).choice(n_users, limit, replace=False))  # profile order kept
    return settings, rows


def run_backtest(
    con: duckdb.DuckDBPyConnection,
    day: date,
    profile_dir: Path,
    targets_dir: Path,
    runtime: TorchRuntime,
    out_dir: Path,
    *,
    block_dirs: list[Path] = (),
    probe: str = "auto",
    sample_users: int | None = None,
    score_blocks: bool = True,
    select: bool = False,
    noise: NoiseSettings = NoiseSettings(),
    allow_leakage: bool = False,
    oracle: Callable[[np.ndarray], np.ndarray | None] = lambda clients: None,
    log: Callable[[str], None] = print,
) -> Backtest:
    """Score the day's profile, each block alone, the baselines and the oracle (when available), with intervals;
    then choose blocks by forward selection (``select``, needs ``score_blocks``); write table, chart and selection.

    Blocks come from ``block_dirs`` (each block's vectors of the day, so the selection may pick a block the profile
    left out), else from the profile's own columns. ``probe`` and ``sample_users``: see ``probe_plan``.
    """
    clients, embeddings, manifest = load_profile(profile_dir)
    matrix, layout = embeddings, manifest["blocks"]
    if block_dirs:
        pool = assemble_profiles([load_block_vectors(folder) for folder in block_dirs], clients)
        matrix, layout = pool.embeddings, pool.manifest["blocks"]
    settings, sampled = probe_plan(probe, runtime.device.type, len(clients), sample_users, runtime.seed)
    if sampled is not None:
        log(f"probing {len(sampled):,} of {len(clients):,} users, sampled (the {settings.label} probe on {runtime.device.type})")
        clients, embeddings, matrix = clients[sampled], embeddings[sampled], matrix[sampled]
    leaking = check_leakage(day, manifest, layout, allow_leakage)
    blocks = block_candidates(matrix, layout) if score_blocks else []
    counts = baseline_features(con, day, clients)
    candidates = [
        Candidate(ENSEMBLE, "ensemble", embeddings),
        *blocks,
        Candidate("baseline", "baseline", counts),
        Candidate("baseline_scaled", "baseline", scaled_baseline(counts)),
    ]
    planted = oracle(clients)
    if planted is not None:
        candidates.append(Candidate("oracle", "oracle", planted))
    tasks = make_tasks(load_targets(targets_dir), clients)
    scorer = Scorer(tasks, runtime, settings, noise, log)
    log(f"probing {len(candidates)} candidates x {len(tasks)} tasks with the {settings.label} probe x {noise.probe_seeds} seed(s)")
    scores, draws = evaluate_candidates(candidates, scorer)
    selection = select_blocks(scorer, blocks, scores, draws, day) if select and len(blocks) > 1 and not leaking else None
    with atomic_dir(out_dir) as tmp:
        scores.to_parquet(tmp / "scores.parquet", index=False)
        report = score_markdown(scores)
        if selection is not None:
            (tmp / SELECTION_FILE).write_text(json.dumps(selection, indent=2) + "\n")
            report += "\n\n" + selection_markdown(selection)
        (tmp / "scores.md").write_text(report + "\n")
        plot_scores(scores, tmp / "scores.png", f"Backtest as of {day} ({settings.label} probe)")
    return Backtest(Path(out_dir), scores, Path(out_dir) / "scores.png", settings.label, leaking, selection)


def selection_markdown(selection: dict) -> str:
    return (
        f"block selection (decided on {selection['decided_on']}, for profiles of {selection['evidence_until']} or later): "
        f"{', '.join(selection['blocks'])}\n\n{trials_markdown(selection['trials'])}"
    )
