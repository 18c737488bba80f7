"""The statistics block: SQL features mapped to uniform [0, 1] by quantiles fitted on the training day.

Raw counts and gaps span orders of magnitude and the downstream probe has no input normalisation, so each feature is
replaced by its quantile among the training day's users (scikit-learn's QuantileTransformer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import QuantileTransformer

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory
from ubp_pipeline.core.profiles.embedders.base import Embedder, Embeddings, FittedEmbedder
from ubp_pipeline.core.sequences.stat_features import load_stat_features


@dataclass(frozen=True)
class StatisticsConfig:
    n_quantiles: int = 1_000


class StatisticsEmbedder(Embedder):
    input_asset = "stat_features"
    config_class = StatisticsConfig

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        features = load_stat_features(folder)
        scaler = QuantileTransformer(
            n_quantiles=min(self.config.n_quantiles, len(features.values)), output_distribution="uniform", subsample=None
        )
        scaler.fit(features.values)
        history = TrainingHistory()
        history.record(1, {"users": float(len(features.values))}, on_epoch)
        return FittedEmbedder(
            state={"quantiles": torch.from_numpy(scaler.quantiles_.astype(np.float64))},
            config={**asdict(self.config), "features": list(features.names)},
            history=history,
        )

    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        features = load_stat_features(folder)
        if list(features.names) != fitted.config["features"]:
            raise ValueError(f"{folder}: features {features.names} differ from the fitted {fitted.config['features']}")
        quantiles = fitted.state["quantiles"].numpy()
        scaler = QuantileTransformer(n_quantiles=len(quantiles), output_distribution="uniform")
        scaler.quantiles_ = quantiles
        scaler.references_ = np.linspace(0, 1, len(quantiles))
        scaler.n_features_in_ = quantiles.shape[1]
        return Embeddings(features.client_ids, scaler.transform(features.values).astype(np.float32))
