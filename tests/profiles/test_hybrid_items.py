"""The hybrid_items block (LightFM-style factorisation with item features): real small trainings on the tiny set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.profiles.test_next_event import clients_with_product_events
from ubp_pipeline.core.profiles.embedders.training import field_verdicts
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.models.hybrid_factorisation import HybridFactorisation, HybridFactorisationConfig


@pytest.fixture(scope="module")
def trained(tiny_sequences, runtime):
    embedder = BLOCKS["hybrid_items"].build({"max_epochs": 6})
    return embedder, embedder.fit(tiny_sequences["train"], runtime)


def test_the_newest_products_are_told_from_the_older_ones(trained):
    """Planted users return to a few favourite skus and categories at one price level: the history predicts each
    field of the newest product events far better than the most frequent value."""
    _, fitted = trained
    verdicts = {v.field: v for v in field_verdicts(fitted.history, fitted.config["best_epoch"])}
    assert set(verdicts) == {"sku", "category", "price"}
    assert all(v.learned for v in verdicts.values()), verdicts
    assert verdicts["sku"].accuracy > 2 * verdicts["sku"].majority
    assert verdicts["category"].accuracy > verdicts["category"].majority + 0.15


@pytest.mark.parametrize("folder", ["train", "later"])
def test_every_user_with_product_events_and_only_they_get_a_vector(trained, tiny_sequences, runtime, folder):
    embedder, fitted = trained
    embeddings = embedder.embed(fitted, tiny_sequences[folder], runtime)
    np.testing.assert_array_equal(embeddings.client_ids, clients_with_product_events(tiny_sequences[folder]))
    assert embeddings.vectors.shape[1] == fitted.config["net"]["dims"]
    assert np.isfinite(embeddings.vectors).all() and embeddings.vectors.std(axis=0).min() > 0


def test_a_user_is_the_weighted_mean_of_the_items_they_handled():
    """Two users over hand-set embeddings: the vector is the weight-averaged sum of the item's user-side feature
    vectors, whatever else is in the batch, and a user whose items all weigh nothing is zero."""
    net = HybridFactorisation(HybridFactorisationConfig(("sku", "category"), (5, 4), dims=2))
    with torch.no_grad():
        net.user_features["sku"].weight.copy_(torch.arange(10.0).view(5, 2))
        net.user_features["category"].weight.fill_(1.0)
    tokens = torch.tensor([[3, 3], [4, 3], [3, 3]])
    users = net.user_vectors(tokens, torch.tensor([3.0, 1.0, 0.0]), torch.tensor([0, 0, 1]), n_users=2)
    item_3, item_4 = torch.tensor([7.0, 8.0]), torch.tensor([9.0, 10.0])  # sku row + category row of ones
    torch.testing.assert_close(users[0], (3 * item_3 + item_4) / 4)
    torch.testing.assert_close(users[1], torch.zeros(2))
