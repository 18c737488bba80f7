"""SASRec: a causal transformer over a user's item sequence that scores every item as the next one.

Pre-LayerNorm blocks, learned positional embeddings, item embeddings shared by input and output. Batches are
left-padded (item 0), so the newest item always sits in the last position and position embeddings mean "recency".

The residual stream is exposed for interpretability: ``hidden_state(items, layer)`` reads it after ``layer`` blocks
(0 = embeddings, ``n_blocks`` = after the last block, before the final LayerNorm) and ``forward_from(hidden, items,
layer)`` runs the rest of the network from an edited copy of it (SAE reconstructions, mean-ablation, steering).
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


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.d_model, padding_idx=0)
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

    def hidden_state(self, items: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual stream after ``layer`` blocks, (batch, T, d_model), for left-padded ``items`` (batch, T)."""
        positions = torch.arange(self.config.max_len - items.shape[1], self.config.max_len, device=items.device)
        x = self.item_embedding(items) * math.sqrt(self.config.d_model) + self.position_embedding(positions)
        x = self.embedding_dropout(x)
        mask = self.attention_mask(items)
        for block in self.blocks[:layer]:
            x = block(x, mask)
        return x

    def forward_from(self, hidden: torch.Tensor, items: torch.Tensor, layer: int) -> torch.Tensor:
        """Run the blocks after ``layer`` on a (possibly edited) hidden state; returns the normalised output."""
        mask = self.attention_mask(items)
        for block in self.blocks[layer:]:
            hidden = block(hidden, mask)
        return self.final_norm(hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.hidden_state(items, 0), items, 0)

    def item_scores(self, output: torch.Tensor) -> torch.Tensor:
        """Next-item logits over every item index (padding gets -inf) from outputs (..., d_model)."""
        scores = output @ self.item_embedding.weight.T
        scores[..., 0] = float("-inf")
        return scores
