"""The next-event transformer embedder: real small trainings on the tiny planted data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ubp_pipeline.core.profiles.embedders.fitted_state import load_net_weights
from ubp_pipeline.core.profiles.embedders.next_event import product_event_tokens
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput
from ubp_pipeline.core.profiles.embedders.training import field_verdicts
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.core.warehouse.events import EVENT_CODE, PRODUCT_EVENT_TYPES
from ubp_pipeline.models.next_event_transformer import NextEventTransformer, NextEventTransformerConfig

SMALL_OVERRIDES = {"max_epochs": 3}  # the CPU size, a short recipe
SMALL = BLOCKS["next_event"].build(SMALL_OVERRIDES).config


@pytest.fixture(scope="module")
def trained(tiny_sequences, runtime):
    embedder = BLOCKS["next_event"].build(SMALL_OVERRIDES)
    return embedder, embedder.fit(tiny_sequences["train"], runtime)


def clients_with_product_events(folder) -> np.ndarray:
    sequences = SequenceInput.load(folder).sequences
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    has_product = np.isin(sequences.event_type, [EVENT_CODE[t] for t in PRODUCT_EVENT_TYPES])
    return sequences.client_ids[np.unique(owner[has_product])]


@pytest.mark.parametrize("folder", ["train", "later"])
def test_vectors_only_for_users_with_product_events(trained, tiny_sequences, runtime, folder):
    embedder, fitted = trained
    embeddings = embedder.embed(fitted, tiny_sequences[folder], runtime)
    expected = clients_with_product_events(tiny_sequences[folder])
    assert 0 < len(expected) < len(SequenceInput.load(tiny_sequences[folder]).sequences)  # some users are left out
    np.testing.assert_array_equal(embeddings.client_ids, expected)
    assert embeddings.vectors.shape == (len(expected), SMALL.d_model)
    assert embeddings.vectors.dtype == np.float32
    assert np.isfinite(embeddings.vectors).all()
    assert embeddings.vectors.std(axis=0).min() > 0


def test_every_predicted_field_beats_its_marginal(trained):
    """Planted users keep to a few favourite categories and a price level, so the history tells the next category
    and price bucket far better than the most frequent one; the event type must at least clear the check's margin."""
    _, fitted = trained
    verdicts = {v.field: v for v in field_verdicts(fitted.history, fitted.config["best_epoch"])}
    assert set(verdicts) == {"category", "event_type", "price"}
    assert all(v.learned for v in verdicts.values()), verdicts
    assert verdicts["category"].accuracy > verdicts["category"].majority + 0.15
    assert verdicts["price"].accuracy > verdicts["price"].majority + 0.1


def test_a_users_vector_does_not_depend_on_its_batch(trained, tiny_sequences):
    """Right padding under causal attention: a user's last real position never sees the padding after it."""
    _, fitted = trained
    net = load_net_weights(NextEventTransformer(NextEventTransformerConfig(**fitted.config["net"])), fitted.state)
    data = SequenceInput.load(tiny_sequences["train"])
    _, tokens = product_event_tokens(data, data.token_space(), SMALL.max_len, SMALL.input_fields)
    order = np.argsort(-tokens.lengths)
    rows = order[[0, len(order) // 4, len(order) // 2, -1]]

    def last_states(rows: np.ndarray) -> torch.Tensor:
        batch, lengths = tokens.padded(rows)
        return net(batch)[torch.arange(len(rows)), lengths - 1]

    with torch.no_grad():
        together = last_states(rows)
        alone = torch.cat([last_states(rows[i : i + 1]) for i in range(len(rows))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_next_sku_block_learns_the_next_sku_and_embeds_what_it_read(tiny_sequences, runtime):
    """The same transformer configured to read and predict skus: planted users return to a few favourite skus and
    buy what they carted, so the next sku beats the most frequent one; the stored model embeds with its own fields."""
    embedder = BLOCKS["next_sku"].build(SMALL_OVERRIDES)
    fitted = embedder.fit(tiny_sequences["train"], runtime)
    verdicts = {v.field: v for v in field_verdicts(fitted.history, fitted.config["best_epoch"])}
    assert set(verdicts) == {"sku", "category"}
    assert all(v.learned for v in verdicts.values()), verdicts
    assert verdicts["sku"].accuracy > 2 * verdicts["sku"].majority
    assert fitted.config["net"]["fields"][0] == "sku"
    embeddings = embedder.embed(fitted, tiny_sequences["later"], runtime)
    np.testing.assert_array_equal(embeddings.client_ids, clients_with_product_events(tiny_sequences["later"]))
    assert np.isfinite(embeddings.vectors).all() and embeddings.vectors.std(axis=0).min() > 0
