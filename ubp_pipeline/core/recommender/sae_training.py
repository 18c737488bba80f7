"""Collect one SASRec layer's hidden states, train a TopK SAE on them, and measure how faithful the SAE is.

Faithfulness is measured twice: on the states themselves (explained variance, L0, dead latents) and downstream, by
splicing the reconstruction back into SASRec and ranking as usual. The downstream figure is normalised by what
replacing the layer with its mean costs, so "keeps 95 %" means 95 % of what that layer contributes to NDCG@10.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory, progress_bar
from ubp_pipeline.core.recommender.hidden_edits import mean_ablation, sae_splice
from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import evaluate_full_ranking, sasrec_scorer
from ubp_pipeline.models.sae import SAEConfig, TopKSAE, fraction_of_variance_unexplained, widen_to_coordinates
from ubp_pipeline.models.sasrec import SASRec


@dataclass(frozen=True)
class HiddenStates:
    """One row per training position, i.e. per (item, next item) pair of every training sequence: the hidden state
    after ``layer`` blocks and what the model was looking at there (annotation reads the items, the SAE the states)."""

    layer: int
    states: torch.Tensor
    users: np.ndarray
    positions: np.ndarray
    items: np.ndarray
    next_items: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def select(self, rows: np.ndarray) -> HiddenStates:
        picked = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "layer"}
        return HiddenStates(layer=self.layer, **picked)

    def sample(self, max_rows: int, seed: int = 0) -> HiddenStates:
        """At most ``max_rows`` rows, drawn without replacement and kept in their original order."""
        if len(self) <= max_rows:
            return self
        return self.select(np.sort(np.random.default_rng(seed).choice(len(self), max_rows, replace=False)))

    def split_users(self, holdout_fraction: float, seed: int = 0) -> tuple[HiddenStates, HiddenStates]:
        """(train, holdout) by user, so held-out metrics are on people the SAE never saw."""
        users = np.unique(self.users)
        n_held_out = max(1, round(holdout_fraction * len(users)))
        held_out = np.random.default_rng(seed).choice(users, n_held_out, replace=False)
        in_holdout = np.isin(self.users, held_out)
        return self.select(np.flatnonzero(~in_holdout)), self.select(np.flatnonzero(in_holdout))


@torch.no_grad()
def collect_hidden_states(
    model: SASRec, sequences: ItemSequences, layer: int, device: torch.device, batch_size: int = 256
) -> HiddenStates:
    """Run SASRec (switched to eval mode) over the same windows it was trained on and keep every non-padding input
    position, batch by batch so only real positions are ever held in memory."""
    model.eval()
    width = model.config.max_len + 1
    windows = sequences.windows(width)
    owners, ends = sequences.window_bounds(width)
    inputs, next_items = windows[:, :-1], windows[:, 1:]
    real = inputs != 0
    positions = ends[:, None] - width + np.arange(width - 1)[None, :] - sequences.offsets[owners][:, None]
    states = []
    for rows in np.array_split(np.arange(len(inputs)), max(1, -(-len(inputs) // batch_size))):
        hidden = model.hidden_state(torch.as_tensor(inputs[rows], device=device), layer)
        states.append(hidden[torch.as_tensor(real[rows], device=device)].cpu())
    return HiddenStates(
        layer=layer,
        states=torch.cat(states),
        users=np.broadcast_to(owners[:, None], real.shape)[real],
        positions=positions[real],
        items=inputs[real],
        next_items=next_items[real],
    )


# share of the original NDCG@10 that mean-ablation must cost for "share of that loss recovered" to mean something
MIN_ABLATION_LOSS = 0.05
PRE_BIAS_SAMPLE = 32_768  # tokens whose geometric median initialises b_pre (as in Gao et al.'s trainer)


@dataclass
class SAETrainingConfig:
    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 1e-3
    dead_window_tokens: int = 20_000  # a latent that has not fired for this many tokens gets the AuxK loss


@dataclass(frozen=True)
class TrainedSAE:
    sae: TopKSAE
    history: TrainingHistory
    seconds: float
    tokens_per_second: float


def train_sae(
    states: torch.Tensor,
    sae_config: SAEConfig,
    config: SAETrainingConfig,
    runtime: TorchRuntime,
    callback: EpochCallback | None = None,
) -> TrainedSAE:
    """Adam on FVU + AuxK over shuffled token batches; decoder columns are re-normalised after every step. The history
    records per epoch the token-weighted mean FVU and AuxK FVU and ``dead``, the share of latents silent for the last
    ``dead_window_tokens`` tokens."""
    device = runtime.device
    generator = torch.Generator().manual_seed(runtime.seed)
    sae = TopKSAE(sae_config).to(device)
    sample = states[torch.randperm(len(states), generator=generator)[:PRE_BIAS_SAMPLE]]
    sae.initialize_pre_bias_(sample.to(device))
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.learning_rate)
    tokens_since_fired = torch.zeros(sae_config.n_latents, dtype=torch.long, device=device)

    history = TrainingHistory()
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        totals = {"fvu": 0.0, "aux_fvu": 0.0}
        batches = torch.randperm(len(states), generator=generator).split(config.batch_size)
        for batch in progress_bar(batches, f"sae epoch {epoch}", total=len(batches)):
            x = states[batch].to(device)
            loss, parts, latents = sae.loss(x, dead=tokens_since_fired >= config.dead_window_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_gradient_()
            optimizer.step()
            sae.normalize_decoder_()
            tokens_since_fired += len(batch)
            tokens_since_fired[(latents > 0).any(0)] = 0
            for name, value in parts.items():
                totals[name] += value * len(batch)
        dead = (tokens_since_fired >= config.dead_window_tokens).float().mean().item()
        history.record(epoch, {**{name: total / len(states) for name, total in totals.items()}, "dead": dead}, callback)
    seconds = time.perf_counter() - started
    sae.eval()
    tokens_per_second = len(states) * config.epochs / seconds
    return TrainedSAE(sae=sae, history=history, seconds=seconds, tokens_per_second=tokens_per_second)


def train_channel_sae(
    states: torch.Tensor,
    first: int,
    sae_config: SAEConfig,
    config: SAETrainingConfig,
    runtime: TorchRuntime,
) -> TrainedSAE:
    """A TopK SAE on the coordinates ``first:`` of the states only (``sae_config.d_in`` of them), e.g. the attribute
    coordinates that end SASRec's output, returned widened to the whole state (``widen_to_coordinates``: steer and
    annotate it like any SAE, but measure its reconstruction on those coordinates only)."""
    trained = train_sae(states[:, first:].contiguous(), sae_config, config, runtime)
    wide = widen_to_coordinates(trained.sae, states.shape[1], first, states[:, :first].mean(0))
    return replace(trained, sae=wide)


@torch.no_grad()
def firing_rates(sae: TopKSAE, states: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Per latent, the share of the tokens ``states`` on which it fires (is non-zero); NaN without tokens."""
    if not len(states):
        return torch.full((sae.config.n_latents,), float("nan"))
    device = sae.pre_bias.device
    counts = torch.zeros(sae.config.n_latents, dtype=torch.long, device=device)
    for batch in states.split(batch_size):
        counts += (sae.encode(batch.to(device)) != 0).sum(0)
    return counts.cpu() / len(states)


