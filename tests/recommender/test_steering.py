"""Steering through an SAE feature moves recommendations toward the feature's planted concept."""

from __future__ import annotations

import copy
from functools import cache

import numpy as np
import pandas as pd
import pytest
import torch

from tests.recommender_fixtures import planted_sae, trained_planted_sasrec
from ubp_pipeline.core.recommender.annotation import (
    annotate_hidden_dimensions,
    annotate_sae_features,
    reliable_features,
)
from ubp_pipeline.core.recommender.hidden_edits import HiddenEdit, Steering, chain_edits, shift_edit, steering_edit
from ubp_pipeline.core.recommender.ranking import recommend_top_k, sasrec_scorer
from ubp_pipeline.core.recommender.serving import recommend
from ubp_pipeline.core.recommender.steering import (
    concept_direction,
    feature_writes,
    output_aurocs,
    output_readability,
    resolve_feature,
    steering_report,
)

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


def test_steering_report_finds_the_smallest_strength_that_doubles_the_share():
    split, model, sae, annotations = interpretable_planted_model()
    left_users = np.arange(0, split.test.n_users, 2)
    grid = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

    def report_for(strength_grid, modes=("add", "clamp")):
        return steering_report(
            model, sae, LAYER, annotations, split.test, n_features=2, strength_grid=strength_grid, modes=modes,
            users=left_users,
        )  # fmt: skip

    report = report_for(grid)
    assert len(report) == 2 * report["label"].nunique() and set(report["mode"]) == {"add", "clamp"}
    add = report[(report["label"] == "category:right") & (report["mode"] == "add")].iloc[0]
    assert add["reached_target"] and add["share_after"] >= 2 * add["share_before"] > 0
    weaker = [multiple for multiple in grid if multiple < add["strength_multiple"]]
    if weaker:
        below = report_for((max(weaker),), modes=("add",)).set_index("label").loc["category:right"]
        assert not below["reached_target"]
    assert np.allclose(report["ndcg_cost"], report["ndcg@10_before"] - report["ndcg@10_after"])
    assert np.allclose(report["relative_ndcg_cost"], report["ndcg_cost"] / report["ndcg@10_before"])


def test_a_coarse_grid_is_narrowed_towards_the_weakest_strength_that_reaches_the_target():
    """Grid (0.25, 16): 16 overshoots far past the target share; bisection towards 0.25 stops nearer the target and
    costs less NDCG, in every mode, the label-bias reference included."""
    split, model, sae, annotations = interpretable_planted_model()
    left_users = np.arange(0, split.test.n_users, 2)

    def report(refine_steps: int) -> pd.DataFrame:
        rows = steering_report(
            model, sae, LAYER, annotations, split.test, n_features=2, strength_grid=(0.25, 16.0),
            refine_steps=refine_steps, users=left_users,
        )  # fmt: skip
        return rows[rows["label"] == "category:right"].set_index("mode")

    coarse, refined = report(0), report(3)
    assert set(refined.index) == {"add", "clamp", "label_bias"}
    assert (coarse["strength_multiple"] == 16.0).all() and refined["reached_target"].all()
    assert (refined["strength_multiple"] < 16.0).all() and (refined["strength_multiple"] > 0.25).all()
    assert (refined["share_after"] < coarse["share_after"]).all()
    assert (refined["relative_ndcg_cost"] < coarse["relative_ndcg_cost"]).all()


