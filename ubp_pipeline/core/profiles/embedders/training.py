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
from ubp_pipeline.core.sequences.vocabulary import ABSENT, PAD

VALIDATION_BATCH_FACTOR = 4  # no gradients to keep: validate in bigger batches


@dataclass(frozen=True)
class BatchOutcome:
    loss: torch.Tensor  # mean over predicted tokens, summed over fields
    logits: dict[str, torch.Tensor]  # per predicted field, (n, vocabulary)
    targets: torch.Tensor  # (n, n_fields) token ids; PAD where nothing is predicted
    columns: dict[str, int]  # predicted field -> its column of ``targets``
    tokens: int  # predicted positions in the batch


def classification_outcome(
    logits: dict[str, torch.Tensor], targets: torch.Tensor, columns: dict[str, int]
) -> BatchOutcome:
    """Summed cross-entropy of per-field logits (n, vocabulary) against token columns of ``targets`` (PAD ignored).
    Every real token counts, "absent" included, as the method trains."""
    loss = sum(F.cross_entropy(logits[f].float(), targets[:, i], ignore_index=PAD) for f, i in columns.items())
    return BatchOutcome(loss, logits, targets, columns, tokens=int((targets[:, 0] != PAD).sum()))


@torch.no_grad()
def field_scores(outcome: BatchOutcome) -> dict[str, tuple[int, float, int]]:
    """Per field: (argmax hits, summed cross-entropy, tokens) over the events the field applies to, with "absent"
    taken out of the prediction too. A category head is judged on product events only: otherwise "absent", the
    right answer on the ~80% of events that are page visits, hides whether it knows anything about categories."""
    scores = {}
    for field, column in outcome.columns.items():
        target = outcome.targets[:, column]
        applies = (target != PAD) & (target != ABSENT)
        logits = outcome.logits[field][applies].float()
        logits[:, ABSENT] = float("-inf")
        hits = int((logits.argmax(-1) == target[applies]).sum())
        scores[field] = (hits, float(F.cross_entropy(logits, target[applies], reduction="sum")), int(applies.sum()))
    return scores


