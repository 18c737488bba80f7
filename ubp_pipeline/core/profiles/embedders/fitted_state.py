"""How a sequence embedder's fitted state is laid out: the network's weights and the training day's vocabularies,
side by side in one flat dict of tensors, so that embedding any later day tokenizes it exactly as in training."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.profiles.embedders.base import FittedEmbedder
from ubp_pipeline.core.profiles.embedders.tokens import TokenSpace
from ubp_pipeline.core.profiles.embedders.training import TrainedModel
from ubp_pipeline.core.sequences.user_sequences import read_manifest

NET_PREFIX = "net."


def fitted_state(net: nn.Module, space: TokenSpace) -> dict[str, torch.Tensor]:
    weights = {NET_PREFIX + name: t.detach().to("cpu").clone() for name, t in net.state_dict().items()}
    vocabularies = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in space.to_state().items()}
    return {**weights, **vocabularies}


def load_net_weights(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    net.load_state_dict({k[len(NET_PREFIX) :]: v for k, v in state.items() if k.startswith(NET_PREFIX)})
    return net.eval()


def token_space_of(state: dict[str, torch.Tensor], lookback_days: int) -> TokenSpace:
    vocabularies = {k: v.numpy() for k, v in state.items() if not k.startswith(NET_PREFIX)}
    return TokenSpace.from_state(vocabularies, lookback_days)


def training_cutoff(folder: Path) -> str:
    """The as-of day of the sequences a model was trained on: recorded so no one embeds an earlier day with it."""
    return str(read_manifest(folder)["spec"]["as_of"])


def fitted_embedder(
    embedder_config: Any,
    net: nn.Module,
    net_config: Any,
    space: TokenSpace,
    folder: Path,
    trained: TrainedModel,
    runtime: TorchRuntime,
    **extra: Any,
) -> FittedEmbedder:
    """Weights + vocabularies as the state; both configs, the cutoff and how training went as the JSON config."""
    config = {
        "embedder": asdict(embedder_config),
        "net": asdict(net_config),
        "lookback_days": space.lookback_days,
        "trained_as_of": training_cutoff(folder),
        "best_epoch": trained.best_epoch,
        "training_seconds": trained.seconds,
        "runtime": runtime.describe(),
        **extra,
    }
    return FittedEmbedder(state=fitted_state(net, space), config=config, history=trained.history)
