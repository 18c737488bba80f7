"""The bootstrap behind every interval, and the forward selection that reads it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ubp_pipeline.core.evaluation.metrics import evaluate_predictions
from ubp_pipeline.core.evaluation.noise import (
    beyond_noise,
    bootstrap_weights,
    interval,
    score_draws,
    weighted_auroc,
)
from ubp_pipeline.core.evaluation.selection import forward_select


def _predictions(n_users: int, signal: float, seed: int = 0, k: int = 20):
    """Labels of k targets and probabilities that follow them with the given strength, rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_users, k)) < 0.05).astype(np.uint8)
    labels[0, -1] = 0  # some labels may have no positive at all: the metrics must cope
    probabilities = np.round(1 / (1 + np.exp(-(signal * labels + rng.normal(size=labels.shape) - 3))), 3)
    return labels, probabilities, rng.integers(1, 50, k).astype(float)


@pytest.mark.parametrize("convention", [False, True])
def test_unit_weights_reproduce_the_point_score(convention):
    labels, probabilities, popularity = _predictions(500, 1.0)
    labels[:, 3] = 0  # a label without positives: excluded, or 0 with the challenge convention
    ones = np.ones((500, 1), np.float32)
    expected = evaluate_predictions("propensity", labels, probabilities, popularity, challenge_convention=convention)
    got = score_draws("propensity", labels, probabilities, popularity, ones, challenge_convention=convention)
    assert got[0] == pytest.approx(expected.score, abs=1e-12)
    binary = evaluate_predictions("binary", labels[:, 0], probabilities[:, 0])
    assert score_draws("binary", labels[:, 0], probabilities[:, 0], None, ones)[0] == pytest.approx(binary.score, abs=1e-12)


def test_weighted_auroc_equals_auroc_of_the_resampled_users():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(5, 40))
        labels, scores = rng.random(n) < 0.4, rng.integers(0, 4, n).astype(float)  # many ties
        picks = rng.integers(0, n, n)
        weights = np.bincount(picks, minlength=n)[:, None].astype(np.float32)
        resampled = labels[picks]
        expected = roc_auc_score(resampled, scores[picks]) if 0 < resampled.sum() < n else np.nan
        assert weighted_auroc(labels, scores, weights)[0] == pytest.approx(expected, nan_ok=True)


def test_intervals_narrow_with_more_users_and_a_real_difference_is_beyond_noise():
    widths = []
    for n_users in (400, 6400):
        labels, strong, popularity = _predictions(n_users, 2.0)
        weights = bootstrap_weights(n_users, replicates=200, seed=0)
        draws = score_draws("propensity", labels, strong, popularity, weights)
        low, high = interval(draws)
        widths.append(high - low)
        assert low < evaluate_predictions("propensity", labels, strong, popularity).score < high
    assert widths[1] < widths[0] / 2.5  # about 1 / sqrt(16) = 1/4 of the width

    labels, strong, popularity = _predictions(6400, 2.0)
    _, weak, _ = _predictions(6400, 0.3)
    weights = bootstrap_weights(6400, replicates=200, seed=0)
    strong_draws, weak_draws = (score_draws("propensity", labels, p, popularity, weights) for p in (strong, weak))
    assert beyond_noise(*interval(strong_draws - weak_draws))
    assert not beyond_noise(*interval(strong_draws - strong_draws))


def test_forward_selection_adds_a_block_only_when_it_gains_beyond_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.01, size=200)
    value = {"a": 3.0, "b": 2.9, "c": 2.0}  # b adds 0.2 to a; c adds 0.005, inside the noise

    def total_of(blocks):
        total = value[blocks[0]] if len(blocks) == 1 else 3.0 + 0.2 * ("b" in blocks) + 0.005 * ("c" in blocks)
        own = rng.normal(scale=0.003, size=200)  # every set has some noise of its own
        return total, total + noise + own

    chosen, trials = forward_select(["c", "b", "a"], total_of)
    assert [t.round for t in trials] == [0, 1, 1, 2, 3]
    assert [t.blocks for t in trials if t.accepted][:2] == [["a"], ["b", "a"]]
    rejected = trials[3]
    assert rejected.blocks == ["c", "b", "a"] and not rejected.accepted and rejected.gain_lower < 0 < rejected.gain_upper
    # b + a does not beat all three beyond noise, so dropping c is not earned: the full set stays
    assert chosen == ["c", "b", "a"] and trials[-1].accepted  # the order of the given block list


def test_forward_selection_leaves_out_a_block_that_hurts_beyond_noise():
    rng = np.random.default_rng(1)
    noise = rng.normal(scale=0.01, size=200)
    value = {"a": 3.0, "b": 2.9, "d": 1.0}  # b adds 0.2 to a; d costs 0.3 whatever it joins

    def total_of(blocks):
        total = value[blocks[0]] if len(blocks) == 1 else 3.0 + 0.2 * ("b" in blocks) - 0.3 * ("d" in blocks)
        return total, total + noise + rng.normal(scale=0.003, size=200)

    chosen, trials = forward_select(["a", "b", "d"], total_of)
    assert chosen == ["a", "b"] and not trials[-1].accepted and trials[-1].blocks == ["a", "b", "d"]


@pytest.mark.parametrize(("gain", "chosen"), [(0.005, ["a", "b"]), (0.2, ["a", "b", "t"])])
def test_an_opt_in_block_joins_only_when_it_gains_beyond_noise(gain, chosen):
    rng = np.random.default_rng(2)
    noise = rng.normal(scale=0.01, size=200)
    value = {"a": 3.0, "b": 2.9, "t": 2.0}  # b adds 0.2 to a; the opt-in t adds ``gain``

    def total_of(blocks):
        total = value[blocks[0]] if len(blocks) == 1 else 3.0 + 0.2 * ("b" in blocks) + gain * ("t" in blocks)
        return total, total + noise + rng.normal(scale=0.003, size=200)

    got, trials = forward_select(["a", "b", "t"], total_of, default=["a", "b"])
    assert got == chosen
    assert any(t.accepted and "t" in t.blocks for t in trials) == ("t" in chosen)  # the trials hold the evidence


def test_the_default_set_stays_when_the_forward_choice_does_not_beat_it_beyond_noise():
    rng = np.random.default_rng(3)
    noise = rng.normal(scale=0.01, size=200)
    value = {"a": 3.0, "b": 2.9, "t": 2.0, ("b", "t"): 3.205}  # the default b + t: within noise of a + b (3.2)

    def total_of(blocks):
        total = value.get(blocks, value[blocks[0]] if len(blocks) == 1 else 3.0 + 0.2 * ("b" in blocks))
        return total, total + noise + rng.normal(scale=0.003, size=200)

    chosen, trials = forward_select(["a", "b", "t"], total_of, default=["b", "t"])
    assert chosen == ["b", "t"] and trials[-1].blocks == ["b", "t"] and trials[-1].accepted
    assert forward_select(["a", "b", "t"], total_of, default=[])[0] == ["a", "b"]  # only opt-in blocks: the choice stands
