"""A LightFM-style hybrid factorisation: users and items are both sums of feature embeddings, scored by dot product.

LightFM represents an item by the sum of its features' vectors (its id, its category, its price band), so that a rare
item borrows from its features, and a user by the sum of theirs. Here a user's features are the items they handled,
each (sku, category, price band) through user-side tables of its own, averaged with weights (event type, recency):
a user never seen in training is embedded by the same formula, without a fold-in solve.

An item's score u . (v_sku + v_category + v_price) + biases is log-linear in its fields, so normalised over every
combination of field values it is a product of one softmax per field: training is one cross-entropy per field, and
each field's accuracy can be judged against its majority value like the sequence models'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class HybridFactorisationConfig:
    fields: tuple[str, ...]  # item feature fields in token-column order
    vocabulary_sizes: tuple[int, ...]  # per field, the number of token ids
    dims: int = 64


class HybridFactorisation(nn.Module):
    def __init__(self, config: HybridFactorisationConfig):
        super().__init__()
        self.config = config
        sizes = dict(zip(config.fields, config.vocabulary_sizes, strict=True))
        self.user_features = nn.ModuleDict({f: nn.Embedding(n, config.dims) for f, n in sizes.items()})
        self.item_features = nn.ModuleDict({f: nn.Embedding(n, config.dims) for f, n in sizes.items()})
        self.item_bias = nn.ParameterDict({f: nn.Parameter(torch.zeros(n)) for f, n in sizes.items()})
        for table in [*self.user_features.values(), *self.item_features.values()]:
            nn.init.normal_(table.weight, std=config.dims**-0.5)

    def user_vectors(
        self, tokens: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n_users: int
    ) -> torch.Tensor:
        """(n_users, dims): the ``weights``-weighted mean over each user's items (``tokens`` (n_items, n_fields), one
        row per handled item; ``owner``: the user of each row, in [0, n_users)) of the sum of the item's user-side
        feature vectors. A user whose items all weigh 0 gets the zero vector."""
        items = sum(table(tokens[:, i]) for i, table in enumerate(self.user_features.values()))
        total = items.new_zeros(n_users, self.config.dims).index_add_(0, owner, items * weights[:, None])
        weight = weights.new_zeros(n_users).index_add_(0, owner, weights)
        return total / weight.clamp_min(1e-12)[:, None]

    def field_logits(self, users: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per field, (n, vocabulary) scores of every value of that field for the users (n, dims)."""
        return {f: users @ table.weight.T + self.item_bias[f] for f, table in self.item_features.items()}