class SequenceObjective(Protocol):
    lengths: np.ndarray  # per row, what batches are bucketed by

    def __call__(self, model: nn.Module, rows: np.ndarray) -> BatchOutcome: ...

    def target_tokens(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TrainingRecipe:
    """How a sequence model is trained, shared by every sequence embedder's config.

    Adam at ``learning_rate`` after a linear warm-up over the first ``warmup_steps`` optimizer steps, the gradient
    norm clipped to ``clip_norm``, and early stopping once the held-out loss has not improved for ``patience``
    epochs. An epoch is one pass over the training users, or as many passes as make ``min_steps_per_epoch``
    optimizer steps: on a few hundred users one pass is a handful of steps, too few to learn anything between two
    validations. Why so careful: measured on a GPU, the method-size multi-field GRU stayed at the majority token on every
    field but event type and time for 15 epochs with lr 2e-3 / batch 256, and learned them all with 5e-4 / 64; an
    unwarmed large step pushes the heads into always predicting the most frequent token, a plateau Adam rarely
    leaves.
    """

    learning_rate: float = 1e-3
    warmup_steps: int = 50
    clip_norm: float = 1.0
    batch_size: int = 64
    max_epochs: int = 3
    patience: int = 1
    validation_fraction: float = 0.05
    min_validation_users: int = 100
    min_steps_per_epoch: int = 50


@dataclass(frozen=True)
class TrainedModel:
    history: TrainingHistory
    best_epoch: int
    seconds: float


def split_rows(
    n_rows: int, validation_fraction: float, seed: int, min_validation_rows: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a random held-out fraction of users, at least ``min_validation_rows`` (but at
    most a quarter) so that small data sets still hold out enough events to judge each field, and one each way."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_valid = max(round(n_rows * validation_fraction), min(min_validation_rows, n_rows // 4))
    n_valid = min(max(1, n_valid), n_rows - 1)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def field_baselines(train: dict[str, np.ndarray], valid: dict[str, np.ndarray]) -> dict[str, float]:
    """The bars to beat, per field, on the ``valid`` tokens the field applies to ("absent" left out, as in
    ``field_scores``): the accuracy of always predicting the most frequent training token (``majority_accuracy_*``)
    and the cross-entropy of predicting the training frequencies, add-one smoothed (``unigram_loss_*``)."""
    baselines = {}
    for field in train:
        seen, held_out = train[field][train[field] != ABSENT], valid[field][valid[field] != ABSENT]
        counts = np.bincount(seen, minlength=int(max(seen.max(initial=0), held_out.max(initial=0))) + 1) + 1.0
        log_p = np.log(counts / counts.sum())
        baselines[f"majority_accuracy_{field}"] = float(np.mean(held_out == counts.argmax())) if len(held_out) else np.nan
        baselines[f"unigram_loss_{field}"] = float(-log_p[held_out].mean()) if len(held_out) else np.nan
    return baselines


LEARNED_MARGIN = 0.05
"""How much better than the marginal a field must be on held-out users to count as learned: 5 % more accuracy than
always predicting the majority token (accuracy >= 1.05 x majority), or 5 % less cross-entropy than predicting the
training frequencies (loss <= 0.95 x unigram). Either shows the user vector carries something about the field that the
marginal does not; a model that learned only the marginal (or nothing) meets neither. Two bars because each misses
a kind of learning: the event type's majority (page visits, ~80 %) is rarely out-voted though its probabilities
sharpen, while a 1,000-way sku head can rank the right sku first more often yet be less well calibrated."""


@dataclass(frozen=True)
class FieldVerdict:
    """Did the model learn this field? Its held-out accuracy and cross-entropy at the kept epoch against the
    majority token's and the unigram's."""

    field: str
    accuracy: float
    majority: float
    loss: float
    unigram: float
    margin: float = LEARNED_MARGIN

    @property
    def learned(self) -> bool:
        return self.accuracy >= (1 + self.margin) * self.majority or self.loss <= (1 - self.margin) * self.unigram

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "accuracy": self.accuracy, "majority_accuracy": self.majority,
            "loss": self.loss, "unigram_loss": self.unigram, "learned": self.learned,
        }


def field_verdicts(history: TrainingHistory, epoch: int, margin: float = LEARNED_MARGIN) -> list[FieldVerdict]:
    """One verdict per predicted field, read off ``epoch``'s row of the curve (the epoch whose weights were kept)."""
    row = next(r for r in history.epochs if r["epoch"] == epoch)
    fields = [k.removeprefix("valid_accuracy_") for k in row if k.startswith("valid_accuracy_")]
    return [
        FieldVerdict(
            f, row[f"valid_accuracy_{f}"], row[f"majority_accuracy_{f}"], row[f"valid_loss_{f}"],
            row[f"unigram_loss_{f}"], margin,
        )
        for f in fields
    ]


def train_with_early_stopping(
    model: nn.Module,
    objective: SequenceObjective,
    recipe: TrainingRecipe,
    runtime: TorchRuntime,
    on_epoch: EpochCallback | None = None,
    description: str = "train",
) -> TrainedModel:
    """Train by ``recipe`` on length-bucketed batches of a user split; leaves the best epoch's weights in ``model``.

    Every epoch records the held-out loss, each field's held-out token accuracy and its majority-token baseline, so
    the curve says field by field whether the model learned more than the marginal.
    Under torchrun each rank trains on its share of the batches with averaged gradients, and every rank validates on
    all held-out users, so all ranks keep identical weights and take the same early-stopping decisions.
    """
    started = time.perf_counter()
    train_rows, valid_rows = split_rows(
        len(objective.lengths), recipe.validation_fraction, runtime.seed, recipe.min_validation_users
    )
    baselines = field_baselines(objective.target_tokens(train_rows), objective.target_tokens(valid_rows))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (recipe.warmup_steps + 1)))
    rng = np.random.default_rng(runtime.seed)
    history = TrainingHistory()
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, recipe.max_epochs + 1):
        epoch_started = time.perf_counter()
        batches = []
        while not batches or len(batches) < recipe.min_steps_per_epoch * runtime.world_size:
            batches += [train_rows[b] for b in length_batches(objective.lengths[train_rows], recipe.batch_size, rng)]
        batches = _this_ranks_share(batches, runtime)
        label = f"{description} epoch {epoch}"
        steps = train_epoch(model, objective, batches, optimizer, warmup, recipe.clip_norm, runtime, label)
        train_seconds = time.perf_counter() - epoch_started
        metrics = {
            "train_loss": steps.loss_sum / steps.tokens,
            **evaluate(model, objective, valid_rows, recipe.batch_size * VALIDATION_BATCH_FACTOR, runtime),
            **baselines,
            "learning_rate": warmup.get_last_lr()[0],
            "gradient_norm_median": steps.gradient_norm_median,
            "train_tokens_per_second": steps.tokens / train_seconds,
            "seconds": time.perf_counter() - epoch_started,
        }
        history.record(epoch, metrics, on_epoch)
        if metrics["valid_loss"] < best_loss:
            best_loss, best_epoch = metrics["valid_loss"], epoch
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        elif epoch - best_epoch >= recipe.patience:
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


