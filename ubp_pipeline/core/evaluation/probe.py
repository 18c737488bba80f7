"""The challenge's probe protocol: how good is an embedding at forecasting the next window's behaviour?

For one task: a fresh ProbeNet (seed 1278 at construction) is trained on the labels of window 1 and scored on the
labels of window 2, for the same users and the same embeddings. BCE with logits, AdamW lr 1e-3 (default weight
decay), batch 128 in the users' given order (the challenge's train loader is not shuffled), 3 epochs, metrics on
window 2 after every epoch. The task score is the best epoch's weighted score, i.e. the epoch is selected on the
scoring window itself, as the challenge did; every result says which probe produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory, progress_bar
from ubp_pipeline.core.evaluation.metrics import TaskKind, evaluate_predictions
from ubp_pipeline.models.probe import OFFICIAL_WIDTH, ProbeNet, ProbeNetConfig

SCORE_RULE = "best epoch: the highest weighted score on window 2 over all epochs (challenge rule)"
QUICK_WIDTH = 256


@dataclass(frozen=True, eq=False)
class ProbeTask:
    """One downstream task over a subset of users; labels are 0/1, shape (n,) or (n, K), rows aligned with ``users``."""

    name: str
    kind: TaskKind
    users: np.ndarray  # row indices into the embedding matrix (churn: only users active before the cut-off)
    train_labels: np.ndarray  # window 1: the probe is fitted on these
    score_labels: np.ndarray  # window 2: the metrics are computed on these
    popularity: np.ndarray | None = None  # (K,) purchase counts of the targets in window 1; propensity tasks only

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "propensity"):
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}")
        if self.users.ndim != 1 or not np.issubdtype(self.users.dtype, np.integer):
            raise ValueError(f"task {self.name!r}: users must be a 1-D integer index array")
        for window, labels in (("train_labels", self.train_labels), ("score_labels", self.score_labels)):
            if labels.shape[0] != len(self.users) or labels.ndim not in (1, 2):
                raise ValueError(f"task {self.name!r}: {window} {labels.shape} does not match {len(self.users)} users")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError(f"task {self.name!r}: {window} must hold only 0/1")
        if self.train_labels.shape != self.score_labels.shape:
            raise ValueError(f"task {self.name!r}: the two windows' labels differ in shape")
        if self.kind == "binary" and self.output_dim != 1:
            raise ValueError(f"task {self.name!r}: a binary task has one label per user")
        if self.kind == "propensity" and (self.popularity is None or self.popularity.shape != (self.output_dim,)):
            raise ValueError(f"task {self.name!r}: a propensity task needs popularity of shape ({self.output_dim},)")

    @property
    def output_dim(self) -> int:
        return 1 if self.train_labels.ndim == 1 else self.train_labels.shape[1]


@dataclass(frozen=True)
class ProbeSettings:
    """The training recipe. Defaults are the challenge's; only ``width`` may change for a quick (labelled) probe."""

    width: int = OFFICIAL_WIDTH
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 1278
    inference_batch_size: int = 8192  # does not change any number, only speed and memory

    @property
    def label(self) -> str:
        """'official-w2048', 'quick-w256', or 'custom-w…' when anything but the width departs from the challenge."""
        if self != ProbeSettings(width=self.width, inference_batch_size=self.inference_batch_size):
            return f"custom-w{self.width}"
        return f"official-w{self.width}" if self.width == OFFICIAL_WIDTH else f"quick-w{self.width}"


OFFICIAL_PROBE = ProbeSettings()
QUICK_PROBE = ProbeSettings(width=QUICK_WIDTH)


@dataclass(frozen=True)
class ProbeResult:
    """Per-epoch metrics on window 2 for one task, the selected epoch, and which probe produced them."""

    task: str
    kind: TaskKind
    probe: str
    settings: ProbeSettings
    n_users: int
    history: TrainingHistory  # one row per epoch (1-based): train_loss, auroc, novelty, diversity, score, ...
    best_epoch: int  # 1-based
    challenge_convention: bool
    runtime: dict[str, Any]  # TorchRuntime.describe(): device, threads, torch version
    probabilities: np.ndarray  # window-2 predictions of the best epoch, rows aligned with the task's users
    score_rule: str = SCORE_RULE

    @property
    def best(self) -> dict[str, float]:
        return self.history.epochs[self.best_epoch - 1]

    @property
    def score(self) -> float:
        return self.best["score"]

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "task": self.task,
            "auroc": best["auroc"],
            "novelty": best["novelty"],
            "diversity": best["diversity"],
            "score": best["score"],
            "best_epoch": self.best_epoch,
            "probe": self.probe,
            "n_users": self.n_users,
            "auroc_labels_excluded": int(best["auroc_labels_excluded"]),
        }


