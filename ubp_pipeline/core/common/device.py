"""Where tensors go: one decision, made once per training or inference call and reported back to the caller."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

DevicePreference = Literal["auto", "cuda", "mps", "cpu"]


@dataclass(frozen=True)
class TorchRuntime:
    """The device a computation runs on, with the precision and seed it was given."""

    device: torch.device
    seed: int
    threads: int
    mixed_precision: bool
    rank: int = 0  # this process's place in a data-parallel group (torchrun); 0 when training alone
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (tensor cores); a no-op elsewhere, where bf16 is slower or unsupported."""
        if self.mixed_precision and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> dict[str, str | int | bool]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return {
            "device": str(self.device),
            "device_name": name,
            "torch_version": torch.__version__,
            "threads": self.threads,
            "seed": self.seed,
            "mixed_precision": self.mixed_precision and self.device.type == "cuda",
            "world_size": self.world_size,
        }


def select_device(preference: DevicePreference = "auto") -> torch.device:
    """cuda when present, else Apple mps, else cpu; an explicit preference that is unavailable is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preference == "auto":
        return torch.device(next(name for name in ("cuda", "mps", "cpu") if available[name]))
    if not available.get(preference, False):
        raise RuntimeError(f"torch device {preference!r} was requested but is not available on this machine")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_runtime(
    preference: DevicePreference = "auto",
    seed: int = 0,
    threads: int = 0,
    mixed_precision: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> TorchRuntime:
    """Pick the device, seed every generator and cap CPU threads (0 = one per available core).

    Every rank of a data-parallel group gets the same seed, so all start from the same weights and batch order.
    """
    device = select_device(preference)
    n_threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n_threads)
    seed_everything(seed)
    return TorchRuntime(device, seed, n_threads, mixed_precision, rank=rank, world_size=world_size)
