"""The challenge metrics on cases small enough to compute by hand, and AUROC against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ubp_pipeline.core.evaluation.metrics import (
    auroc,
    diversity,
    evaluate_predictions,
    novelty,
    task_score,
    total_score,
)


def test_diversity_by_hand():
    # user 1: [0.5, 0.5] renormalises to [0.5, 0.5]: entropy 1 bit, / log2(2) = 1.
    # user 2: [0.9, 0.3] renormalises to [0.75, 0.25]: entropy -(0.75 log2 0.75 + 0.25 log2 0.25) = 0.811278 bit.
    # diversity = mean = (1 + 0.811278) / 2.
    probabilities = np.array([[0.5, 0.5], [0.9, 0.3]])
    expected = (1.0 - (0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))) / 2
    assert diversity(probabilities) == pytest.approx(expected, abs=1e-8)
    assert expected == pytest.approx(0.905639, abs=1e-6)


def test_diversity_of_two_equal_targets_out_of_four_is_half():
    # q = [0.5, 0.5, 0, 0]: 1 bit of entropy out of log2(4) = 2 bits; the zero entries contribute nothing.
    assert diversity(np.array([[0.8, 0.8, 0.0, 0.0]])) == pytest.approx(0.5, abs=1e-8)


def test_uniform_predictions_have_diversity_one():
    assert diversity(np.full((50, 100), 0.3)) == pytest.approx(1.0, abs=1e-7)


def test_novelty_by_hand():
    # The 10 largest popularities sum to 100, so the rescaled popularity is pop / 100.
    popularity = np.array([50, 20, 10, 5, 5, 4, 3, 2, 1, 0, 0, 0], dtype=float)
    rescaled = popularity / 100
    ascending = np.arange(1, 13) / 100  # 0.01 ... 0.12
    # user A ranks the popular targets last: its top 10 are targets 2..11 with probabilities 0.03..0.12.
    mass_a = sum(ascending[i] * rescaled[i] for i in range(2, 12))
    # user B ranks them first: its top 10 are targets 0..9 with probabilities 0.12..0.03.
    descending = ascending[::-1]
    mass_b = sum(descending[i] * rescaled[i] for i in range(0, 10))
    assert mass_a == pytest.approx(0.003 + 0.002 + 0.0025 + 0.0024 + 0.0021 + 0.0016 + 0.0009)  # 0.0145
    assert mass_b == pytest.approx(0.06 + 0.022 + 0.01 + 0.0045 + 0.004 + 0.0028 + 0.0018 + 0.001 + 0.0004)  # 0.1065
    expected = (1 - (mass_a + mass_b) / 2) ** 100  # (1 - 0.0605)^100
    probabilities = np.stack([ascending, descending])
    assert novelty(probabilities, popularity) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.9395**100, rel=1e-9)
    # recommending the popular targets is what novelty punishes
    assert novelty(probabilities[:1], popularity) > novelty(probabilities[1:], popularity)


def test_novelty_is_scale_free_in_popularity():
    rng = np.random.default_rng(0)
    probabilities = rng.random((30, 25))
    popularity = rng.integers(1, 500, size=25).astype(float)
    assert novelty(probabilities, popularity) == pytest.approx(novelty(probabilities, 7 * popularity), rel=1e-12)


def test_auroc_matches_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    labels = rng.random((500, 6)) < 0.3
    scores = rng.normal(size=(500, 6)) + labels  # informative, so the values are not all 0.5
    macro = auroc(labels, scores)
    assert macro.value == pytest.approx(roc_auc_score(labels, scores, average="macro"), abs=1e-12)
    assert (macro.n_labels, macro.n_single_class, macro.n_excluded) == (6, 0, 0)
    binary = auroc(labels[:, 0], scores[:, 0])
    assert binary.value == pytest.approx(roc_auc_score(labels[:, 0], scores[:, 0]), abs=1e-12)
    assert binary.n_labels == 1


def test_single_class_labels_excluded_by_default_and_zero_under_challenge_convention():
    rng = np.random.default_rng(2)
    labels = rng.random((200, 4)) < 0.3
    labels[:, 1] = False  # no positive in the window
    labels[:, 2] = True  # no negative in the window
    scores = rng.normal(size=(200, 4)) + labels
    per_label = [roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 3)]

    ours = auroc(labels, scores)
    challenge = auroc(labels, scores, challenge_convention=True)

    assert ours.value == pytest.approx(np.mean(per_label), abs=1e-12)
    assert challenge.value == pytest.approx(sum(per_label) / 4, abs=1e-12)  # two labels count as 0
    assert ours.n_single_class == challenge.n_single_class == 2
    assert (ours.n_excluded, challenge.n_excluded) == (2, 0)


def test_binary_window_without_positives():
    scores = np.linspace(0, 1, 10)
    assert math.isnan(auroc(np.zeros(10), scores).value)
    assert auroc(np.zeros(10), scores).n_excluded == 1
    assert auroc(np.zeros(10), scores, challenge_convention=True).value == 0.0


def test_task_score_weights():
    assert task_score("binary", 0.7) == 0.7
    assert task_score("propensity", 0.75, 0.5, 0.9) == pytest.approx(0.8 * 0.75 + 0.1 * 0.5 + 0.1 * 0.9)
    assert task_score("propensity", 1.0, 1.0, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        task_score("propensity", 0.7)
    assert total_score([0.7, 0.8, 0.75]) == pytest.approx(2.25)


def test_evaluate_predictions_combines_the_parts():
    rng = np.random.default_rng(3)
    labels = rng.random((300, 12)) < 0.2
    probabilities = rng.random((300, 12))
    popularity = rng.integers(1, 100, size=12).astype(float)
    metrics = evaluate_predictions("propensity", labels, probabilities, popularity)
    assert metrics.novelty == novelty(probabilities, popularity)
    assert metrics.diversity == diversity(probabilities)
    assert metrics.score == pytest.approx(0.8 * metrics.auroc.value + 0.1 * metrics.novelty + 0.1 * metrics.diversity)
    churn = evaluate_predictions("binary", labels[:, 0], probabilities[:, 0])
    assert churn.score == churn.auroc.value and math.isnan(churn.novelty) and math.isnan(churn.diversity)
    with pytest.raises(ValueError):
        evaluate_predictions("propensity", labels, probabilities)
