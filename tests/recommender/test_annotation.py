"""Feature annotation: planted feature <-> attribute associations get the right labels and the right scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.recommender_fixtures import tiny_runtime
from ubp_pipeline.core.recommender.annotation import (
    activation_histograms,
    annotate_features,
    annotate_hidden_dimensions,
    annotate_sae_features,
    average_ranks,
    compare_monosemanticity,
    value_threshold,
)
from ubp_pipeline.core.recommender.item_sequences import build_item_sequences
from ubp_pipeline.core.recommender.sae_training import HiddenStates, SAETrainingConfig, train_sae
from ubp_pipeline.models.sae import SAEConfig

N_TOKENS = 400


def four_items():
    """Items 1..4: colour red (1, 2) / blue (3, 4), size small (1, 3) / large (2, 4)."""
    sequences = build_item_sequences(np.zeros(4, dtype=int), np.arange(1, 5), np.arange(4))
    ids = np.arange(1, 5)
    return sequences.with_categorical("colour", ids, ["red", "red", "blue", "blue"]).with_categorical(
        "size", ids, ["small", "large", "small", "large"]
    )


def hand_made_states(columns: list[np.ndarray], items: np.ndarray, next_items: np.ndarray) -> HiddenStates:
    return HiddenStates(
        layer=0,
        states=torch.as_tensor(np.stack(columns, axis=1), dtype=torch.float32),
        users=np.zeros(len(items), dtype=int),
        positions=np.arange(len(items)),
        items=items,
        next_items=next_items,
    )


def annotate_identity(states: HiddenStates, sequences, **options):
    return annotate_features(lambda h: h, states, sequences, names=lambda j: f"f{j}", min_value_tokens=1, **options)


def test_planted_associations_get_their_labels_and_exact_scores():
    sequences = four_items()
    items = np.tile(np.arange(1, 5), N_TOKENS // 4)
    red, blue = items <= 2, items >= 3
    every_other = np.arange(N_TOKENS) % 8 < 4
    rng = np.random.default_rng(0)
    columns = [
        red * 1.0,  # fires exactly on red items
        (blue & every_other) * 2.0,  # fires on half of the blue tokens, never elsewhere
        np.round(rng.random(N_TOKENS), 1) + 0.1,  # dense noise, with ties
        np.zeros(N_TOKENS),  # never fires
    ]
    states = hand_made_states(columns, items, items)
    table = annotate_identity(states, sequences, subject="current").set_index("feature")

    assert set(table.index) == {0, 1, 2}
    assert table.loc[0, "label"] == "colour:red"
    assert table.loc[0, ["monosemanticity", "precision", "recall", "f1", "auroc"]].tolist() == pytest.approx([1] * 5)
    assert table.loc[1, "label"] == "colour:blue"
    assert table.loc[1, "monosemanticity"] == pytest.approx(1.0)
    assert table.loc[1, "precision"] == pytest.approx(1.0)
    assert table.loc[1, "recall"] == pytest.approx(0.5)
    assert table.loc[1, "f1"] == pytest.approx(2 / 3)
    assert table.loc[1, "auroc"] == pytest.approx(0.75)  # half the positives above every negative, half tied with them
    assert table.loc[2, "monosemanticity"] < 0.2
    assert table.loc[0, "best_f1_over_chance"] == pytest.approx(1.0)
    assert table.loc[2, "best_f1"] > 0.6 and table.loc[2, "best_f1_over_chance"] == pytest.approx(0.0)  # fires always
    assert table.loc[0, "max_activation"] == 1.0 and table.loc[1, "firing_rate"] == pytest.approx(0.25)

    label = table.loc[2, "label"]
    value_items = np.flatnonzero(sequences.has_value(label))
    assert table.loc[2, "auroc"] == pytest.approx(roc_auc_score(np.isin(items, value_items), columns[2]))


def test_next_item_subject_reads_the_item_that_follows():
    sequences = four_items()
    items = np.tile(np.arange(1, 5), N_TOKENS // 4)
    next_items = np.array([0, 3, 4, 1, 2])[items]  # red is always followed by blue and vice versa
    states = hand_made_states([(items <= 2) * 1.0], items, next_items)
    assert annotate_identity(states, sequences, subject="current")["label"].item() == "colour:red"
    assert annotate_identity(states, sequences, subject="next")["label"].item() == "colour:blue"


def test_top_items_and_sequences_name_the_strongest_activations():
    sequences = four_items()
    items = np.tile(np.arange(1, 5), N_TOKENS // 4)
    states = hand_made_states([items * 1.0 * (items != 2)], items, items)
    row = annotate_identity(states, sequences, subject="current", n_top_items=2, n_top_sequences=1).iloc[0]
    assert row["top_items"] == "4; 3"
    assert row["top_sequences"].startswith("user 0 @ ") and row["top_sequences"].endswith(": 4")


def test_the_activation_histogram_draws_how_strongly_a_feature_fires_when_it_fires():
    """Non-zero activations 1, 3, 4, 4 in four bins from 0 to 4 (the largest in the last): none, one, none, three,
    each drawn against the fullest bin. Annotated, activations 1, 3 and 4 as often each fill three of eight bins."""
    assert activation_histograms(torch.tensor([[1.0], [3.0], [4.0], [0.0], [4.0]]), bins=4) == [" ▃ █"]
    sequences = four_items()
    items = np.tile(np.arange(1, 5), N_TOKENS // 4)
    states = hand_made_states([items * 1.0 * (items != 2)], items, items)
    assert annotate_identity(states, sequences, subject="current").iloc[0]["activation_histogram"] == "  █   ██"


def test_average_ranks_match_the_textbook_definition():
    values = torch.tensor([[3.0, 0.0], [1.0, 0.0], [3.0, 2.0], [2.0, 0.0]])
    assert average_ranks(values).tolist() == [[3.5, 2.0], [1.0, 2.0], [3.5, 4.0], [2.0, 2.0]]


def test_sae_features_are_more_monosemantic_than_superposed_hidden_dimensions():
    """Eight categories stored as eight directions in six dimensions: every hidden dimension mixes several, an SAE
    with k=1 can give each its own latent."""
    n_categories, width = 8, 6
    ids = np.arange(1, n_categories + 1)
    sequences = build_item_sequences(np.zeros(n_categories, dtype=int), ids, ids).with_categorical(
        "category", ids, [f"c{i}" for i in range(n_categories)]
    )
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(n_categories, width, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    items = torch.randint(1, n_categories + 1, (3000,), generator=generator)
    magnitude = torch.rand(3000, 1, generator=generator) + 0.5
    hidden = directions[items - 1] * magnitude + 0.02 * torch.randn(3000, width, generator=generator)
    states = hand_made_states([hidden[:, j].numpy() for j in range(width)], items.numpy(), items.numpy())

    training = SAETrainingConfig(epochs=8, batch_size=128, learning_rate=1e-2)
    sae = train_sae(states.states, SAEConfig(d_in=width, expansion=4, k=1), training, tiny_runtime()).sae
    sae_table = annotate_sae_features(sae, states, sequences, subject="current")
    hidden_table = annotate_hidden_dimensions(states, sequences, subject="current")
    comparison = compare_monosemanticity({"sae": sae_table, "hidden": hidden_table})

    assert comparison.loc["sae", "median_monosemanticity"] > 0.8
    assert comparison.loc["sae", "median_monosemanticity"] > comparison.loc["hidden", "median_monosemanticity"] + 0.3
    clean_labels = set(sae_table.loc[sae_table["monosemanticity"] > 0.8, "label"])
    assert clean_labels == {f"category:c{i}" for i in range(n_categories)}


def test_few_held_out_tokens_still_get_labels_with_a_threshold_that_follows_their_number():
    sequences = four_items()
    items = np.tile(np.arange(1, 5), 4)  # 16 tokens: every value on 8, below the default 20
    states = hand_made_states([(items <= 2) * 1.0, (items % 2 == 0) * 1.0], items, items)
    table = annotate_features(lambda h: h, states, sequences, names=lambda j: f"f{j}", subject="current")
    assert table.set_index("feature")["label"].to_dict() == {0: "colour:red", 1: "size:large"}
    assert value_threshold(20, 16) == 2 and value_threshold(20, 1_000) == 10 and value_threshold(20, 50_000) == 20
    assert value_threshold(1, 16) == 1  # a lower setting is kept
