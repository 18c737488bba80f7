"""SASRec learns a planted next-item rule, and the ranking metrics are right on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.recommender_fixtures import HALF, LENGTH, planted_sequences, tiny_runtime, trained_planted_sasrec
from ubp_pipeline.core.recommender.hidden_edits import HiddenEdit
from ubp_pipeline.core.recommender.item_sequences import build_item_sequences, leave_one_out
from ubp_pipeline.core.recommender.ranking import (
    evaluate_full_ranking,
    fit_item_to_item,
    item_to_item_scorer,
    popularity_scorer,
    recommend_top_k,
    sasrec_scorer,
)
from ubp_pipeline.core.recommender.sasrec_training import SASRecTrainingConfig, train_sasrec
from ubp_pipeline.core.recommender.stages import best_model, compare_with_baselines, fit_recommender
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig


def test_sasrec_learns_the_planted_rule_far_above_popularity():
    split, trained = trained_planted_sasrec()
    sasrec = evaluate_full_ranking(sasrec_scorer(trained.model), split.test)
    popularity = evaluate_full_ranking(popularity_scorer(split.train), split.test)
    assert sasrec["ndcg@10"] > 0.5
    assert sasrec["ndcg@10"] > 4 * popularity["ndcg@10"]
    valid_ndcg = trained.history.series("valid_ndcg@10")
    assert valid_ndcg[trained.best_epoch - 1] == max(valid_ndcg)


def test_training_reports_every_epoch_to_the_callback():
    _, trained = trained_planted_sasrec()
    assert [row["epoch"] for row in trained.history.epochs] == list(range(1, len(trained.history.epochs) + 1))
    assert {"train_loss", "valid_hr@10", "valid_ndcg@10"} <= set(trained.history.last())
    losses = trained.history.series("train_loss")
    assert losses[-1] < losses[0]


def test_label_smoothing_reaches_the_loss():
    # a rule with no exceptions: unsmoothed it is learned at once; with all of every target spread over the items,
    # the loss is lowest at the uniform distribution, so the model must not learn it
    split = leave_one_out(planted_sequences(jump=0.0))
    model_config = SASRecConfig(n_items=split.test.n_items, max_len=LENGTH, d_model=32, n_heads=2, n_blocks=1)
    models, ranking = {}, {}
    for smoothing in (0.0, 1.0):
        config = SASRecTrainingConfig(epochs=5, batch_size=32, learning_rate=5e-3, label_smoothing=smoothing)
        models[smoothing] = train_sasrec(split, model_config, config, tiny_runtime()).model
        ranking[smoothing] = evaluate_full_ranking(sasrec_scorer(models[smoothing]), split.test)["ndcg@10"]
    assert ranking[0.0] > 0.9 and ranking[1.0] < 0.5
    histories = torch.as_tensor(split.test.windows(LENGTH)[:, :-1])
    uniform = sasrec_scorer(models[1.0])(histories).softmax(-1)
    assert uniform.max().item() < 1.5 / split.test.n_items


def test_weight_average_keeps_the_moving_average_of_the_weights():
    # a rule with no exceptions, learned perfectly within 5 epochs (~50 steps): an average decaying 0.9 a step follows
    # the weights closely enough to know it too; one decaying 0.9999 a step barely leaves the weights of the first
    # step, which know it only in part (NDCG@10 0.63 here)
    split = leave_one_out(planted_sequences(jump=0.0))
    model_config = SASRecConfig(n_items=split.test.n_items, max_len=LENGTH, d_model=32, n_heads=2, n_blocks=1)
    ranking = {}
    for decay in (0.0, 0.9, 0.9999):
        config = SASRecTrainingConfig(epochs=5, batch_size=32, learning_rate=5e-3, weight_average_decay=decay)
        trained = train_sasrec(split, model_config, config, tiny_runtime())
        # what is returned is a plain SASRec, ready to serve, and the very weights whose validation chose the epoch
        assert type(trained.model) is SASRec and not trained.model.training
        valid = evaluate_full_ranking(sasrec_scorer(trained.model), split.valid)["ndcg@10"]
        assert valid == pytest.approx(max(trained.history.series("valid_ndcg@10")))
        ranking[decay] = evaluate_full_ranking(sasrec_scorer(trained.model), split.test)["ndcg@10"]
    assert ranking[0.0] > 0.95 and ranking[0.9] > 0.95 and ranking[0.9999] < 0.8
    with pytest.raises(ValueError, match="weight_average_decay"):
        SASRecTrainingConfig(weight_average_decay=1.0)


def test_attribute_index_numbers_every_value_an_item_carries():
    sequences = build_item_sequences(np.zeros(3, dtype=int), np.array([10, 20, 30]), np.arange(3))
    ids = np.array([10, 20, 30])
    genres = np.array([[True, True, False], [False, False, False], [False, True, True]])
    sequences = sequences.with_multi_hot("genre", ids, genres, ["a", "b", "c"]).with_categorical(
        "price", ids, np.array(["low", "high", "low"])
    )
    assert sequences.n_attribute_values == 5  # genre a, b, c = 1, 2, 3; price high, low = 4, 5
    assert sequences.attribute_index().tolist() == [[0, 0, 0], [1, 2, 5], [4, 0, 0], [2, 3, 5]]


def test_item_attributes_give_the_items_of_a_value_a_shared_part_of_their_vector():
    split = leave_one_out(planted_sequences())
    model_config = SASRecConfig(n_items=split.test.n_items, max_len=LENGTH, d_model=32, n_heads=2, n_blocks=1)
    config = SASRecTrainingConfig(epochs=5, batch_size=32, learning_rate=5e-3, item_attributes=True)
    model = train_sasrec(split, model_config, config, tiny_runtime()).model
    assert (model.config.n_attribute_values, model.config.attribute_slots) == (2, 1)  # category left / right
    assert evaluate_full_ranking(sasrec_scorer(model), split.test)["ndcg@10"] > 0.5
    with torch.no_grad():
        width = model.config.attribute_dims
        own, shared = model.item_vectors()[1:].split([model.config.d_model - width, width], 1)
        assert torch.equal(own, model.item_embedding.weight[1:])
        left, right = shared[:HALF], shared[HALF:]
        assert torch.allclose(left, left[:1].expand_as(left)) and torch.allclose(right, right[:1].expand_as(right))
        assert not torch.allclose(left[0], right[0])
        assert model.item_vectors()[0].abs().sum() == 0  # padding
    # the attribute index travels with the weights: a model rebuilt from config and state dict scores the same
    rebuilt = SASRec(model.config)
    rebuilt.load_state_dict(model.state_dict())
    histories = torch.as_tensor(split.test.padded(np.arange(8), LENGTH))
    assert torch.equal(sasrec_scorer(rebuilt)(histories), sasrec_scorer(model)(histories))
    with pytest.raises(ValueError, match="attribute_index"):
        SASRec(model.config, torch.zeros(3, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="attribute_dims"):
        SASRecConfig(n_items=4, d_model=32, n_attribute_values=2, attribute_slots=1, attribute_dims=32)
    for from_data in ("n_items", "attribute_slots"):  # sizes the data sets: refused before any data is read
        with pytest.raises(ValueError, match=f"'{from_data}'.*follow from the data"):
            fit_recommender(
                "no_such_partition", "out", tiny_runtime(), training_day="2022-09-22", overrides={from_data: 3}
            )


def _fixed_scorer(scores: list[float]):
    """Every user gets the same scores; index 0 is padding."""
    table = torch.tensor([float("-inf"), *scores])
    return lambda histories: table.expand(len(histories), -1)


def test_full_ranking_metrics_filter_seen_items_on_a_hand_computed_case():
    # user 0: history [1, 2], target 3; user 1: history [4], target 5.  Scores: 1 > 4 > 2 > 3 > 5.
    sequences = build_item_sequences(np.array([0, 0, 0, 1, 1]), np.array([1, 2, 3, 4, 5]), np.arange(5), min_length=2)
    scorer = _fixed_scorer([5.0, 3.0, 2.0, 4.0, 1.0])
    # user 0: unseen items ranked 4, 3, 5 -> target rank 1 (0-based); user 1: unseen 1, 2, 3, 5 -> target rank 3.
    at_10 = evaluate_full_ranking(scorer, sequences, k=10)
    assert at_10["hr@10"] == 1.0
    assert at_10["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / 2)
    at_2 = evaluate_full_ranking(scorer, sequences, k=2)
    assert at_2["hr@2"] == 0.5
    assert at_2["ndcg@2"] == pytest.approx(1 / math.log2(3) / 2)
    top = recommend_top_k(scorer, sequences.drop_last(1), np.array([0, 1]), k=2)
    assert top.tolist() == [[4, 3], [1, 2]]


def test_a_repeated_target_is_filtered_and_counts_as_a_miss():
    sequences = build_item_sequences(np.zeros(3, dtype=int), np.array([1, 2, 1]), np.arange(3))
    result = evaluate_full_ranking(_fixed_scorer([9.0, 1.0, 0.5]), sequences)
    assert result["hr@10"] == 0.0


def test_popularity_counts_training_items_only():
    sequences = build_item_sequences(np.array([0, 0, 0, 1, 1, 1]), np.array([1, 1, 2, 2, 2, 3]), np.arange(6))
    split = leave_one_out(sequences)
    scores = popularity_scorer(split.train)(torch.zeros(1, 3, dtype=torch.long))
    assert scores[0, 1:].tolist() == [1.0, 1.0, 0.0]


def test_hidden_state_round_trip_and_edits_change_the_output():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, max_len=6, d_model=16, n_heads=2, n_blocks=2)).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        full = model(items)
        for layer in range(4):  # 3 = the normalised output: nothing runs after it
            assert torch.allclose(model.forward_from(model.hidden_state(items, layer), items, layer), full, atol=1e-5)
        assert torch.equal(model.hidden_state(items, 3), full)
        for outside in (-1, 4):
            with pytest.raises(ValueError, match="outside 0..3"):
                model.hidden_state(items, outside)
        assert torch.isfinite(full).all()
        zeroed = sasrec_scorer(model, HiddenEdit(1, lambda hidden, _: torch.zeros_like(hidden)))(items)
        assert not torch.allclose(zeroed, sasrec_scorer(model)(items))


def test_padding_never_changes_what_real_positions_see():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, max_len=6, d_model=16, n_heads=2, n_blocks=2)).eval()
    with torch.no_grad():
        short = model(torch.tensor([[0, 0, 0, 7, 8, 9]]))[0, -1]
        model.item_embedding.weight[0] = 5.0  # whatever the padding rows hold must not leak into real positions
        again = model(torch.tensor([[0, 0, 0, 7, 8, 9]]))[0, -1]
    assert torch.allclose(short, again, atol=1e-5)


def test_windows_cover_every_transition_exactly_once():
    sequences = planted_sequences(n_users=7, length=23)
    windows = sequences.windows(6)
    pairs = {(a, b) for row in windows for a, b in zip(row[:-1], row[1:]) if a}
    expected = sum(len(sequences.sequence(u)) - 1 for u in range(sequences.n_users))
    assert int((windows[:, :-1] != 0).sum()) == expected
    assert all((a, b) in pairs for u in range(7) for a, b in zip(sequences.sequence(u)[:-1], sequences.sequence(u)[1:]))


def test_item_to_item_ranks_the_items_that_followed_the_newest_ones():
    # 1 -> 2 three times, 1 -> 3 once, 4 -> 5 twice; item 3 is the most popular overall
    users = np.repeat(np.arange(6), 3)
    items = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 3, 3, 4, 5, 3, 4, 5, 3])
    train = build_item_sequences(users, items, np.arange(len(items)))
    statistics = fit_item_to_item(train, window=1)
    scores = item_to_item_scorer(statistics, recent=1)(torch.tensor([[0, 1], [0, 4]]))
    assert scores[0].argmax() == 2 and scores[1].argmax() == 5
    assert scores[0, 2] == pytest.approx(0.75, abs=1e-4)  # P(2 follows 1) = 3 / 4
    untouched = item_to_item_scorer(statistics, recent=1)(torch.tensor([[0, 5]]))  # nothing follows 5 but 3
    assert untouched[0].argmax() == 3


def test_sasrec_is_compared_with_both_baselines_and_the_best_is_served():
    split, trained = trained_planted_sasrec()
    quality = compare_with_baselines(trained.model, fit_item_to_item(split.train), split, torch.device("cpu"))
    assert quality["model"].tolist() == ["SASRec", "popularity", "item-to-item", "SASRec + item-to-item"]
    assert quality.set_index("model").loc["item-to-item", "test_ndcg@10"] > 0.5  # the planted rule is a transition
    assert best_model(quality) == quality.loc[quality["valid_ndcg@10"].idxmax(), "model"]
    tied = quality.assign(**{"valid_ndcg@10": 0.3})
    assert best_model(tied) == "SASRec"
