"""The GRU autoencoder embedder: real small trainings on the tiny planted data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ubp_pipeline.core.profiles.embedders.base import FittedEmbedder
from ubp_pipeline.core.profiles.embedders.fitted_state import load_net_weights
from ubp_pipeline.core.profiles.embedders.gru_autoencoder import ragged_tokens
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput
from ubp_pipeline.core.profiles.embedders.training import field_verdicts
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.models.gru_autoencoder import GRUAutoencoderNet, GRUAutoencoderNetConfig

SMALL = dict(embedding_dim=32, hidden_dim=32, learning_rate=3e-3, warmup_steps=20, max_epochs=4, patience=1)


@pytest.fixture(scope="module")
def day_event(tiny_sequences, runtime):
    embedder = BLOCKS["gru_day_event"].build(SMALL)
    return embedder, embedder.fit(tiny_sequences["train"], runtime)


@pytest.mark.parametrize("folder", ["train", "later"])
def test_one_finite_vector_per_user_of_the_folder(day_event, tiny_sequences, runtime, folder):
    embedder, fitted = day_event
    embeddings = embedder.embed(fitted, tiny_sequences[folder], runtime)
    expected = SequenceInput.load(tiny_sequences[folder]).sequences.client_ids
    np.testing.assert_array_equal(embeddings.client_ids, expected)
    assert embeddings.vectors.shape == (len(expected), SMALL["hidden_dim"])
    assert embeddings.vectors.dtype == np.float32
    assert np.isfinite(embeddings.vectors).all()
    assert embeddings.vectors.std(axis=0).min() > 0  # no dead dimension, users differ


def test_every_field_beats_its_marginal_on_held_out_users(day_event):
    """days_ago is planted structure (sessions, decaying activity): reconstructing it needs the sequence, not the
    marginal, so its accuracy must clear the majority token by far. The event type (~80 % page visits) must at least
    beat the majority's accuracy or the unigram's cross-entropy by the check's margin; a model that only learned
    the marginal (or nothing) fails both."""
    _, fitted = day_event
    verdicts = {v.field: v for v in field_verdicts(fitted.history, fitted.config["best_epoch"])}
    assert set(verdicts) == {"days_ago", "event_type"}
    assert verdicts["days_ago"].accuracy > verdicts["days_ago"].majority + 0.3
    assert all(v.learned for v in verdicts.values()), verdicts
    assert fitted.history.series("valid_loss")[0] > min(fitted.history.series("valid_loss"))


def test_a_users_vector_does_not_depend_on_its_batch(day_event, tiny_sequences):
    """Batches are right-padded to their longest user; the state is read at each user's own last event."""
    _, fitted = day_event
    net = load_net_weights(GRUAutoencoderNet(GRUAutoencoderNetConfig(**fitted.config["net"])), fitted.state)
    data = SequenceInput.load(tiny_sequences["train"])
    tokens = ragged_tokens(data, data.token_space().most_frequent(1_000), tuple(fitted.config["net"]["fields"]))
    order = np.argsort(-tokens.lengths)
    rows = order[[0, len(order) // 4, len(order) // 2, -1]]  # longest, shortest and between in one batch
    with torch.no_grad():
        together = net.encode(*tokens.padded(rows))[-1]
        alone = torch.cat([net.encode(*tokens.padded(rows[i : i + 1]))[-1] for i in range(len(rows))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_variants_are_configurations_of_one_model(day_event, tiny_sequences, runtime):
    """The method's variants are registry entries over one class: the same network with other fields."""
    gru_blocks = {n: s.build().config.fields for n, s in BLOCKS.items() if s.embedder.endswith(":GRUAutoencoderEmbedder")}
    assert gru_blocks == {
        "gru_day_event": ("days_ago", "event_type"),
        "gru_week_all": ("weeks_ago", "event_type", "category", "price", "sku", "url"),
    }
    week_all = BLOCKS["gru_week_all"].build({**SMALL, "max_epochs": 1}).fit(tiny_sequences["train"], runtime)
    _, day_event_fitted = day_event

    def parts(fitted: FittedEmbedder) -> tuple[set[str], set[str]]:
        weights = [k.split(".") for k in fitted.state if k.startswith("net.")]
        per_field = {name[2] for name in weights if name[1] in ("embeddings", "heads")}
        return per_field, {".".join(name) for name in weights if name[1] not in ("embeddings", "heads")}

    week_fields, week_shared = parts(week_all)
    day_fields, day_shared = parts(day_event_fitted)
    assert week_fields == set(gru_blocks["gru_week_all"]) and day_fields == {"days_ago", "event_type"}
    assert week_shared == day_shared  # the same encoder, decoder and BOS
    assert {"valid_accuracy_sku", "majority_accuracy_url", "unigram_loss_weeks_ago"} <= set(week_all.history.last())


def test_the_multi_field_autoencoder_learns_every_field_on_planted_data(tiny_sequences, runtime):
    """Category, price, sku and url used to stay at the majority token; planted users keep to a few categories and
    favourite skus, so a user vector that learned them must beat the marginal on held-out users."""
    fitted = BLOCKS["gru_week_all"].build(SMALL).fit(tiny_sequences["train"], runtime)
    verdicts = {v.field: v for v in field_verdicts(fitted.history, fitted.config["best_epoch"])}
    assert set(verdicts) == {"weeks_ago", "event_type", "category", "price", "sku", "url"}
    assert all(v.learned for v in verdicts.values()), verdicts
    assert verdicts["category"].accuracy > 1.2 * verdicts["category"].majority


def test_overrides_reach_the_training_recipe_and_unknown_ones_are_refused():
    config = BLOCKS["gru_week_all"].build({"learning_rate": 0.0, "recipe": {"batch_size": 8}, "hidden_dim": 16}).config
    assert (config.recipe.learning_rate, config.recipe.batch_size, config.hidden_dim) == (0.0, 8, 16)
    assert BLOCKS["gru_week_all"].build(device_type="cuda").config.hidden_dim == 512  # the method's size on a GPU
    with pytest.raises(ValueError, match="'learning_rat' is not a setting"):
        BLOCKS["gru_week_all"].build({"learning_rat": 1e-3})
