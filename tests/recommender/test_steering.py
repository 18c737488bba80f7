"""Steering through an SAE feature moves recommendations toward the feature's planted concept."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from tests.recommender_fixtures import planted_sae, trained_planted_sasrec
from ubp_pipeline.core.recommender.annotation import annotate_sae_features
from ubp_pipeline.core.recommender.ranking import recommend_top_k, sasrec_scorer
from ubp_pipeline.core.recommender.steering import Steering, recommend, resolve_feature, steering_edit, steering_report

LAYER = 1


@cache
def interpretable_planted_model():
    split, trained = trained_planted_sasrec()
    states, sae = planted_sae()
    assert states.layer == LAYER
    annotations = annotate_sae_features(sae, states, split.train, subject="next")
    return split, trained.model, sae, annotations


def right_share(model, sae, sequences, users, steering=None):
    edit = None if steering is None else steering_edit(sae, LAYER, steering)
    top = recommend_top_k(sasrec_scorer(model, edit), sequences, users, k=10)
    return sequences.has_value("category:right")[top].mean()


def test_steering_toward_a_planted_concept_raises_its_share():
    split, model, sae, annotations = interpretable_planted_model()
    feature = resolve_feature(annotations, "category:right")
    row = annotations.set_index("feature").loc[feature]
    assert row["label"] == "category:right" and row["monosemanticity"] > 0.8

    left_users = np.arange(0, split.test.n_users, 2)  # the fixture puts even users in the left half
    before = right_share(model, sae, split.test, left_users)
    moderate = right_share(model, sae, split.test, left_users, Steering(feature, 1.0 * row["max_activation"]))
    strong = right_share(model, sae, split.test, left_users, Steering(feature, 2.0 * row["max_activation"]))
    assert before < 0.2
    assert moderate >= 2 * before
    assert strong > moderate


def test_clamping_sets_the_activation_instead_of_adding_to_it():
    split, model, sae, annotations = interpretable_planted_model()
    feature = resolve_feature(annotations, "category:right")
    left_users = np.arange(0, split.test.n_users, 2)
    histories = torch.as_tensor(split.test.padded(left_users, model.config.max_len))
    with torch.no_grad():
        activation = sae.encode(model.hidden_state(histories, LAYER)[:, -1])[:, feature]
    off = left_users[activation.numpy() == 0]
    assert len(off) > 10

    def top(users, steering=None):
        edit = None if steering is None else steering_edit(sae, LAYER, steering)
        return recommend_top_k(sasrec_scorer(model, edit), split.test, users, k=10)

    assert (top(off, Steering(feature, 0.0, "clamp")) == top(off)).all()  # already 0: clamping to 0 changes nothing
    strength = 2.0 * annotations.set_index("feature").loc[feature, "max_activation"]
    assert (top(off, Steering(feature, strength, "clamp")) == top(off, Steering(feature, strength))).all()


def test_steering_report_measures_share_and_ndcg_before_and_after():
    split, model, sae, annotations = interpretable_planted_model()
    report = steering_report(model, sae, LAYER, annotations, split.test, n_features=2, strength_multiples=(1.0, 4.0))
    assert len(report) == 2 * report["label"].nunique()
    right = report[report["label"] == "category:right"].set_index("strength_multiple")
    assert right.loc[4.0, "share_after"] > right.loc[1.0, "share_after"] > right.loc[1.0, "share_before"]
    assert (report["share_ratio"] == report["share_after"] / report["share_before"]).all()
    assert np.allclose(report["ndcg_cost"], report["ndcg@10_before"] - report["ndcg@10_after"])


def test_recommend_lists_unseen_items_with_their_attributes():
    split, model, sae, annotations = interpretable_planted_model()
    user_id = split.test.user_ids[0]
    plain = recommend(model, split.test, user_id, k=5)
    assert list(plain.columns) == ["rank", "item_id", "name", "category"]
    assert not set(plain["item_id"]) & set(split.test.item_ids[split.test.sequence(0) - 1])
    steering = Steering(resolve_feature(annotations, "category:right"), 20.0)
    steered = recommend(model, split.test, user_id, k=5, sae=sae, layer=LAYER, steering=steering)
    assert (steered["category"] == "right").sum() > (plain["category"] == "right").sum()


def test_features_are_addressed_by_index_or_label():
    _, _, _, annotations = interpretable_planted_model()
    assert resolve_feature(annotations, 7) == 7
    assert resolve_feature(annotations, "7") == 7
    with pytest.raises(KeyError, match="category:middle"):
        resolve_feature(annotations, "category:middle")
