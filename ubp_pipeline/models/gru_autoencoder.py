"""A GRU sequence autoencoder over multi-field events: the encoder's final state is the user vector.

Every event is a tuple of token ids, one per field (event type, category, sku, ...); each field has its own
embedding table of the same width and an event's embedding is the sum over its fields. The encoder GRU reads the
events oldest first; the last layer's hidden state after each user's last event is the user vector. The decoder GRU
starts from the encoder's state (all layers) and reconstructs the sequence with teacher forcing: at step t it reads
the previous event (a learned BOS vector at step 0) plus the user vector, and one linear head per field predicts
event t. Which fields take part is configuration, so the method's variants (day + event type,
event/category/price/sku/url, the same plus weeks ago) are one model.

Batches are right-padded (batch, T, n_fields) token ids with their lengths. A step never depends on later steps, so
everything up to a row's length is exactly what a packed sequence would compute; the encoder's state is read at each
row's last real step, layer by layer. (Packed GRUs are avoided on purpose: on CPU their backward pass costs time
quadratic in the number of steps, 13x a padded one at 128 steps.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PAD = 0  # the token id of padding in every field (ubp_pipeline.core.sequences.vocabulary.PAD)


@dataclass
class GRUAutoencoderNetConfig:
    fields: tuple[str, ...]  # in token-column order (a list, not a dict: the order must survive JSON with sorted keys)
    vocabulary_sizes: tuple[int, ...]  # per field, the number of token ids, specials included
    embedding_dim: int = 128
    hidden_dim: int = 128
    layers: int = 1
    dropout: float = 0.1


class GRUAutoencoderNet(nn.Module):
    def __init__(self, config: GRUAutoencoderNetConfig):
        super().__init__()
        self.config = config
        dim, hidden = config.embedding_dim, config.hidden_dim
        sizes = dict(zip(config.fields, config.vocabulary_sizes, strict=True))
        self.embeddings = nn.ModuleDict({f: nn.Embedding(n, dim, padding_idx=PAD) for f, n in sizes.items()})
        self.bos = nn.Parameter(torch.randn(dim) * 0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(
            nn.GRU(dim if i == 0 else hidden, hidden, batch_first=True) for i in range(config.layers)
        )
        between_layers = config.dropout if config.layers > 1 else 0.0
        self.decoder = nn.GRU(dim, hidden, config.layers, batch_first=True, dropout=between_layers)
        self.user_to_input = nn.Identity() if hidden == dim else nn.Linear(hidden, dim)
        self.heads = nn.ModuleDict({f: nn.Linear(hidden, n) for f, n in sizes.items()})

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the field embeddings of token ids (..., n_fields) -> (..., embedding_dim)."""
        return sum(table(tokens[..., i]) for i, table in enumerate(self.embeddings.values()))

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Every encoder layer's hidden state after each row's last real event: (layers, batch, hidden)."""
        last = (torch.arange(len(tokens), device=tokens.device), lengths.to(tokens.device) - 1)
        x, states = self.embed(tokens), []
        for layer in self.encoder:
            x, _ = layer(self.dropout(x))
            states.append(x[last])
        return torch.stack(states)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors (batch, hidden), decoder outputs (batch, T, hidden)); outputs past a row's length are junk."""
        state = self.encode(tokens, lengths)
        user = state[-1]
        previous = torch.cat([self.bos.expand(len(tokens), 1, -1), self.embed(tokens[:, :-1])], dim=1)
        outputs, _ = self.decoder(self.dropout(previous + self.user_to_input(user)[:, None]), state)
        return user, outputs

    def logits(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per field, the logits of the event each decoder output reconstructs."""
        return {f: head(outputs) for f, head in self.heads.items()}
