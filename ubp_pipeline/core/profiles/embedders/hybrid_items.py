"""The hybrid_items block: a LightFM-style factorisation of the products a user handled, with item features.

A user is the weighted mean of the (sku, category, price band) feature vectors of their product events, buys
weighing most and older events less (``models/hybrid_factorisation.py``). It is trained on the users with two or
more product events to predict the fields of their newest ones (``target_fraction`` of them) from the older ones, so
the vector says what a user will handle next, sku by sku where the sku is known and through its category and price
where it is rare. The ALS blocks factorise categories or urls alone and reconstruct the past; this one shares
strength between a sku and its features and is trained on the future.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback
from ubp_pipeline.core.profiles.embedders.base import Embedder, Embeddings, FittedEmbedder
from ubp_pipeline.core.profiles.embedders.batching import RaggedTokens, flat_ranges
from ubp_pipeline.core.profiles.embedders.fitted_state import fitted_embedder, load_net_weights, token_space_of
from ubp_pipeline.core.profiles.embedders.next_event import product_event_tokens
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput
from ubp_pipeline.core.profiles.embedders.training import (
    BatchOutcome,
    TrainingRecipe,
    classification_outcome,
    train_with_early_stopping,
)
from ubp_pipeline.core.sequences.vocabulary import FIRST_VALUE
from ubp_pipeline.core.warehouse.events import EVENT_CODE
from ubp_pipeline.models.hybrid_factorisation import HybridFactorisation, HybridFactorisationConfig

WEIGHT_FIELDS = ("event_type", "days_ago")  # read after the item fields, to weigh each event


@dataclass(frozen=True)
class HybridItemsConfig:
    item_fields: tuple[str, ...] = ("sku", "category", "price")
    event_weights: dict[str, float] = field(
        default_factory=lambda: {"product_buy": 3.0, "add_to_cart": 1.0, "remove_from_cart": 0.5}
    )
    half_life_days: float = 28.0  # an event this many days before the cut weighs half as much as one on the day
    target_fraction: float = 0.3  # training: the newest share of a user's product events (at least one) predicted
    vocabulary_limit: int | None = 5_000  # most frequent values of a field with their own token
    max_events: int = 256  # a user's newest product events read
    dims: int = 64
    recipe: TrainingRecipe = field(
        default_factory=lambda: TrainingRecipe(
            learning_rate=3e-3, warmup_steps=20, batch_size=256, max_epochs=10, patience=2, min_steps_per_epoch=20
        )
    )
    inference_batch_size: int = 4096


def event_weights(tokens: RaggedTokens, by_event_type: dict[str, float], half_life_days: float) -> torch.Tensor:
    """Per event (``tokens``' last two columns: ``WEIGHT_FIELDS``): its type's weight, halved every
    ``half_life_days`` before the cut."""
    by_type = np.zeros(FIRST_VALUE + max(EVENT_CODE.values()) + 1, dtype=np.float32)
    for event_type, weight in by_event_type.items():
        by_type[FIRST_VALUE + EVENT_CODE[event_type]] = weight
    event_type, days_ago = tokens.tokens[:, -2].numpy(), tokens.tokens[:, -1].numpy() - FIRST_VALUE
    decay = 0.5 ** (days_ago / half_life_days)
    return torch.from_numpy((by_type[event_type] * decay).astype(np.float32))


@dataclass
class HybridObjective:
    """Cross-entropy of the item fields of each training user's newest events, given the user vector of the older
    ones. ``rows``: the sequences of ``tokens`` that train (two or more events)."""

    fields: tuple[str, ...]  # the item fields: the first columns of ``tokens``
    tokens: RaggedTokens
    weights: torch.Tensor
    rows: np.ndarray
    target_fraction: float
    device: torch.device
    lengths: np.ndarray = field(init=False)  # per row, the events predicted

    def __post_init__(self) -> None:
        total = self.tokens.lengths[self.rows]
        self.lengths = np.clip((total * self.target_fraction).astype(np.int64), 1, total - 1)

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(history events, their row in ``rows``, target events, their row in ``rows``) as flat event indices."""
        starts, targets = self.tokens.offsets[self.rows[rows]], self.lengths[rows]
        history = self.tokens.lengths[self.rows[rows]] - targets
        batch_rows = np.arange(len(rows))
        return (
            flat_ranges(starts, history), np.repeat(batch_rows, history),
            flat_ranges(starts + history, targets), np.repeat(batch_rows, targets),
        )

    def __call__(self, model: HybridFactorisation, rows: np.ndarray) -> BatchOutcome:
        history, history_row, target, target_row = self._split(rows)
        n_items = len(self.fields)
        users = model.user_vectors(
            self.tokens.tokens[history, :n_items].to(self.device), self.weights[history].to(self.device),
            torch.from_numpy(history_row).to(self.device), len(rows),
        )
        logits = model.field_logits(users[torch.from_numpy(target_row).to(self.device)])
        columns = {f: i for i, f in enumerate(self.fields)}
        return classification_outcome(logits, self.tokens.tokens[target, :n_items].to(self.device), columns)

    def target_tokens(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        target = self._split(rows)[2]
        return {f: self.tokens.tokens[target, i].numpy() for i, f in enumerate(self.fields)}


class HybridItemsEmbedder(Embedder):
    """User vector = the weighted mean of the user-side feature vectors of every product event read (``dims`` wide);
    users without product events are left to the profile's fill."""

    config_class = HybridItemsConfig
    config: HybridItemsConfig

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        data = SequenceInput.load(folder)
        space = data.token_space().most_frequent(self.config.vocabulary_limit)
        fields = tuple(self.config.item_fields)
        net_config = HybridFactorisationConfig(fields, tuple(space.size(f) for f in fields), self.config.dims)
        _, tokens = product_event_tokens(data, space, self.config.max_events, fields + WEIGHT_FIELDS)
        torch.manual_seed(runtime.seed)
        net = HybridFactorisation(net_config).to(runtime.device)
        weights = event_weights(tokens, self.config.event_weights, self.config.half_life_days)
        objective = HybridObjective(
            fields, tokens, weights, np.flatnonzero(tokens.lengths >= 2), self.config.target_fraction, runtime.device
        )
        trained = train_with_early_stopping(net, objective, self.config.recipe, runtime, on_epoch, "hybrid_items")
        return fitted_embedder(
            self.config, net, net_config, space, folder, trained, runtime, training_users=len(objective.rows)
        )

    @torch.no_grad()
    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        net_config = HybridFactorisationConfig(**fitted.config["net"])
        net = load_net_weights(HybridFactorisation(net_config), fitted.state).to(runtime.device)
        space = token_space_of(fitted.state, fitted.config["lookback_days"])
        data = SequenceInput.load(folder)
        fields, trained = tuple(net_config.fields), fitted.config["embedder"]  # read events as in training
        users, tokens = product_event_tokens(data, space, trained["max_events"], fields + WEIGHT_FIELDS)
        weights = event_weights(tokens, trained["event_weights"], trained["half_life_days"])
        vectors = np.empty((len(users), net_config.dims), dtype=np.float32)
        for start in range(0, len(users), self.config.inference_batch_size):
            rows = np.arange(start, min(start + self.config.inference_batch_size, len(users)))
            counts = tokens.lengths[rows]
            events = flat_ranges(tokens.offsets[rows], counts)
            owner = torch.from_numpy(np.repeat(np.arange(len(rows)), counts)).to(runtime.device)
            vectors[rows] = net.user_vectors(
                tokens.tokens[events, : len(fields)].to(runtime.device), weights[events].to(runtime.device),
                owner, len(rows),
            ).cpu().numpy()
        return Embeddings(client_ids=data.sequences.client_ids[users], vectors=vectors)
