"""The training loop shared by the sequence embedders: length-bucketed batches, a held-out user split, per-field
token accuracy next to the majority-token baseline, and early stopping that restores the best weights.

An embedder supplies an *objective*: the loss and per-field hits of a batch of rows, and the target tokens of any
rows (for the majority baseline). Everything else about training is decided here, once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory, progress_bar
from ubp_pipeline.core.profiles.embedders.batching import length_batches

VALIDATION_BATCH_FACTOR = 4  # no gradients to keep: validate in bigger batches


@dataclass(frozen=True)
class BatchOutcome:
    loss: torch.Tensor  # mean over predicted tokens, summed over fields
    hits: dict[str, torch.Tensor]  # per predicted field: how many argmax predictions were right
    tokens: int  # predicted positions in the batch


def classification_outcome(
    logits: dict[str, torch.Tensor], targets: torch.Tensor, columns: dict[str, int]
) -> BatchOutcome:
    """Summed cross-entropy and argmax hits of per-field logits (n, vocabulary) against token columns of
    ``targets``."""
    loss = sum(F.cross_entropy(logits[f].float(), targets[:, i]) for f, i in columns.items())
    hits = {f: (logits[f].argmax(-1) == targets[:, i]).sum() for f, i in columns.items()}
    return BatchOutcome(loss=loss, hits=hits, tokens=len(targets))


class SequenceObjective(Protocol):
    lengths: np.ndarray  # per row, what batches are bucketed by

    def __call__(self, model: nn.Module, rows: np.ndarray) -> BatchOutcome: ...

    def target_tokens(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


class TrainingSettings(Protocol):
    batch_size: int
    learning_rate: float
    max_epochs: int
    patience: int
    validation_fraction: float


@dataclass(frozen=True)
class TrainedModel:
    history: TrainingHistory
    best_epoch: int
    seconds: float


def split_rows(n_rows: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a random held-out fraction of users, at least one each way."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_valid = min(max(1, round(n_rows * validation_fraction)), n_rows - 1)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def majority_accuracy(train: dict[str, np.ndarray], valid: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy on ``valid`` of always predicting the most frequent training token, per field: the bar to beat."""
    return {f: float(np.mean(valid[f] == np.bincount(train[f]).argmax())) for f in train}


def train_with_early_stopping(
    model: nn.Module,
    objective: SequenceObjective,
    settings: TrainingSettings,
    runtime: TorchRuntime,
    on_epoch: EpochCallback | None = None,
    description: str = "train",
) -> TrainedModel:
    """Adam on length-bucketed batches of a user split; stops after ``patience`` epochs without a better validation
    loss and leaves the best epoch's weights in ``model``.

    Under torchrun each rank trains on its share of the batches with averaged gradients, and every rank validates on
    all held-out users, so all ranks keep identical weights and take the same early-stopping decisions.
    """
    started = time.perf_counter()
    train_rows, valid_rows = split_rows(len(objective.lengths), settings.validation_fraction, runtime.seed)
    baseline = majority_accuracy(objective.target_tokens(train_rows), objective.target_tokens(valid_rows))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(runtime.seed)
    history = TrainingHistory()
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, settings.max_epochs + 1):
        epoch_started = time.perf_counter()
        batches = [train_rows[b] for b in length_batches(objective.lengths[train_rows], settings.batch_size, rng)]
        batches = _this_ranks_share(batches, runtime)
        label = f"{description} epoch {epoch}"
        loss_sum, token_count = train_epoch(model, objective, batches, optimizer, runtime, label)
        train_seconds = time.perf_counter() - epoch_started
        metrics = {
            "train_loss": loss_sum / token_count,
            **evaluate(model, objective, valid_rows, settings.batch_size * VALIDATION_BATCH_FACTOR, runtime),
            **{f"majority_accuracy_{f}": value for f, value in baseline.items()},
            "train_tokens_per_second": token_count / train_seconds,
            "seconds": time.perf_counter() - epoch_started,
        }
        history.record(epoch, metrics, on_epoch)
        if metrics["valid_loss"] < best_loss:
            best_loss, best_epoch = metrics["valid_loss"], epoch
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        elif epoch - best_epoch >= settings.patience:
            break
    if best_state is None:
        raise RuntimeError(f"{description}: the validation loss was never finite ({history.series('valid_loss')})")
    model.load_state_dict(best_state)
    model.eval()
    return TrainedModel(history=history, best_epoch=best_epoch, seconds=time.perf_counter() - started)


def _this_ranks_share(batches: list[np.ndarray], runtime: TorchRuntime) -> list[np.ndarray]:
    """Data parallelism: rank r takes batches r, r + world, ...; every rank takes the same number of batches, since
    each step waits for all ranks' gradients."""
    if not runtime.is_distributed:
        return batches
    usable = len(batches) // runtime.world_size * runtime.world_size
    if usable == 0:
        raise ValueError(f"{len(batches)} training batches cannot be shared by {runtime.world_size} ranks")
    return batches[runtime.rank : usable : runtime.world_size]


def _average_gradients(model: nn.Module, runtime: TorchRuntime) -> None:
    """All-reduce the gradients of every parameter (zeros where unused) and divide by the number of ranks."""
    params = list(model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= runtime.world_size
    offset = 0
    for param in params:
        param.grad = flat[offset : offset + param.numel()].view_as(param).clone()
        offset += param.numel()


def train_epoch(
    model: nn.Module,
    objective: SequenceObjective,
    batches: list[np.ndarray],
    optimizer: torch.optim.Optimizer,
    runtime: TorchRuntime,
    description: str = "train",
) -> tuple[float, int]:
    """One optimizer step per batch; returns (summed token loss, tokens).

    A batch's mean loss is weighted by its predicted events over the average batch's events, so every event
    counts the same whichever batch it lands in: length-bucketed batches differ in size by 10x and more, and plain
    per-batch means would favour short users (and lose on the event-weighted validation loss).
    """
    model.train()
    events_per_batch = sum(int(objective.lengths[rows].sum()) for rows in batches) / len(batches)
    loss_sum, token_count = torch.zeros((), device=runtime.device), 0
    for rows in progress_bar(batches, description):
        with runtime.autocast():
            outcome = objective(model, rows)
        optimizer.zero_grad(set_to_none=True)
        (outcome.loss * (outcome.tokens / events_per_batch)).backward()
        if runtime.is_distributed:
            _average_gradients(model, runtime)
        optimizer.step()
        loss_sum += outcome.loss.detach() * outcome.tokens
        token_count += outcome.tokens
    return float(loss_sum), token_count


@torch.no_grad()
def evaluate(
    model: nn.Module, objective: SequenceObjective, rows: np.ndarray, batch_size: int, runtime: TorchRuntime
) -> dict[str, float]:
    """Validation loss per predicted token and token accuracy per field, over ``rows``."""
    model.eval()
    loss_sum, token_count, hits = 0.0, 0, {}
    for batch in length_batches(objective.lengths[rows], batch_size):
        with runtime.autocast():
            outcome = objective(model, rows[batch])
        loss_sum += float(outcome.loss) * outcome.tokens
        token_count += outcome.tokens
        for field, value in outcome.hits.items():
            hits[field] = hits.get(field, 0) + int(value)
    return {"valid_loss": loss_sum / token_count, **{f"valid_accuracy_{f}": n / token_count for f, n in hits.items()}}
