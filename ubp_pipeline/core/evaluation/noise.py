"""How far a score would move with another draw of users: a bootstrap over the users of the scoring window.

The probe's predictions stay fixed; users are resampled with replacement and the task metric is recomputed, which
costs a few array passes instead of a probe training. Every candidate of a backtest is resampled with the same draws
(one set of weights per task), so the difference between two rows is itself bootstrapped pairwise: a difference is
beyond noise when its interval excludes 0. Draws from several probe seeds can be pooled into the same vector.
"""

from __future__ import annotations

import numpy as np

from ubp_pipeline.core.evaluation.metrics import (
    NOVELTY_EXPONENT,
    TaskKind,
    task_score,
    user_entropy,
    user_popularity_mass,
)

REPLICATES = 200
CONFIDENCE = 0.95


def bootstrap_weights(n_users: int, replicates: int = REPLICATES, seed: int = 0) -> np.ndarray:
    """(n_users, replicates): how often each user is drawn, one column per draw of n_users users with replacement.

    float32 holds these counts and their sums exactly up to 16.7 million users, at half the memory traffic.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=replicates)
    return np.ascontiguousarray(counts.T, dtype=np.float32)


def _tie_bounds(ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted values: the first position of each one's group of equal values, and one past its last."""
    new_group = np.r_[True, ranked[1:] != ranked[:-1]]
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    return starts[group], np.r_[starts[1:], len(ranked)][group]


def _weight_before(sorted_weights: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(len(positions), B) float64: the summed weight of the sorted rows before each position (0 .. n), per draw."""
    cuts = np.unique(np.r_[0, positions[positions < len(sorted_weights)]])
    segments = np.add.reduceat(sorted_weights, cuts, axis=0)
    before = np.concatenate([np.zeros((1, segments.shape[1])), np.cumsum(segments, axis=0, dtype=np.float64)])
    return before[np.searchsorted(cuts, positions)]


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AUROC of one label under each column of user weights (n, B); ties count one half; NaN if a class is absent.

    Users are sorted once by score; for every positive, the weight of all users ranked below it (and tied with it)
    comes from segment sums between the positives' positions, and the positives' own weight is taken away.
    """
    positive = np.asarray(labels, dtype=bool)
    if positive.all() or not positive.any():
        return np.full(weights.shape[1], np.nan)
    order = np.argsort(scores, kind="stable")
    below, through = _tie_bounds(scores[order])
    at = np.flatnonzero(positive[order])  # positions of the positives in score order
    everyone = _weight_before(weights[order], np.r_[below[at], through[at], len(order)])
    w_pos = weights[order[at]].astype(np.float64)
    pos_below, pos_through = _tie_bounds(scores[order[at]])
    positives = _weight_before(w_pos, np.r_[pos_below, pos_through, len(at)])
    k = len(at)
    neg_below = everyone[:k] - positives[:k]
    neg_tied = everyone[k : 2 * k] - everyone[:k] - (positives[k : 2 * k] - positives[:k])
    total_neg = everyone[-1] - positives[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w_pos * (neg_below + 0.5 * neg_tied)).sum(axis=0) / (positives[-1] * total_neg)


def score_draws(
    kind: TaskKind,
    labels: np.ndarray,
    probabilities: np.ndarray,
    popularity: np.ndarray | None,
    weights: np.ndarray,
    *,
    challenge_convention: bool = False,
) -> np.ndarray:
    """(B,) task score under each row of user weights; all-ones weights give exactly ``evaluate_predictions``' score.

    A label with a single class under a draw is left out of its macro AUROC, or counts 0 with the challenge convention.
    """
    y = np.asarray(labels).reshape(len(labels), -1)
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(labels), -1)
    per_label = np.stack([weighted_auroc(y[:, j], p[:, j], weights) for j in range(y.shape[1])], axis=1)  # (B, K)
    if challenge_convention:
        per_label = np.nan_to_num(per_label, nan=0.0)
    counted = (~np.isnan(per_label)).sum(axis=1)
    with np.errstate(invalid="ignore"):
        auroc = np.nan_to_num(per_label, nan=0.0).sum(axis=1) / counted  # NaN when no label has both classes
    if kind == "binary":
        return auroc
    n = weights.sum(axis=0)
    nov = (1.0 - user_popularity_mass(p, popularity) @ weights / n) ** NOVELTY_EXPONENT
    div = user_entropy(p) @ weights / n
    return task_score(kind, auroc, nov, div)


def interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap draws (NaN draws ignored)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def beyond_noise(low: float, high: float) -> bool:
    """A difference is real when its interval lies entirely on one side of 0."""
    return bool(low > 0 or high < 0)