@dataclass(frozen=True)
class EpochSteps:
    loss_sum: float  # summed token loss
    tokens: int
    gradient_norm_median: float  # before clipping


def train_epoch(
    model: nn.Module,
    objective: SequenceObjective,
    batches: list[np.ndarray],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    clip_norm: float,
    runtime: TorchRuntime,
    description: str = "train",
) -> EpochSteps:
    """One optimizer step per batch, the gradient norm clipped to ``clip_norm``, the schedule stepped after each.

    A batch's mean loss is weighted by its predicted events over the average batch's events, so every event
    counts the same whichever batch it lands in: length-bucketed batches differ in size by 10x and more, and plain
    per-batch means would favour short users (and lose on the event-weighted validation loss).
    """
    model.train()
    events_per_batch = sum(int(objective.lengths[rows].sum()) for rows in batches) / len(batches)
    loss_sum, token_count, norms = torch.zeros((), device=runtime.device), 0, []
    for rows in progress_bar(batches, description):
        with runtime.autocast():
            outcome = objective(model, rows)
        optimizer.zero_grad(set_to_none=True)
        (outcome.loss * (outcome.tokens / events_per_batch)).backward()
        if runtime.is_distributed:
            _average_gradients(model, runtime)
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
        optimizer.step()
        schedule.step()
        loss_sum += outcome.loss.detach() * outcome.tokens
        token_count += outcome.tokens
    return EpochSteps(float(loss_sum), token_count, float(torch.stack(norms).median()))


@torch.no_grad()
def evaluate(
    model: nn.Module, objective: SequenceObjective, rows: np.ndarray, batch_size: int, runtime: TorchRuntime
) -> dict[str, float]:
    """Over ``rows``: the loss per predicted token, and per field the accuracy and cross-entropy of ``field_scores``."""
    model.eval()
    loss_sum, token_count, totals = 0.0, 0, {}
    for batch in length_batches(objective.lengths[rows], batch_size):
        with runtime.autocast():
            outcome = objective(model, rows[batch])
        loss_sum += float(outcome.loss) * outcome.tokens
        token_count += outcome.tokens
        for field, scores in field_scores(outcome).items():
            totals[field] = [a + b for a, b in zip(totals.get(field, (0, 0.0, 0)), scores, strict=True)]
    metrics = {"valid_loss": loss_sum / token_count}
    for field, (hits, field_loss, tokens) in totals.items():
        metrics[f"valid_accuracy_{field}"] = hits / tokens if tokens else np.nan
        metrics[f"valid_loss_{field}"] = field_loss / tokens if tokens else np.nan
    return metrics
