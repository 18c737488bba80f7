"""The RecSys Challenge 2025 task metrics over plain numpy arrays, so any model's predictions can be scored alike.

Formulas: research/recsys2025_format.md §2.4. Novelty and diversity follow the challenge's code exactly; AUROC comes
from scikit-learn, and a label with a single class in the scored window is left out of the macro mean unless the
caller asks for the challenge's convention (torchmetrics 1.3.2 scores such a label 0 and keeps it in the mean).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import roc_auc_score

TaskKind = Literal["binary", "propensity"]

NOVELTY_TOP_K = 10
NOVELTY_EXPONENT = 100
ENTROPY_EPSILON = 1e-9
PROPENSITY_WEIGHTS = {"auroc": 0.8, "novelty": 0.1, "diversity": 0.1}


@dataclass(frozen=True)
class AurocResult:
    """Macro AUROC plus how many labels had only one class in the window (and so carry no ranking information)."""

    value: float
    n_labels: int
    n_single_class: int
    challenge_convention: bool

    @property
    def n_excluded(self) -> int:
        """Labels left out of the mean: the single-class ones, unless the challenge convention scored them 0."""
        return 0 if self.challenge_convention else self.n_single_class


def _as_columns(array: np.ndarray) -> np.ndarray:
    """(n,) and (n, K) alike as (n, K): a binary task is a multi-label task with one label."""
    array = np.asarray(array)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def auroc(labels: np.ndarray, scores: np.ndarray, *, challenge_convention: bool = False) -> AurocResult:
    """Binary AUROC for (n,) inputs, macro AUROC over labels for (n, K); scores may be probabilities or logits.

    A label with no positive or no negative is excluded from the mean by default (NaN when every label is such);
    with ``challenge_convention`` it counts as 0, which is what the challenge's leaderboard did.
    """
    y = _as_columns(labels).astype(bool)
    s = _as_columns(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_positive = y.sum(axis=0)
    ranked = (n_positive > 0) & (n_positive < y.shape[0])
    per_label = np.zeros(y.shape[1])
    if ranked.any():
        per_label[ranked] = roc_auc_score(y[:, ranked], s[:, ranked], average=None)
    counted = per_label if challenge_convention else per_label[ranked]
    value = float(counted.mean()) if counted.size else float("nan")
    return AurocResult(
        value=value,
        n_labels=y.shape[1],
        n_single_class=int((~ranked).sum()),
        challenge_convention=challenge_convention,
    )


def user_entropy(probabilities: np.ndarray) -> np.ndarray:
    """(n,) each user's probabilities renormalised to sum 1, their entropy divided by log2(K): 1 uniform, 0 one-hot."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"diversity needs (n_users, K >= 2) probabilities, got shape {p.shape}")
    q = p / p.sum(axis=1, keepdims=True)
    return -(q * np.log2(q + ENTROPY_EPSILON)).sum(axis=1) / np.log2(p.shape[1])


def diversity(probabilities: np.ndarray) -> float:
    """Mean normalised entropy of each user's probabilities renormalised to sum 1: 1 for uniform, 0 for one-hot."""
    return float(user_entropy(probabilities).mean())


def user_popularity_mass(probabilities: np.ndarray, popularity: np.ndarray, k: int = NOVELTY_TOP_K) -> np.ndarray:
    """(n,) sum over each user's k most probable targets of probability x popularity rescaled by its k largest values."""
    p = np.asarray(probabilities, dtype=np.float64)
    pop = np.asarray(popularity, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != pop.shape[0]:
        raise ValueError(f"probabilities {p.shape} do not match popularity {pop.shape}")
    k = min(k, pop.shape[0])
    rescaled = pop / np.sort(pop)[-k:].sum()
    top = np.argpartition(-p, k - 1, axis=1)[:, :k]
    return (np.take_along_axis(p, top, axis=1) * rescaled[top]).sum(axis=1)


def novelty(probabilities: np.ndarray, popularity: np.ndarray, k: int = NOVELTY_TOP_K) -> float:
    """(1 - mean popularity mass of each user's top-k)^100, popularity rescaled by its k largest values' sum.

    Each user's mass lies in [0, 1]; the 100th power makes the metric fall steeply as predictions lean on the most
    bought targets.
    """
    return float((1.0 - user_popularity_mass(probabilities, popularity, k).mean()) ** NOVELTY_EXPONENT)


def task_score(
    kind: TaskKind, auroc_value: float, novelty_value: float | None = None, diversity_value: float | None = None
) -> float:
    """AUROC for churn/conversion; 0.8 AUROC + 0.1 novelty + 0.1 diversity for propensity tasks."""
    if kind == "binary":
        return auroc_value
    if kind != "propensity":
        raise ValueError(f"unknown task kind {kind!r}")
    if novelty_value is None or diversity_value is None:
        raise ValueError("a propensity score needs novelty and diversity")
    w = PROPENSITY_WEIGHTS
    return w["auroc"] * auroc_value + w["novelty"] * novelty_value + w["diversity"] * diversity_value


def total_score(task_scores: Iterable[float]) -> float:
    """The number teams quote: the plain sum of task scores (the leaderboard itself ranked by Borda count)."""
    return float(sum(task_scores))


@dataclass(frozen=True)
class TaskMetrics:
    """Everything one task reports for one set of predictions; novelty and diversity are NaN for binary tasks."""

    kind: TaskKind
    auroc: AurocResult
    novelty: float
    diversity: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return {
            "auroc": self.auroc.value,
            "novelty": self.novelty,
            "diversity": self.diversity,
            "score": self.score,
            "auroc_labels_excluded": float(self.auroc.n_excluded),
        }


def evaluate_predictions(
    kind: TaskKind,
    labels: np.ndarray,
    probabilities: np.ndarray,
    popularity: np.ndarray | None = None,
    *,
    challenge_convention: bool = False,
) -> TaskMetrics:
    """Score predicted probabilities against one window's labels; propensity tasks also need target popularity."""
    result = auroc(labels, probabilities, challenge_convention=challenge_convention)
    if kind == "binary":
        return TaskMetrics(kind, result, float("nan"), float("nan"), task_score(kind, result.value))
    if popularity is None:
        raise ValueError("a propensity task needs the popularity of its targets for novelty")
    nov = novelty(probabilities, popularity)
    div = diversity(probabilities)
    return TaskMetrics(kind, result, nov, div, task_score(kind, result.value, nov, div))