@torch.no_grad()
def evaluate_sae(
    sae: TopKSAE, states: torch.Tensor, training_states: torch.Tensor | None = None, batch_size: int = 4096
) -> dict[str, float]:
    """explained_variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over all given tokens (mean taken over
    them); l0 = mean number of non-zero latents per token; dead_fraction = share of latents that are zero on every
    one of these tokens (the window is this token set, reported as ``tokens``).

    A rare latent is silent on a small token set without being dead, so with ``training_states`` two yardsticks
    come along: dead_on_training_tokens, the share of latents that fire on none of the training tokens (the final
    SAE on all of them), and silent_fraction_expected, the share expected to be silent on these tokens if they were
    independent draws at each latent's firing rate on the training tokens: the mean over latents of
    (1 - rate)^tokens, where latents dead on the training tokens count as silent. dead_fraction near it means rare
    rather than dead. Tokens of one user are correlated, so fewer independent draws: if anything the expectation
    understates chance silence."""
    device = sae.pre_bias.device
    reconstructions, nonzero, fired = [], 0, torch.zeros(sae.config.n_latents, dtype=torch.bool, device=device)
    for batch in states.split(batch_size):
        latents = sae.encode(batch.to(device))
        reconstructions.append(sae.decode(latents).cpu())
        nonzero += int((latents != 0).sum())
        fired |= (latents != 0).any(0)
    fvu = fraction_of_variance_unexplained(states, torch.cat(reconstructions)).item()
    measured = {
        "explained_variance": 1.0 - fvu,
        "l0": nonzero / len(states),
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "tokens": float(len(states)),
    }
    if training_states is not None:
        rates = firing_rates(sae, training_states, batch_size).double()
        measured["dead_on_training_tokens"] = (rates == 0).double().mean().item() if len(training_states) else math.nan
        measured["silent_fraction_expected"] = (1.0 - rates).pow(len(states)).mean().item()
    return measured


def splice_fidelity(
    model: SASRec, sae: TopKSAE, states: HiddenStates, sequences: ItemSequences, device: torch.device
) -> dict[str, float]:
    """NDCG@10/HR@10 of the original model, with the SAE spliced in, and with the layer mean-ablated, plus
    ndcg_recovered = (NDCG_sae - NDCG_ablate) / (NDCG_orig - NDCG_ablate): NaN (undefined) when mean-ablating the
    layer costs nothing, because then there is no loss to recover and any ratio would be noise over noise."""
    runs = {
        "original": sasrec_scorer(model),
        "sae": sasrec_scorer(model, sae_splice(sae, states.layer)),
        "mean_ablated": sasrec_scorer(model, mean_ablation(states.states.mean(0), states.layer)),
    }
    result = {}
    for name, scorer in runs.items():
        metrics = evaluate_full_ranking(scorer, sequences, device=device)
        result[f"ndcg@10_{name}"], result[f"hr@10_{name}"] = metrics["ndcg@10"], metrics["hr@10"]
    lost_by_ablation = result["ndcg@10_original"] - result["ndcg@10_mean_ablated"]
    recovered = result["ndcg@10_sae"] - result["ndcg@10_mean_ablated"]
    meaningful = lost_by_ablation > MIN_ABLATION_LOSS * result["ndcg@10_original"]
    result["ndcg_recovered"] = recovered / lost_by_ablation if meaningful else float("nan")
    return result
