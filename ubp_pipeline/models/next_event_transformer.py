"""A causal transformer over a user's product events (cart adds, removals, purchases) that predicts the next one.

Each event enters as the sum of its field embeddings (category, event type, price bucket, days ago) plus a learned
position; the pre-LayerNorm transformer blocks SASRec uses too (``layers.py``), under a causal mask; one head per
predicted field of the *next* event (category, event type, price bucket). The hidden state at a user's last event,
which has read the whole history and is trained to say what comes next, is the user vector.

Batches are right-padded (batch, T, n_fields) token ids. With causal attention a real position only attends to
earlier positions, which are all real, so the causal mask is the whole mask; outputs at padded positions are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ubp_pipeline.models.layers import TransformerBlock, init_transformer_weights


@dataclass
class NextEventTransformerConfig:
    fields: tuple[str, ...]  # input fields in token-column order (a list, not a dict: the order must survive JSON)
    vocabulary_sizes: tuple[int, ...]  # per input field, the number of token ids
    target_fields: tuple[str, ...] = ("category", "event_type", "price")  # predicted for the next event
    max_len: int = 64
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.1


class NextEventTransformer(nn.Module):
    def __init__(self, config: NextEventTransformerConfig):
        super().__init__()
        self.config = config
        sizes = dict(zip(config.fields, config.vocabulary_sizes, strict=True))
        self.embeddings = nn.ModuleDict({f: nn.Embedding(n, config.d_model) for f, n in sizes.items()})
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model)
        self.heads = nn.ModuleDict({f: nn.Linear(config.d_model, sizes[f]) for f in config.target_fields})
        self.apply(init_transformer_weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, T, d_model) of right-padded token ids (batch, T <= max_len, n_fields)."""
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        x = sum(table(tokens[..., i]) for i, table in enumerate(self.embeddings.values()))
        x = self.embedding_dropout(x + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, causal)
        return self.final_norm(x)

    def next_event_logits(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per target field, logits for the event after each position."""
        return {f: head(hidden) for f, head in self.heads.items()}
