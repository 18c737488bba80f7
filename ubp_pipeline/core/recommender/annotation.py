"""What each SAE feature (or raw hidden dimension) means, measured against known item attributes.

Every token is a position in a training sequence; its *subject item* is the item at that position (``current``) or
the one the user took next (``next``, what the model predicts there). For each feature and each attribute value
(``genre:Drama``, ``category:12``) we compute, with "fires" meaning activation > 0:

* precision P(value | fires), recall P(fires | value), and their F1; F1 over chance, ``(F1 - F1_0) / (1 - F1_0)``
  with ``F1_0`` the F1 of a feature that fires as often but at random (a dense dimension firing on half of all
  tokens scores F1 ~ 0.44 against a value on 40 % of them by chance alone; a sparse one cannot);
* AUROC of the activation as a score for the value (Mann-Whitney form, ties counted half, equal to scikit-learn's
  ``roc_auc_score``; computed for all feature x value pairs in one rank pass instead of one call per pair);
* weighted share: the share of the feature's total activation that falls on tokens with the value, and
  top share: the value's share among the feature's ``top_n`` strongest tokens (what a dashboard would show).

**Monosemanticity** = max over values of the chance-corrected weighted share, ``(share - base) / (1 - base)`` with
``base`` = P(value) over all tokens: 1 when all of a feature's activation lands on one value, 0 when that value gets
no more of it than chance. The best value is the feature's label. Weighting every token by its activation judges a
dense hidden dimension and a sparse SAE latent on the same footing (precision over "firing" tokens would punish a
dimension that is positive on half of all tokens; AUROC and F1 reward features as broad as the value itself; the
top share looks only at a tail that a dense dimension can always make pure). The chance correction lets rare and
common values compete. All of these are reported, so other readings of "monosemantic" can be checked too.

Hidden dimensions are compared by turning each centred dimension into two features, its positive and negative part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.sae_training import HiddenStates
from ubp_pipeline.models.sae import TopKSAE

Subject = Literal["current", "next"]
MIN_FIRES = 100  # a label read off fewer annotation tokens than this is noise, to steer by or to compare
SINGLE_CONCEPT_AUROC = 0.8  # a feature whose activation ranks one attribute value this well is "single-concept"
Encoder = Callable[[torch.Tensor], torch.Tensor]


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Column-wise 1-based ranks, tied values sharing their mean rank (float64)."""
    n = len(values)
    order = values.argsort(dim=0, stable=True)
    ordered = values.gather(0, order)
    index = torch.arange(n, dtype=torch.float64)[:, None].expand_as(ordered)
    starts_group = torch.ones_like(ordered, dtype=torch.bool)
    starts_group[1:] = ordered[1:] != ordered[:-1]
    ends_group = torch.ones_like(ordered, dtype=torch.bool)
    ends_group[:-1] = starts_group[1:]
    first = torch.where(starts_group, index, 0.0).cummax(dim=0).values
    last = torch.where(ends_group, index, float(n)).flip(0).cummin(dim=0).values.flip(0)
    return torch.empty_like(index).scatter_(0, order, (first + last) / 2 + 1)


MIN_VALUE_SHARE = 0.01
"""Below 100 x ``min_value_tokens`` held-out tokens (a small data set), a value that covers this share of them (2
tokens at least) is a candidate label: a fixed count would leave no value to label features with on few tokens."""


def value_threshold(min_tokens: int, n_tokens: int) -> int:
    """The tokens an attribute value must cover to be a candidate label: ``min_tokens``, lowered on few tokens."""
    return min(min_tokens, max(2, int(MIN_VALUE_SHARE * n_tokens)))


def _value_table(sequences: ItemSequences, items: torch.Tensor, min_tokens: int) -> tuple[list[str], torch.Tensor]:
    """Every attribute value carried by at least ``value_threshold(min_tokens, ...)`` of the subject items (and not by
    all of them) as one column of a sparse (n_items + 1, values) 0/1 table, with its ``name:label`` key."""
    min_tokens = value_threshold(min_tokens, len(items))
    attributes = list(sequences.attributes.values())
    if not attributes:
        raise ValueError("the sequences carry no item attributes to annotate features with")
    keys = np.asarray([attribute.key(v) for attribute in attributes for v in range(len(attribute.labels))])
    table = np.concatenate([attribute.table for attribute in attributes], axis=1)
    value_tokens = np.bincount(items.numpy(), minlength=len(table)) @ table
    usable = (value_tokens >= min_tokens) & (value_tokens < len(items))
    if not usable.any():
        raise ValueError(
            f"no attribute value is carried by {min_tokens}+ of the {len(items)} tokens (and not by all): too few "
            "tokens to label features; hold out more users"
        )
    return keys[usable].tolist(), torch.as_tensor(table[:, usable], dtype=torch.float64).to_sparse()