def best_epoch(scores: list[float]) -> int:
    """1-based epoch of the highest score, earliest on ties; a NaN score never wins (all NaN: epoch 1)."""
    values = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values))) + 1


def _rows(embeddings: np.ndarray, users: np.ndarray, device: torch.device) -> torch.Tensor:
    """Gather users' rows (float16 on disk or in memory, memmaps included) as float32 on the device."""
    batch = torch.from_numpy(np.asarray(embeddings[users], dtype=np.float32))
    if not torch.isfinite(batch).all():
        raise ValueError("embeddings hold NaN or inf for some of the probed users")
    return batch.to(device)


def _targets(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)).to(device)


def _train_epoch(
    model: ProbeNet,
    optimizer: torch.optim.Optimizer,
    embeddings: np.ndarray,
    task: ProbeTask,
    settings: ProbeSettings,
    runtime: TorchRuntime,
    description: str,
) -> float:
    """One pass over the users in their given order; returns the mean training loss per user."""
    model.train()
    total, size = 0.0, settings.batch_size
    for start in progress_bar(range(0, len(task.users), size), description):
        x = _rows(embeddings, task.users[start : start + size], runtime.device)
        y = _targets(task.train_labels[start : start + size], runtime.device)
        with runtime.autocast():
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
    return total / len(task.users)


@torch.inference_mode()
def _predict(
    model: ProbeNet, embeddings: np.ndarray, users: np.ndarray, settings: ProbeSettings, runtime: TorchRuntime
) -> np.ndarray:
    """Sigmoid probabilities for all users, in big batches; float64 so that confident users do not tie at 1.0."""
    model.eval()
    size = settings.inference_batch_size
    chunks = []
    for start in range(0, len(users), size):
        with runtime.autocast():
            logits = model(_rows(embeddings, users[start : start + size], runtime.device))
        chunks.append(torch.sigmoid(logits.double()).cpu())
    return torch.cat(chunks).numpy()


def run_probe(
    embeddings: np.ndarray,
    task: ProbeTask,
    runtime: TorchRuntime,
    settings: ProbeSettings = OFFICIAL_PROBE,
    *,
    challenge_convention: bool = False,
    on_epoch: EpochCallback | None = None,
) -> ProbeResult:
    """Train a fresh probe on window 1 for ``task`` and score every epoch on window 2 (see the module docstring)."""
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (n_users, d), got shape {embeddings.shape}")
    if len(task.users) == 0 or task.users.min() < 0 or task.users.max() >= embeddings.shape[0]:
        raise ValueError(f"task {task.name!r}: user indices must be non-empty and below {embeddings.shape[0]}")
    torch.set_num_threads(runtime.threads)
    torch.manual_seed(settings.seed)
    config = ProbeNetConfig(input_dim=embeddings.shape[1], output_dim=task.output_dim, width=settings.width)
    model = ProbeNet(config).to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    history, predictions = TrainingHistory(), []
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(
            model, optimizer, embeddings, task, settings, runtime, f"probe {task.name} epoch {epoch}"
        )
        predictions.append(_predict(model, embeddings, task.users, settings, runtime))
        metrics = evaluate_predictions(
            task.kind, task.score_labels, predictions[-1], task.popularity, challenge_convention=challenge_convention
        )
        row = {"train_loss": train_loss, **metrics.as_dict(), "seconds": time.perf_counter() - started}
        history.record(epoch, row, on_epoch)
    selected = best_epoch(history.series("score"))
    return ProbeResult(
        task=task.name,
        kind=task.kind,
        probe=settings.label,
        settings=settings,
        n_users=len(task.users),
        history=history,
        best_epoch=selected,
        challenge_convention=challenge_convention,
        runtime=runtime.describe(),
        probabilities=predictions[selected - 1],
    )


def results_table(results: list[ProbeResult]) -> pd.DataFrame:
    """One row per task: auroc, novelty, diversity, score (all at the best epoch), best_epoch, probe, ..."""
    return pd.DataFrame([result.summary() for result in results])


def run_probes(
    embeddings: np.ndarray,
    tasks: list[ProbeTask],
    runtime: TorchRuntime,
    settings: ProbeSettings = OFFICIAL_PROBE,
    *,
    challenge_convention: bool = False,
) -> pd.DataFrame:
    """Probe one embedding matrix on every task; the total score is ``table["score"].sum()`` (or ``total_score``)."""
    return results_table(
        [run_probe(embeddings, task, runtime, settings, challenge_convention=challenge_convention) for task in tasks]
    )
