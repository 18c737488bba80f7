"""Every edit of SASRec's hidden state in one place: SAE splicing, mean-ablation, steering, and chains of them.

An edit replaces the residual stream after ``layer`` blocks with ``apply(hidden, items)`` before the rest of SASRec
runs (``ranking.sasrec_scorer`` applies it). Steering acts only at the **last position**: recommendations are read
from the last position alone, so that is where a request like "more Drama now" belongs; the earlier positions keep
encoding what the user actually did, so later attention blocks still see the true history.

Steering strength is in activation units: ``add`` moves the hidden state by ``strength`` along the feature's
unit-norm decoder column (as if the feature fired ``strength`` more), ``clamp`` sets the feature's activation to
``strength`` and leaves the SAE's reconstruction error in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ubp_pipeline.models.sae import TopKSAE


@dataclass(frozen=True)
class HiddenEdit:
    """Replace the residual stream after ``layer`` blocks with ``apply(hidden, items)``; hidden is (B, T, d_model),
    items the left-padded (B, T) histories."""

    layer: int
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sae_splice(sae: TopKSAE, layer: int) -> HiddenEdit:
    """The layer's hidden state replaced by its SAE reconstruction at every position."""
    return HiddenEdit(layer, lambda hidden, items: sae(hidden))


def mean_ablation(mean_state: torch.Tensor, layer: int) -> HiddenEdit:
    """The layer's hidden state replaced by its mean over training tokens at every position: the layer says nothing."""
    return HiddenEdit(layer, lambda hidden, items: mean_state.to(hidden.device).expand_as(hidden))


Mode = Literal["add", "clamp"]


@dataclass(frozen=True)
class Steering:
    feature: int
    strength: float
    mode: Mode = "add"


def steering_edit(sae: TopKSAE, layer: int, steering: Steering) -> HiddenEdit:
    """Push the last position along the feature's decoder direction (see the module docstring)."""

    def apply(hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        direction = sae.decoder[:, steering.feature]
        last = hidden[:, -1]
        if steering.mode == "add":
            shift = steering.strength
        else:
            shift = steering.strength - sae.encode(last)[:, steering.feature, None]
        edited = hidden.clone()
        edited[:, -1] = last + shift * direction
        return edited

    return HiddenEdit(layer, apply)


def shift_edit(layer: int, vector: torch.Tensor) -> HiddenEdit:
    """The last position moved by ``vector`` (d_model,): any direction, at any strength, for measuring what it does."""

    def apply(hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        edited = hidden.clone()
        edited[:, -1] = hidden[:, -1] + vector
        return edited

    return HiddenEdit(layer, apply)


def chain_edits(edits: Sequence[HiddenEdit]) -> HiddenEdit:
    """Several edits of the same layer applied one after the other (e.g. more Drama and cheaper at once)."""
    layers = {edit.layer for edit in edits}
    if len(layers) != 1:
        raise ValueError(f"chained edits must share one layer, got {sorted(layers)}")

    def apply(hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        for edit in edits:
            hidden = edit.apply(hidden, items)
        return hidden

    return HiddenEdit(layers.pop(), apply)