def _per_value(token_matrix: torch.Tensor, items: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sum a (tokens, features) matrix over the tokens whose subject item has each value: (values, features).
    Attributes belong to items, so summing per item first keeps this one small sparse product."""
    per_item = torch.zeros(table.shape[0], token_matrix.shape[1], dtype=torch.float64)
    per_item.index_add_(0, items, token_matrix.double())
    return torch.sparse.mm(table.t(), per_item)


def _encode(encoder: Encoder, states: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([encoder(batch).float().cpu() for batch in states.split(batch_size)])


def _scores_per_value(
    activations: torch.Tensor, items: torch.Tensor, table: torch.Tensor, top_n: int, feature_chunk: int
) -> dict[str, np.ndarray]:
    """(features, values) arrays of every statistic in the module docstring, a chunk of features at a time (ranks
    and indicator matrices are tokens x chunk, so memory stays bounded however many features there are)."""
    n_tokens = len(activations)
    value_tokens = _per_value(torch.ones(n_tokens, 1), items, table)
    names = ("weighted", "top", "precision", "recall", "auroc", "firing_rate")
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for chunk in activations.split(feature_chunk, dim=1):
        scores["weighted"].append(_per_value(chunk, items, table) / chunk.double().sum(0).clamp_min(1e-12))
        fires = (chunk > 0).double()
        scores["firing_rate"].append(fires.mean(0, keepdim=True).expand(table.shape[1], -1))
        hits = _per_value(fires, items, table)
        scores["precision"].append(hits / fires.sum(0).clamp_min(1))
        scores["recall"].append(hits / value_tokens)
        rank_sums = _per_value(average_ranks(chunk), items, table)
        positive_pairs = value_tokens * (n_tokens - value_tokens)
        scores["auroc"].append((rank_sums - value_tokens * (value_tokens + 1) / 2) / positive_pairs)
        strongest = chunk.topk(min(top_n, n_tokens), dim=0)
        in_top = torch.zeros_like(fires).scatter_(0, strongest.indices, (strongest.values > 0).double())
        scores["top"].append(_per_value(in_top, items, table) / in_top.sum(0).clamp_min(1))
    result = {name: torch.cat(parts, dim=1).T.numpy() for name, parts in scores.items()}
    base = (value_tokens / n_tokens).T.numpy()
    result["monosemanticity"] = (result["weighted"] - base) / (1 - base)
    result["top_monosemanticity"] = (result["top"] - base) / (1 - base)
    precision, recall = result["precision"], result["recall"]
    result["f1"] = _f1(precision, recall)
    chance_f1 = _f1(np.broadcast_to(base, precision.shape), result.pop("firing_rate"))
    result["f1_over_chance"] = (result["f1"] - chance_f1) / (1 - chance_f1)
    result["base_rate"] = np.broadcast_to(base, precision.shape)
    return result


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)


def annotate_features(
    encoder: Encoder,
    states: HiddenStates,
    sequences: ItemSequences,
    *,
    names: Callable[[int], str],
    subject: Subject = "next",
    top_n: int = 100,
    max_tokens: int = 50_000,
    min_value_tokens: int = 20,
    n_top_items: int = 5,
    n_top_sequences: int = 3,
    min_item_tokens: int = 5,
    feature_chunk: int = 128,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per live feature (fired on at least one token), most monosemantic first. ``encoder`` maps hidden
    states (rows, d) to non-negative feature activations (rows, features). Statistics use at most ``max_tokens``
    tokens and values carried by at least ``value_threshold(min_value_tokens, tokens)`` of them (rarer values give
    noise, not labels)."""
    states = states.sample(max_tokens, seed)
    activations = _encode(encoder, states.states)
    items = torch.as_tensor(states.next_items if subject == "next" else states.items)
    keys, table = _value_table(sequences, items, min_value_tokens)
    scores = _scores_per_value(activations, items, table, top_n, feature_chunk)

    fires = (activations > 0).sum(0).numpy()
    live = np.flatnonzero(fires > 0)
    label = scores["monosemanticity"][live].argmax(1)
    at_label = ("monosemanticity", "weighted", "top", "base_rate", "precision", "recall", "f1", "auroc")
    annotations = pd.DataFrame(
        {
            "feature": live,
            "name": [names(int(f)) for f in live],
            "subject": subject,
            "label": np.asarray(keys, dtype=object)[label],
            **{name: scores[name][live, label] for name in at_label},
            "best_top_monosemanticity": scores["top_monosemanticity"][live].max(1),
            "best_auroc": scores["auroc"][live].max(1),
            "best_f1": scores["f1"][live].max(1),
            "best_f1_over_chance": scores["f1_over_chance"][live].max(1),
            "fires": fires[live],
            "firing_rate": fires[live] / len(states),
            "mean_activation": activations.sum(0).numpy()[live] / fires[live],
            "max_activation": activations.max(0).values.numpy()[live],
            "activation_histogram": activation_histograms(activations[:, live]),
            "top_items": _top_items(activations[:, live], states, sequences, n_top_items, min_item_tokens),
            "top_sequences": _top_sequences(activations[:, live], states, sequences, n_top_sequences),
        }
    ).rename(columns={"weighted": "weighted_share", "top": "top_share"})
    return annotations.sort_values("monosemanticity", ascending=False, ignore_index=True)


SPARKS = "▁▂▃▄▅▆▇█"


def activation_histograms(activations: torch.Tensor, bins: int = 8) -> list[str]:
    """Per feature (column), how strongly it fires when it fires, readable in a table cell: its non-zero activations
    counted in ``bins`` equal bins from 0 to its largest, each bin a bar scaled to the fullest one (a space: none)."""
    histograms = []
    for column in activations.T:
        fired = column[column > 0]
        counts = torch.histc(fired, bins=bins, min=0.0, max=float(fired.max()))
        levels = torch.ceil(counts / counts.max() * len(SPARKS)).int().tolist()
        histograms.append("".join(SPARKS[level - 1] if level else " " for level in levels))
    return histograms


def _top_items(
    activations: torch.Tensor, states: HiddenStates, sequences: ItemSequences, n: int, min_tokens: int
) -> list[str]:
    """Per feature, the current items with the highest mean activation among items seen at least ``min_tokens``
    times (a single lucky token should not name a feature)."""
    items = torch.as_tensor(states.items)
    sums = torch.zeros(sequences.n_items + 1, activations.shape[1]).index_add_(0, items, activations)
    counts = torch.bincount(items, minlength=sequences.n_items + 1).float()[:, None]
    means = torch.where(counts >= min_tokens, sums / counts.clamp_min(1), float("-inf"))
    top = means.topk(min(n, len(means)), dim=0)
    named = top.values > 0
    return ["; ".join(sequences.item_names[top.indices[named[:, f], f].numpy()]) for f in range(top.indices.shape[1])]


def _top_sequences(activations: torch.Tensor, states: HiddenStates, sequences: ItemSequences, n: int) -> list[str]:
    """Per feature, its strongest tokens as ``user <id> @ <position>: <current item>``."""
    top = activations.topk(min(n, len(activations)), dim=0).indices.T.numpy()
    users = sequences.user_ids[states.users[top]]
    names = sequences.item_names[states.items[top]]
    rows = zip(users, states.positions[top], names)
    return ["; ".join(f"user {u} @ {p}: {i}" for u, p, i in zip(*row)) for row in rows]


def annotate_sae_features(sae: TopKSAE, states: HiddenStates, sequences: ItemSequences, **options) -> pd.DataFrame:
    """``annotate_features`` for the SAE's latents (rows named ``latent <j>``)."""
    device = sae.pre_bias.device
    return annotate_features(
        lambda hidden: sae.encode(hidden.to(device)), states, sequences, names=lambda j: f"latent {j}", **options
    )


def annotate_hidden_dimensions(states: HiddenStates, sequences: ItemSequences, **options) -> pd.DataFrame:
    """The same statistics for the raw hidden state: dimension ``d`` minus its mean, split into a positive part
    (feature ``d``, ``dim <d>+``) and a negative part (feature ``d_model + d``, ``dim <d>-``)."""
    mean = states.states.mean(0)
    width = len(mean)

    def signed_parts(hidden: torch.Tensor) -> torch.Tensor:
        centred = hidden - mean
        return torch.cat([centred.clamp_min(0), (-centred).clamp_min(0)], dim=1)

    def name(feature: int) -> str:
        return f"dim {feature % width}{'+' if feature < width else '-'}"

    return annotate_features(signed_parts, states, sequences, names=name, **options)


def reliable_features(annotations: pd.DataFrame, min_fires: int = MIN_FIRES) -> pd.DataFrame:
    """Features that fired often enough for their label to mean something, most monosemantic first."""
    reliable = annotations[annotations["fires"] >= min_fires]
    return reliable.sort_values(["monosemanticity", "fires"], ascending=False)


def compare_monosemanticity(
    tables: dict[str, pd.DataFrame], threshold: float = 0.3, min_fires: int = MIN_FIRES
) -> pd.DataFrame:
    """One row per feature family (e.g. ``sae``, ``hidden``): live and reliable feature counts, the median of each
    score over the reliable ones, the share of those whose monosemanticity reaches ``threshold`` and the share that
    are single-concept (best AUROC >= 0.8). Features that fired on fewer than ``min_fires`` tokens are left out: one
    lucky token makes any feature look "monosemantic"."""
    rows = {}
    for family, table in tables.items():
        reliable = reliable_features(table, min_fires)
        rows[family] = {
            "live": len(table),
            "reliable": len(reliable),
            "median_monosemanticity": reliable["monosemanticity"].median(),
            f"share_monosemanticity>={threshold}": (reliable["monosemanticity"] >= threshold).mean(),
            "median_best_top_monosemanticity": reliable["best_top_monosemanticity"].median(),
            "median_best_auroc": reliable["best_auroc"].median(),
            "median_best_f1": reliable["best_f1"].median(),
            "median_best_f1_over_chance": reliable["best_f1_over_chance"].median(),
            f"share_single_concept_auroc>={SINGLE_CONCEPT_AUROC}": (
                reliable["best_auroc"] >= SINGLE_CONCEPT_AUROC
            ).mean(),
            "median_label_precision": reliable["precision"].median(),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
