"""The one interface every embedder implements, so one asset factory can train, store and run any of them.

An embedder is fitted on the input folder of one day (its training cutoff) and then embeds the input folder of any
day with the fitted state. The state is plain tensors plus a JSON config, so it is stored as safetensors and reloaded
without pickle; reloading reproduces the embeddings bit for bit on CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory


@dataclass(frozen=True)
class Embeddings:
    """One float32 row per user; rows follow ``client_ids``."""

    client_ids: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.client_ids):
            raise ValueError(f"{len(self.client_ids)} client ids for vectors of shape {self.vectors.shape}")


@dataclass
class FittedEmbedder:
    """What fit() returns: the tensors embed() needs, a JSON-able config, and the per-epoch training curve."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    history: TrainingHistory = field(default_factory=TrainingHistory)


class Embedder(ABC):
    """fit(folder) -> FittedEmbedder; embed(fitted, folder) -> Embeddings. ``folder`` is a daily input partition.

    Hyper-parameters are a frozen dataclass (``config_class``); a block is an embedder class plus such a config.
    """

    #: the daily asset whose partition folder fit() and embed() read
    input_asset: ClassVar[str] = "user_sequences"
    config_class: ClassVar[type]

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder: ...

    @abstractmethod
    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings: ...
