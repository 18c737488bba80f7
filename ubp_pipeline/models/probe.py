"""The RecSys Challenge 2025 downstream MLP: one fixed architecture for every task, so that only the embedding varies.

x(d) -> Linear(d, W) -> LayerNorm -> 3 x [x + Bottleneck(LayerNorm(x))] -> LayerNorm -> Linear(W, out),
Bottleneck = Linear(W, 2W) -> GELU -> Linear(2W, W) (the inverted bottleneck of "Scaling MLPs"); no dropout.
W = 2048 is the official probe; a narrower W gives a quick probe whose numbers must be labelled as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OFFICIAL_WIDTH = 2048
N_RESIDUAL_BLOCKS = 3


@dataclass(frozen=True)
class ProbeNetConfig:
    input_dim: int
    output_dim: int
    width: int = OFFICIAL_WIDTH


class InvertedBottleneck(nn.Module):
    """Widen to 2W, GELU, project back to W: the residual branch of each block."""

    def __init__(self, width: int):
        super().__init__()
        self.expand = nn.Linear(width, 2 * width)
        self.activation = nn.GELU()
        self.project = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.activation(self.expand(x)))


class ProbeNet(nn.Module):
    """Maps an embedding to ``output_dim`` logits (1 for churn/conversion, K for a propensity task)."""

    def __init__(self, config: ProbeNetConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.input_projection = nn.Linear(config.input_dim, width)
        self.input_norm = nn.LayerNorm(width)
        self.block_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(N_RESIDUAL_BLOCKS))
        self.blocks = nn.ModuleList(InvertedBottleneck(width) for _ in range(N_RESIDUAL_BLOCKS))
        self.output_norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, config.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(self.input_projection(x))
        for norm, block in zip(self.block_norms, self.blocks):
            x = x + block(norm(x))
        return self.output(self.output_norm(x))
