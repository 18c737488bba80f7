"""ALS user factors (implicit library) over weighted user x item interactions: categories bought/carted, urls visited.

The item factors are fitted on the training day; any later day's users are folded in against them (one least-squares
solve per user), so their vectors live in the same space as the training users'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory
from ubp_pipeline.core.profiles.embedders.base import Embedder, Embeddings, FittedEmbedder
from ubp_pipeline.core.profiles.embedders.tokens import SequenceInput, TokenSpace
from ubp_pipeline.core.sequences.vocabulary import FIRST_VALUE
from ubp_pipeline.core.warehouse.events import EVENT_CODE


@dataclass(frozen=True)
class ALSConfig:
    item_field: str = "category"  # "category" or "url" (any vocabulary field)
    event_weights: dict[str, float] = field(default_factory=lambda: {"product_buy": 3.0, "add_to_cart": 1.0})
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0
    iterations: int = 15


class ALSEmbedder(Embedder):
    config_class = ALSConfig

    def _interactions(self, data: SequenceInput, space: TokenSpace) -> tuple[np.ndarray, csr_matrix]:
        """Users with at least one weighted in-vocabulary interaction, and their (users x item tokens) weights."""
        seqs = data.sequences
        weight = np.zeros(len(seqs.event_type), dtype=np.float32)
        for event_type, w in self.config.event_weights.items():
            weight[seqs.event_type == EVENT_CODE[event_type]] = w
        items = space.tokenize(seqs, data.as_of_day, (self.config.item_field,))[self.config.item_field]
        user = np.repeat(np.arange(len(seqs)), seqs.lengths)
        keep = (weight > 0) & (items >= FIRST_VALUE)
        matrix = csr_matrix(
            (weight[keep], (user[keep], items[keep])), shape=(len(seqs), space.size(self.config.item_field))
        )
        active = np.flatnonzero(np.diff(matrix.indptr) > 0)
        return active, matrix[active]

    def _model(self, runtime: TorchRuntime) -> AlternatingLeastSquares:
        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            num_threads=runtime.threads,
            random_state=runtime.seed,
        )

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        data = SequenceInput.load(folder)
        space = data.token_space()
        active, matrix = self._interactions(data, space)
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool underneath only contends
            model = self._model(runtime)
            model.fit(matrix, show_progress=False)
        history = TrainingHistory()
        history.record(1, {"users": float(len(active)), "interactions": float(matrix.nnz)}, on_epoch)
        state = {"item_factors": torch.from_numpy(np.ascontiguousarray(model.item_factors))}
        state |= {k: torch.from_numpy(v) for k, v in space.to_state().items()}
        return FittedEmbedder(state=state, config={**asdict(self.config), "lookback_days": data.lookback_days}, history=history)

    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        data = SequenceInput.load(folder)
        space = TokenSpace.from_state({k: v.numpy() for k, v in fitted.state.items()}, fitted.config["lookback_days"])
        active, matrix = self._interactions(data, space)
        if not len(active):
            return Embeddings(active.astype(np.int64), np.zeros((0, self.config.factors), dtype=np.float32))
        with threadpool_limits(1, "blas"):
            model = self._model(runtime)
            model.item_factors = fitted.state["item_factors"].numpy()
            vectors = model.recalculate_user(np.arange(len(active)), matrix)
        return Embeddings(data.sequences.client_ids[active], np.asarray(vectors, dtype=np.float32))
