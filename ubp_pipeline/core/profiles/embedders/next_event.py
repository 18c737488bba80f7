"""The next-event transformer as an embedder: what a user is likely to put in the cart or buy next, as one vector.

Only product events (add_to_cart, remove_from_cart, product_buy) are read, the last ``max_len`` per user; users
without any are not embedded (the profile imputes them). Users with at least two product events train the model:
at every position it predicts the next event's target fields (by default category, event type and price bucket;
the registry's next_sku block reads and predicts the sku too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback
from ubp_pipeline.core.profiles.embedders.base import Embedder, Embeddings, FittedEmbedder
from ubp_pipeline.core.profiles.embedders.batching import RaggedTokens, length_batches
from ubp_pipeline.core.profiles.embedders.fitted_state import fitted_embedder, load_net_weights, token_space_of
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput, TokenSpace
from ubp_pipeline.core.profiles.embedders.training import (
    BatchOutcome,
    TrainingRecipe,
    classification_outcome,
    train_with_early_stopping,
)
from ubp_pipeline.core.warehouse.events import EVENT_CODE, PRODUCT_EVENT_TYPES
from ubp_pipeline.models.next_event_transformer import NextEventTransformer, NextEventTransformerConfig

_PRODUCT_CODES = [EVENT_CODE[t] for t in PRODUCT_EVENT_TYPES]


@dataclass(frozen=True)
class NextEventConfig:
    """The CPU size; the registry's ``gpu_params`` give the method's (4 layers, 4 heads, width 128) on CUDA."""

    input_fields: tuple[str, ...] = ("category", "event_type", "price", "days_ago")
    target_fields: tuple[str, ...] = ("category", "event_type", "price")  # of the next event, each among the inputs
    vocabulary_limit: int | None = None  # most frequent values of a field with their own token (None: all of them)
    max_len: int = 64
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.1
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)
    inference_batch_size: int = 1024


def product_event_tokens(
    data: SequenceInput, space: TokenSpace, max_len: int, fields: tuple[str, ...]
) -> tuple[np.ndarray, RaggedTokens]:
    """(rows of the users with product events, their last ``max_len`` product events as ``fields`` tokens), users in
    order."""
    sequences = data.sequences
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    product = np.flatnonzero(np.isin(sequences.event_type, _PRODUCT_CODES))
    per_user = np.bincount(owner[product], minlength=len(sequences))
    ends = np.cumsum(per_user)
    kept = product[ends[owner[product]] - np.arange(len(product)) <= max_len]  # 1 = the user's newest product event
    users = np.flatnonzero(per_user)
    offsets = np.concatenate([[0], np.cumsum(np.minimum(per_user[users], max_len))])
    tokens = space.tokenize(sequences, data.as_of_day, fields)
    return users, RaggedTokens.from_fields({f: tokens[f][kept] for f in fields}, offsets)


@dataclass
class NextEventObjective:
    """Summed cross-entropy of the next event's target fields (``targets``: field -> token column) at every position
    that has a next event. Trains on the sequences ``rows`` of ``tokens`` (those with two or more events)."""

    tokens: RaggedTokens
    rows: np.ndarray
    targets: dict[str, int]
    device: torch.device
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = self.tokens.lengths[self.rows]

    def __call__(self, model: NextEventTransformer, rows: np.ndarray) -> BatchOutcome:
        tokens, lengths = self.tokens.padded(self.rows[rows])
        tokens, lengths = tokens.to(self.device), lengths.to(self.device)
        hidden = model(tokens)
        has_next = torch.arange(tokens.shape[1] - 1, device=self.device) < (lengths - 1)[:, None]
        logits = model.next_event_logits(hidden[:, :-1][has_next])
        return classification_outcome(logits, tokens[:, 1:][has_next], self.targets)

    def target_tokens(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        events = self.tokens.events(self.rows[rows], from_step=1).numpy()
        return {f: events[:, i] for f, i in self.targets.items()}


class NextEventEmbedder(Embedder):
    """User vector = the transformer's hidden state at the user's newest product event (``d_model`` wide)."""

    config_class = NextEventConfig
    config: NextEventConfig

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        data = SequenceInput.load(folder)
        space = data.token_space().most_frequent(self.config.vocabulary_limit)
        fields, targets = tuple(self.config.input_fields), tuple(self.config.target_fields)
        net_config = NextEventTransformerConfig(
            fields=fields,
            vocabulary_sizes=tuple(space.size(f) for f in fields),
            target_fields=targets,
            max_len=self.config.max_len,
            d_model=self.config.d_model,
            n_heads=self.config.n_heads,
            n_layers=self.config.n_layers,
            dropout=self.config.dropout,
        )
        _, tokens = product_event_tokens(data, space, self.config.max_len, fields)
        columns = {f: fields.index(f) for f in targets}
        objective = NextEventObjective(tokens, np.flatnonzero(tokens.lengths >= 2), columns, runtime.device)
        torch.manual_seed(runtime.seed)
        net = NextEventTransformer(net_config).to(runtime.device)
        trained = train_with_early_stopping(net, objective, self.config.recipe, runtime, on_epoch, "next_event")
        return fitted_embedder(
            self.config, net, net_config, space, folder, trained, runtime, training_users=len(objective.rows)
        )

    @torch.no_grad()
    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        net_config = NextEventTransformerConfig(**fitted.config["net"])
        net = load_net_weights(NextEventTransformer(net_config), fitted.state).to(runtime.device)
        space = token_space_of(fitted.state, fitted.config["lookback_days"])
        data = SequenceInput.load(folder)
        users, tokens = product_event_tokens(data, space, net_config.max_len, tuple(net_config.fields))
        vectors = np.empty((len(users), net_config.d_model), dtype=np.float32)
        for rows in length_batches(tokens.lengths, self.config.inference_batch_size):
            batch, lengths = tokens.padded(rows)
            with runtime.autocast():
                hidden = net(batch.to(runtime.device))
            last = hidden[torch.arange(len(rows), device=hidden.device), lengths.to(hidden.device) - 1]
            vectors[rows] = last.float().cpu().numpy()
        return Embeddings(client_ids=data.sequences.client_ids[users], vectors=vectors)