def test_a_label_is_steered_by_the_feature_whose_effect_best_separates_its_items():
    """What a feature writes (its measured effect on the item scores, ranked against the label) picks the feature a
    label is steered by; the annotation's pick (what the feature reads) can only be as good or worse by that score."""
    split, model, sae, annotations = interpretable_planted_model()
    users = np.arange(0, split.test.n_users, 2)
    reliable = reliable_features(annotations)
    labels = ["category:right", "category:left"]
    writes = feature_writes(sae, reliable)
    aurocs = output_aurocs(model, LAYER, writes, list(reliable["feature"]), labels, split.test, users, torch.device("cpu"))
    assert list(aurocs.index) == list(reliable["feature"]) and list(aurocs.columns) == labels

    def report(select_by: str) -> pd.DataFrame:
        rows = steering_report(
            model, sae, LAYER, annotations, split.test, n_features=2, modes=("add",), select_by=select_by, users=users
        )
        return rows.set_index("label")

    by_output, by_annotation = report("output"), report("annotation")
    for label in labels:
        chosen = by_output.loc[label]
        assert chosen["feature"] == aurocs[label].idxmax()
        assert chosen["output_auroc"] == aurocs[label].max() > 0.8  # planted: some feature writes each half
        assert chosen["output_auroc"] >= by_annotation.loc[label, "output_auroc"]
    assert by_output.loc["category:right", "reached_target"]  # these users' minority half: 2 items in 10 suffice


def test_the_concept_direction_moves_the_scores_of_the_labels_items_and_steers_like_a_feature():
    split, model, sae, annotations = interpretable_planted_model()
    carries = split.test.has_value("category:right")
    direction = concept_direction(model, carries)
    with torch.no_grad():
        effect = (model.item_vectors() @ direction)[1:].numpy()
    assert effect[carries[1:]].min() > effect[~carries[1:]].max()  # two halves: a direction separates them fully
    assert np.corrcoef(effect, carries[1:])[0, 1] > 0.9  # and gives each half about one bonus
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.item_embedding.weight[1:] += 0.5  # every score moves alike: no ranking, so no fit, may see it
    assert torch.allclose(concept_direction(shifted, carries), direction, atol=1e-4)
    left_users = np.arange(0, split.test.n_users, 2)
    report = steering_report(
        model, sae, LAYER, annotations, split.test, n_features=2, modes=("add", "concept_direction"), users=left_users
    ).set_index(["label", "mode"])
    reference = report.loc[("category:right", "concept_direction")]
    assert reference["reached_target"] and reference["share_after"] >= 2 * reference["share_before"]
    # the label's feature is reported beside it, and resolving the label finds the feature, not the reference
    feature = report.loc[("category:right", "add"), "feature"]
    assert resolve_feature(annotations, "category:right", report=report.reset_index()) == feature


def test_what_sae_features_and_hidden_dimensions_write_is_compared_over_their_reliable_features():
    split, model, sae, annotations = interpretable_planted_model()
    states, _ = planted_sae()
    hidden = annotate_hidden_dimensions(states, split.train, subject="next")
    table = output_readability(model, sae, LAYER, annotations, hidden, split.test)
    assert list(table.index) == ["sae", "hidden"]
    assert table.loc["sae", "reliable"] == len(reliable_features(annotations))
    assert table.loc["hidden", "reliable"] == len(reliable_features(hidden))
    assert table["median_best_output_auroc"].between(0.5, 1).all()  # two complementary labels: the best is >= 0.5
    assert table.loc["sae", "share_best_output_auroc>=0.8"] > 0  # some feature writes each half (test above)


def test_a_label_absent_before_steering_gets_no_ratio_but_a_target():
    split, model, sae, annotations = interpretable_planted_model()
    right_users = np.arange(1, split.test.n_users, 2)  # odd users live in the right half
    top = recommend_top_k(sasrec_scorer(model), split.test.drop_last(1), right_users, k=10)
    no_left = right_users[~split.test.has_value("category:left")[top].any(1)]
    assert len(no_left) > 10
    report = steering_report(
        model, sae, LAYER, annotations, split.test, strength_grid=(8.0,), modes=("add",), users=no_left
    )
    left = report.set_index("label").loc["category:left"]
    assert left["share_before"] == 0 and np.isnan(left["share_ratio"])
    assert left["reached_target"] == (left["share_after"] >= 0.2)


