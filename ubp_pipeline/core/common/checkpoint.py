"""Model weights as safetensors plus a plain JSON config: loadable without pickle, diffable, atomic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ubp_pipeline.core.common.atomic import atomic_dir

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights and config into ``directory``, replacing any previous checkpoint there in one swap."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return Path(directory)


def load_checkpoint(directory: str | Path) -> Checkpoint:
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"no checkpoint at {directory}: {WEIGHTS_FILE} is missing")
    config = json.loads((directory / CONFIG_FILE).read_text())
    return Checkpoint(state_dict=load_file(str(weights)), config=config)
