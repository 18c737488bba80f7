"""Train SASRec with full-softmax cross-entropy, keeping the epoch that ranks validation users best.

Small data sets (MovieLens-100k: 943 users) over-fit within a few epochs; three regularisers help there: weight
decay, *item dropout*, which hides a random share of the input items in every batch (they become padding, so no
other position attends to them) while every real position still predicts its next item, and *label smoothing*,
which keeps a share of each target's probability spread over all items so the model stops pushing the logits of
the items it has memorised. The number of epochs is chosen by validation NDCG@10 (early stopping with the best
weights kept). With *weight averaging* the model validated, kept and returned is an exponential moving average of
the weights over the last steps rather than the weights of the last step: small batches at a high learning rate
leave those noisy, and a noisy validation curve makes the epoch choice a matter of luck. With *item attributes* each
item's vector ends with the mean of its attribute values' embeddings (``SASRec``), shared by every item carrying them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory, progress_bar
from ubp_pipeline.core.recommender.item_sequences import PADDING, ItemSequences, LeaveOneOutSplit
from ubp_pipeline.core.recommender.ranking import evaluate_full_ranking, sasrec_scorer
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig


@dataclass
class SASRecTrainingConfig:
    """Defaults: the recipe measured on MovieLens-100k (bench/bench_recommender.py): small batches and a high
    learning rate, epochs of one pass over every training transition. With that bench's label smoothing, weight
    averaging and three blocks the best validation NDCG@10 came at epochs 17-36 of 40 (bench/results/
    sasrec_n_blocks.md); 80 epochs changed nothing with two blocks (sasrec_epochs.md), not tried with three."""

    epochs: int = 40
    batch_size: int = 64  # windows per step
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    item_dropout: float = 0.0  # share of input items hidden from attention in each training batch
    label_smoothing: float = 0.0  # share of each target's probability spread uniformly over all items
    weight_average_decay: float = 0.0  # per step, of the weights' moving average validated and kept; 0 = off
    item_attributes: bool = False  # item vectors end with their values' mean embedding (data without any: plain)
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    valid_users: int | None = 10_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight_average_decay < 1.0:
            raise ValueError(f"weight_average_decay is a decay per step in [0, 1), got {self.weight_average_decay}")


@dataclass(frozen=True)
class TrainedSASRec:
    """The best epoch's model (eval mode; the moving average of the weights when training kept one), its history,
    and wall time of all epochs including validation."""

    model: SASRec
    history: TrainingHistory
    best_epoch: int
    seconds: float
    tokens_per_second: float


def train_sasrec(
    split: LeaveOneOutSplit,
    model_config: SASRecConfig,
    config: SASRecTrainingConfig,
    runtime: TorchRuntime,
    callback: EpochCallback | None = None,
) -> TrainedSASRec:
    """Next-item cross-entropy over all items at every position of every training window; keeps the weights of the
    epoch with the best validation NDCG@10 and stops after ``patience`` epochs without improvement.

    Validation ranks a fixed random sample of ``valid_users`` users (all when None) so an epoch's check stays cheap.
    """
    device = runtime.device
    model = _new_model(model_config, split.train if config.item_attributes else None).to(device)
    averaged = _moving_average(model, config.weight_average_decay)
    validated = model if averaged is None else averaged.module  # the weights each epoch is judged and kept by
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    windows = torch.as_tensor(split.train.windows(model_config.max_len + 1))
    n_tokens = int((windows[:, :-1] != 0).sum())
    rng = np.random.default_rng(runtime.seed)
    valid_users = np.arange(split.valid.n_users)
    if config.valid_users is not None and config.valid_users < len(valid_users):
        valid_users = np.sort(rng.choice(valid_users, config.valid_users, replace=False))

    history = TrainingHistory()
    best_ndcg, best_epoch, best_state = -1.0, 0, None
    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        started, total_loss = time.perf_counter(), 0.0
        order = torch.as_tensor(rng.permutation(len(windows)))
        batches = order.split(config.batch_size)
        for batch in progress_bar(batches, f"sasrec epoch {epoch}", total=len(batches)):
            window = windows[batch].to(device)
            inputs, targets = window[:, :-1], window[:, 1:]
            real = inputs != PADDING
            with runtime.autocast():
                logits = model.item_scores(model(_hide_items(inputs, config.item_dropout))[real])
            # column 0 is padding (-inf), never a target: left out so that smoothing spreads over real items only
            loss = F.cross_entropy(logits[:, 1:].float(), targets[real] - 1, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total_loss += loss.item() * len(batch)
        train_seconds += time.perf_counter() - started

        valid = evaluate_full_ranking(sasrec_scorer(validated), split.valid, device=device, users=valid_users)
        metrics = {
            "train_loss": total_loss / len(windows),
            "valid_hr@10": valid["hr@10"],
            "valid_ndcg@10": valid["ndcg@10"],
            "epoch_seconds": time.perf_counter() - started,
        }
        history.record(epoch, metrics, callback)
        if valid["ndcg@10"] > best_ndcg:
            best_ndcg, best_epoch, best_state = valid["ndcg@10"], epoch, copy.deepcopy(validated.state_dict())
        elif epoch - best_epoch >= config.patience:
            break

    validated.load_state_dict(best_state)
    validated.eval()
    epochs_run = len(history.epochs)
    return TrainedSASRec(
        model=validated,
        history=history,
        best_epoch=best_epoch,
        seconds=sum(history.series("epoch_seconds")),
        tokens_per_second=n_tokens * epochs_run / train_seconds,
    )


def _new_model(model_config: SASRecConfig, attributes_of: ItemSequences | None) -> SASRec:
    """SASRec over the items' ids only, or, given sequences, with the attribute values their items carry."""
    if attributes_of is None or not attributes_of.n_attribute_values:
        return SASRec(model_config)
    index = attributes_of.attribute_index()
    shape = {"n_attribute_values": attributes_of.n_attribute_values, "attribute_slots": index.shape[1]}
    return SASRec(replace(model_config, **shape), torch.as_tensor(index))


def _moving_average(model: SASRec, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights, updated after every step; None when ``decay`` is 0."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None


def _hide_items(inputs: torch.Tensor, share: float) -> torch.Tensor:
    """``inputs`` with a random ``share`` of the items replaced by padding (their positions still predict)."""
    if not share:
        return inputs
    return inputs.masked_fill(torch.rand(inputs.shape, device=inputs.device) < share, PADDING)