def test_recommend_lists_unseen_items_with_their_attributes():
    split, model, sae, annotations = interpretable_planted_model()
    user_id = split.test.user_ids[0]
    plain = recommend(sasrec_scorer(model), split.test, user_id, k=5)
    assert list(plain.columns) == ["rank", "item_id", "name", "category"]
    assert not set(plain["item_id"]) & set(split.test.item_ids[split.test.sequence(0) - 1])
    steering = Steering(resolve_feature(annotations, "category:right"), 20.0)
    steered = recommend(sasrec_scorer(model, steering_edit(sae, LAYER, steering)), split.test, user_id, k=5)
    assert (steered["category"] == "right").sum() > (plain["category"] == "right").sum()


def test_features_are_addressed_by_index_or_label():
    _, _, _, annotations = interpretable_planted_model()
    assert resolve_feature(annotations, 7) == 7
    assert resolve_feature(annotations, "7") == 7
    with pytest.raises(KeyError, match="category:middle"):
        resolve_feature(annotations, "category:middle")


def test_a_label_resolves_to_the_feature_its_steering_report_steered_it_by():
    _, _, _, annotations = interpretable_planted_model()
    most_monosemantic = resolve_feature(annotations, "category:right")
    other = int(annotations.loc[annotations["feature"] != most_monosemantic, "feature"].iloc[0])
    report = pd.DataFrame(
        {"feature": [other, 999], "label": ["category:right", "category:right"], "mode": ["add", "label_bias"]}
    )
    assert resolve_feature(annotations, "category:right", report=report) == other
    assert resolve_feature(annotations, "category:left", report=report) == resolve_feature(annotations, "category:left")


def test_chained_edits_apply_in_order_and_must_share_a_layer():
    _, _, sae, _ = interpretable_planted_model()
    hidden, items = torch.randn(3, 5, 32), torch.ones(3, 5, dtype=torch.long)
    first, second = (steering_edit(sae, LAYER, Steering(f, 2.0)) for f in (0, 1))
    chained = chain_edits([first, second]).apply(hidden, items)
    assert torch.allclose(chained, second.apply(first.apply(hidden, items), items))
    assert torch.allclose(chained[:, :-1], hidden[:, :-1])  # only the last position moves
    with pytest.raises(ValueError, match="one layer"):
        chain_edits([first, HiddenEdit(LAYER - 1, lambda h, i: h)])


def test_a_label_can_be_steered_by_all_the_features_assigned_to_it():
    split, model, sae, annotations = interpretable_planted_model()
    left_users = np.arange(0, split.test.n_users, 2)
    report = steering_report(
        model, sae, LAYER, annotations, split.test, n_features=2, modes=("add", "writers"), users=left_users
    ).set_index(["label", "mode"])
    reliable = reliable_features(annotations)
    labels = list(report.index.unique("label"))
    writes = feature_writes(sae, reliable)
    aurocs = output_aurocs(model, LAYER, writes, list(reliable["feature"]), labels, split.test, left_users, torch.device("cpu"))
    for label in labels:
        single, group = report.loc[(label, "add")], report.loc[(label, "writers")]
        assert single["n_features"] == 1 and group["feature"] == single["feature"]  # the chosen feature leads the group
        writers = set(aurocs.index[aurocs.idxmax(axis=1) == label]) | {single["feature"]}
        assert group["n_features"] == len(writers)
    right = report.loc[("category:right", "writers")]
    assert right["n_features"] > 1  # a planted half is written by several features
    assert right["reached_target"] and right["share_after"] >= 2 * right["share_before"] > 0
    # the edit is the group's mean write at the reported strength, not the chosen feature's alone
    group = set(aurocs.index[aurocs.idxmax(axis=1) == "category:right"]) | {right["feature"]}
    mean_write = writes[[feature in group for feature in reliable["feature"]]].mean(0)
    edit = shift_edit(LAYER, right["strength"] * mean_write)
    top = recommend_top_k(sasrec_scorer(model, edit), split.test.drop_last(1), left_users, k=10)
    assert split.test.has_value("category:right")[top].mean() == pytest.approx(right["share_after"])
