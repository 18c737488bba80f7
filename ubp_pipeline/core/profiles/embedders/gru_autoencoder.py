"""The GRU sequence autoencoder as an embedder: learn to reconstruct each user's event sequence through one vector.

Training is length-bucketed (a batch is padded only to its own longest user), the output heads see only real events,
and early stopping watches held-out users. The method's variants differ only in the fields they read and reconstruct;
the block registry names them.
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
from ubp_pipeline.models.gru_autoencoder import GRUAutoencoderNet, GRUAutoencoderNetConfig

PRODUCT_FIELDS = ("event_type", "category", "price", "sku", "url")


@dataclass(frozen=True)
class GRUAutoencoderConfig:
    """The CPU size: 1 layer, 128 wide, 1,000-token vocabularies. The registry's ``gpu_params`` give the method's
    size on CUDA (512 wide, 3 layers, 5,000-token vocabularies)."""

    fields: tuple[str, ...] = PRODUCT_FIELDS
    vocabulary_limit: int = 1_000  # most frequent skus / urls / categories with their own token (the method: 5000)
    embedding_dim: int = 128
    hidden_dim: int = 128
    layers: int = 1
    dropout: float = 0.1
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)
    inference_batch_size: int = 2048


@dataclass
class ReconstructionObjective:
    """Sum over fields of the cross-entropy of every real event, predicted by the decoder from the user vector."""

    tokens: RaggedTokens
    fields: tuple[str, ...]
    device: torch.device
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = self.tokens.lengths

    def __call__(self, model: GRUAutoencoderNet, rows: np.ndarray) -> BatchOutcome:
        tokens, lengths = self.tokens.padded(rows)
        tokens, lengths = tokens.to(self.device), lengths.to(self.device)
        _, outputs = model(tokens, lengths)
        real = torch.arange(tokens.shape[1], device=self.device) < lengths[:, None]
        columns = {f: i for i, f in enumerate(self.fields)}
        return classification_outcome(model.logits(outputs[real]), tokens[real], columns)

    def target_tokens(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        events = self.tokens.events(rows).numpy()
        return {f: events[:, i] for i, f in enumerate(self.fields)}


def ragged_tokens(data: SequenceInput, space: TokenSpace, fields: tuple[str, ...]) -> RaggedTokens:
    return RaggedTokens.from_fields(space.tokenize(data.sequences, data.as_of_day, fields), data.sequences.offsets)


class GRUAutoencoderEmbedder(Embedder):
    """User vector = the last encoder layer's final hidden state (``hidden_dim`` wide)."""

    config_class = GRUAutoencoderConfig
    config: GRUAutoencoderConfig

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        data = SequenceInput.load(folder)
        space = data.token_space().most_frequent(self.config.vocabulary_limit)
        fields = tuple(self.config.fields)
        net_config = GRUAutoencoderNetConfig(
            fields=fields,
            vocabulary_sizes=tuple(space.size(f) for f in fields),
            embedding_dim=self.config.embedding_dim,
            hidden_dim=self.config.hidden_dim,
            layers=self.config.layers,
            dropout=self.config.dropout,
        )
        torch.manual_seed(runtime.seed)
        net = GRUAutoencoderNet(net_config).to(runtime.device)
        objective = ReconstructionObjective(ragged_tokens(data, space, fields), fields, runtime.device)
        trained = train_with_early_stopping(net, objective, self.config.recipe, runtime, on_epoch, "gru_autoencoder")
        return fitted_embedder(self.config, net, net_config, space, folder, trained, runtime)

    @torch.no_grad()
    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        net_config = GRUAutoencoderNetConfig(**fitted.config["net"])
        net = load_net_weights(GRUAutoencoderNet(net_config), fitted.state).to(runtime.device)
        space = token_space_of(fitted.state, fitted.config["lookback_days"])
        data = SequenceInput.load(folder)
        tokens = ragged_tokens(data, space, tuple(net_config.fields))
        vectors = np.empty((len(tokens), net_config.hidden_dim), dtype=np.float32)
        for rows in length_batches(tokens.lengths, self.config.inference_batch_size):
            batch, lengths = tokens.padded(rows)
            with runtime.autocast():
                state = net.encode(batch.to(runtime.device), lengths)
            vectors[rows] = state[-1].float().cpu().numpy()
        return Embeddings(client_ids=data.sequences.client_ids, vectors=vectors)
