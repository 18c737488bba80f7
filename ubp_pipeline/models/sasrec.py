"""SASRec: a causal transformer over a user's item sequence that scores every item as the next one.

Pre-LayerNorm blocks, learned positional embeddings, item vectors shared by input and output. When the model is
given the items' attribute values (genre, category, price band), an item's vector is its own embedding followed by
``attribute_dims`` coordinates that hold the mean of its values' embeddings: items that share a value share those
coordinates, so a rare item starts from what its category says, and the scores of every item carrying a value can
be moved together, by a direction in that subspace that no item's own embedding can offset (steering uses it).
Batches are left-padded (item 0), so the newest item always sits in the last position and position embeddings
mean "recency".

The residual stream is exposed for interpretability: ``hidden_state(items, layer)`` reads it after ``layer`` blocks
(0 = embeddings, ``n_blocks`` = after the last block, before the final LayerNorm, ``output_layer`` = ``n_blocks +
1`` = the normalised output that the item scores read) and ``forward_from(hidden, items, layer)`` runs the rest of
the network from an edited copy of it (SAE reconstructions, mean-ablation, steering). At the output an edit moves
every item's score linearly (by its dot product with the item's vector); before the final LayerNorm a large edit is
squashed back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ubp_pipeline.models.layers import TransformerBlock, init_transformer_weights


@dataclass
class SASRecConfig:
    n_items: int
    max_len: int = 50
    d_model: int = 64
    n_heads: int = 2
    n_blocks: int = 2
    dropout: float = 0.2
    n_attribute_values: int = 0  # attribute values with an embedding of their own; 0 = item ids only
    attribute_slots: int = 0  # the most values one item carries
    attribute_dims: int = 16  # coordinates of an item's vector that hold its values' embeddings (with attributes)

    def __post_init__(self) -> None:
        if self.n_attribute_values and not 0 < self.attribute_dims < self.d_model:
            raise ValueError(f"attribute_dims must lie in (0, d_model = {self.d_model}), got {self.attribute_dims}")


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig, attribute_index: torch.Tensor | None = None):
        """``attribute_index`` (n_items + 1, attribute_slots) int64: the 1-based attribute values each item carries,
        0 in unused slots (``ItemSequences.attribute_index``); left out, it is zeros until ``load_state_dict``."""
        super().__init__()
        self.config = config
        own_dims = config.d_model - config.attribute_dims if config.n_attribute_values else config.d_model
        self.item_embedding = nn.Embedding(config.n_items + 1, own_dims, padding_idx=0)
        if config.n_attribute_values:
            shape = (config.n_items + 1, config.attribute_slots)
            if attribute_index is None:
                attribute_index = torch.zeros(shape, dtype=torch.int64)
            elif tuple(attribute_index.shape) != shape:
                raise ValueError(f"attribute_index has shape {tuple(attribute_index.shape)}, the config says {shape}")
            self.attribute_embedding = nn.Embedding(config.n_attribute_values + 1, config.attribute_dims, padding_idx=0)
            self.register_buffer("attribute_index", attribute_index)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_heads, config.dropout) for _ in range(config.n_blocks)
        )
        self.final_norm = nn.LayerNorm(config.d_model)
        self.apply(init_transformer_weights)

    def attention_mask(self, items: torch.Tensor) -> torch.Tensor:
        """(batch, 1, T, T) bool, True = may attend: causal, never to padding keys. A padding query may see itself so
        its softmax row is never empty (its output is ignored, but NaNs would leak through the residual stream)."""
        length = items.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        real_keys = (items != 0)[:, None, None, :]
        itself = torch.eye(length, dtype=torch.bool, device=items.device)
        return (causal & real_keys) | itself

    @property
    def output_layer(self) -> int:
        """The layer index of the normalised output (module docstring)."""
        return self.config.n_blocks + 1

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer <= self.output_layer:
            raise ValueError(f"layer {layer} is outside 0..{self.output_layer} (embeddings .. normalised output)")

    def hidden_state(self, items: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual stream after ``layer`` blocks, (batch, T, d_model), for left-padded ``items`` (batch, T)."""
        self._check_layer(layer)
        positions = torch.arange(self.config.max_len - items.shape[1], self.config.max_len, device=items.device)
        x = self.item_vectors(items) * math.sqrt(self.config.d_model) + self.position_embedding(positions)
        x = self.embedding_dropout(x)
        mask = self.attention_mask(items)
        for block in self.blocks[:layer]:
            x = block(x, mask)
        return self.final_norm(x) if layer == self.output_layer else x

    def forward_from(self, hidden: torch.Tensor, items: torch.Tensor, layer: int) -> torch.Tensor:
        """Run the blocks after ``layer`` on a (possibly edited) hidden state; returns the normalised output."""
        self._check_layer(layer)
        if layer == self.output_layer:
            return hidden
        mask = self.attention_mask(items)
        for block in self.blocks[layer:]:
            hidden = block(hidden, mask)
        return self.final_norm(hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.hidden_state(items, 0), items, 0)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The vectors of ``items`` (any shape), or of every item index when None; padding's is zero."""
        own = self.item_embedding.weight if items is None else self.item_embedding(items)
        if not self.config.n_attribute_values:
            return own
        values = self.attribute_index if items is None else self.attribute_index[items]
        carried = (values != 0).sum(-1, keepdim=True).clamp(min=1)
        return torch.cat([own, self.attribute_embedding(values).sum(-2) / carried], dim=-1)

    def item_scores(self, output: torch.Tensor) -> torch.Tensor:
        """Next-item logits over every item index (padding gets -inf) from outputs (..., d_model)."""
        scores = output @ self.item_vectors().T
        scores[..., 0] = float("-inf")
        return scores
