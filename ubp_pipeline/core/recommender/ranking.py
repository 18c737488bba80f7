"""Train SASRec with full-softmax cross-entropy and score any recommender by full-ranking leave-one-out.

A recommender here is a *scorer*: left-padded histories (batch, T) in, one score per item index (batch, n_items + 1)
out. SASRec (optionally with its hidden state edited at one layer) and the popularity baseline are both scorers, so
they are ranked by exactly the same code.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory, progress_bar
from ubp_pipeline.core.recommender.item_sequences import ItemSequences, LeaveOneOutSplit
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HiddenEdit:
    """Replace the residual stream after ``layer`` blocks with ``apply(hidden, items)`` before the rest of SASRec runs:
    the single hook behind SAE splicing, mean-ablation and steering."""

    layer: int
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sasrec_scorer(model: SASRec, edit: HiddenEdit | None = None) -> Scorer:
    """Scores from the last position, reading only the newest ``max_len`` items of each history (the model is switched
    to eval mode: dropout off)."""
    model.eval()

    @torch.no_grad()
    def score(histories: torch.Tensor) -> torch.Tensor:
        items = histories[:, -model.config.max_len :]
        if edit is None:
            output = model(items)
        else:
            output = model.forward_from(edit.apply(model.hidden_state(items, edit.layer), items), items, edit.layer)
        return model.item_scores(output[:, -1])

    return score


def popularity_scorer(train: ItemSequences) -> Scorer:
    """Every user gets the same scores: how often each item occurs in the training sequences."""
    counts = torch.as_tensor(train.item_counts(), dtype=torch.float32)

    def score(histories: torch.Tensor) -> torch.Tensor:
        return counts.to(histories.device).expand(len(histories), -1)

    return score


def _scored_batches(
    scorer: Scorer, histories: ItemSequences, users: np.ndarray, device: torch.device, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(users, scores) per batch with every item already in the user's history set to -inf: recommenders are judged
    on what they would newly show. A repeated item can therefore never be a hit (evaluate repeat-heavy data with
    that in mind)."""
    longest = int(histories.lengths.max())
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        items = torch.as_tensor(histories.padded(batch, longest), device=device)
        scores = scorer(items).clone()
        scores.scatter_(1, items, float("-inf"))
        yield batch, scores


def evaluate_full_ranking(
    scorer: Scorer,
    sequences: ItemSequences,
    *,
    device: torch.device = torch.device("cpu"),
    users: np.ndarray | None = None,
    k: int = 10,
) -> dict[str, float]:
    """HR@k and NDCG@k of predicting each user's last item from the items before it, ranked among all items.

    Rank = number of unseen items scored strictly higher than the target (a target already in the history is
    filtered and never a hit); NDCG@k = 1/log2(rank + 2) when rank < k (one relevant item, so the ideal DCG is 1).
    """
    users = np.arange(sequences.n_users) if users is None else np.asarray(users)
    ranks = []
    for batch, scores in _scored_batches(scorer, sequences.drop_last(1), users, device):
        target = torch.as_tensor(sequences.last_items(batch), device=device)
        target_scores = scores.gather(1, target[:, None])
        rank = (scores > target_scores).sum(1).double()
        ranks.append(rank.masked_fill(target_scores[:, 0] == float("-inf"), float("inf")))
    rank = torch.cat(ranks)
    hit = rank < k
    return {
        f"hr@{k}": hit.double().mean().item(),
        f"ndcg@{k}": torch.where(hit, 1.0 / torch.log2(rank + 2), 0.0).mean().item(),
        "users": float(len(users)),
    }


def recommend_top_k(
    scorer: Scorer, histories: ItemSequences, users: np.ndarray, k: int = 10, device: torch.device = torch.device("cpu")
) -> np.ndarray:
    """The ``k`` best unseen item indices per user (n_users, k), best first, given their full histories."""
    return np.concatenate(
        [scores.topk(k, dim=1).indices.cpu().numpy() for _, scores in _scored_batches(scorer, histories, users, device)]
    )


@dataclass
class SASRecTrainingConfig:
    """Defaults: the recipe measured on MovieLens-100k (bench/bench_recommender.py): small batches and a high
    learning rate reach the best validation NDCG@10 in 10-20 epochs of one pass over every training transition."""

    epochs: int = 40
    batch_size: int = 64  # windows per step
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    valid_users: int | None = 10_000


@dataclass(frozen=True)
class TrainedSASRec:
    """The best epoch's model (eval mode), its history, and wall time of all epochs including validation."""

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
    model = SASRec(model_config).to(device)
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
            real = inputs != 0
            with runtime.autocast():
                logits = model.item_scores(model(inputs)[real])
            loss = F.cross_entropy(logits.float(), targets[real])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        train_seconds += time.perf_counter() - started

        model.eval()
        valid = evaluate_full_ranking(sasrec_scorer(model), split.valid, device=device, users=valid_users)
        metrics = {
            "train_loss": total_loss / len(windows),
            "valid_hr@10": valid["hr@10"],
            "valid_ndcg@10": valid["ndcg@10"],
            "epoch_seconds": time.perf_counter() - started,
        }
        history.record(epoch, metrics, callback)
        if valid["ndcg@10"] > best_ndcg:
            best_ndcg, best_epoch, best_state = valid["ndcg@10"], epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break

    model.load_state_dict(best_state)
    model.eval()
    epochs_run = len(history.epochs)
    return TrainedSASRec(
        model=model,
        history=history,
        best_epoch=best_epoch,
        seconds=sum(history.series("epoch_seconds")),
        tokens_per_second=n_tokens * epochs_run / train_seconds,
    )
