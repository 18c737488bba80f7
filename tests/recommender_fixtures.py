"""Tiny synthetic item sequences with a planted rule, and a SASRec trained on them in a few seconds.

Items 1..2h form two halves (``category:left`` = 1..h, ``category:right`` = h+1..2h). Each user stays in one half and
walks it in a fixed cycle (next = successor within the half) but jumps to a random item of the half with probability
``jump``: the next item is mostly predictable from the current one, while every item is about equally popular, so
popularity ranks the target no better than chance.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from ubp_pipeline.core.common.device import TorchRuntime, make_runtime
from ubp_pipeline.core.recommender.item_sequences import (
    ItemSequences,
    LeaveOneOutSplit,
    build_item_sequences,
    leave_one_out,
)
from ubp_pipeline.core.recommender.sae_training import HiddenStates, SAETrainingConfig, collect_hidden_states, train_sae
from ubp_pipeline.core.recommender.sasrec_training import SASRecTrainingConfig, TrainedSASRec, train_sasrec
from ubp_pipeline.models.sae import SAEConfig, TopKSAE
from ubp_pipeline.models.sasrec import SASRecConfig

HALF = 30
LENGTH = 12


def tiny_runtime() -> TorchRuntime:
    """CPU, seeded, one thread: tiny models gain nothing from more, and on a shared machine extra threads only wait."""
    return make_runtime("cpu", seed=0, threads=1)


def planted_sequences(
    n_users: int = 300, half: int = HALF, length: int = LENGTH, jump: float = 0.2, seed: int = 0
) -> ItemSequences:
    rng = np.random.default_rng(seed)
    side = np.arange(n_users) % 2
    increments = np.where(rng.random((n_users, length)) < jump, rng.integers(0, half, (n_users, length)), 1)
    increments[:, 0] = rng.integers(0, half, n_users)
    items = increments.cumsum(axis=1) % half + 1 + side[:, None] * half
    users = np.repeat(np.arange(n_users), length)
    order = np.tile(np.arange(length), n_users)
    sequences = build_item_sequences(users, items.ravel(), order)
    item_ids = np.arange(1, 2 * half + 1)
    return sequences.with_categorical("category", item_ids, np.where(item_ids <= half, "left", "right"))


@cache
def trained_planted_sasrec() -> tuple[LeaveOneOutSplit, TrainedSASRec]:
    """One tiny SASRec per test session (cached), shared by the recommender, SAE and steering tests."""
    split = leave_one_out(planted_sequences())
    runtime = tiny_runtime()
    model_config = SASRecConfig(
        n_items=split.test.n_items, max_len=LENGTH, d_model=32, n_heads=2, n_blocks=1, dropout=0.1
    )
    train_config = SASRecTrainingConfig(epochs=40, batch_size=32, learning_rate=5e-3, patience=8)
    return split, train_sasrec(split, model_config, train_config, runtime)


@cache
def planted_sae() -> tuple[HiddenStates, TopKSAE]:
    """A TopK SAE on the planted SASRec's output of its single block (cached), with the states it was trained on."""
    split, trained = trained_planted_sasrec()
    states = collect_hidden_states(trained.model, split.train, layer=1, device=torch.device("cpu"))
    training = SAETrainingConfig(epochs=15, batch_size=256, learning_rate=3e-3)
    return states, train_sae(states.states, SAEConfig(d_in=32, expansion=4, k=8), training, tiny_runtime()).sae
