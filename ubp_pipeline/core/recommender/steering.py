"""Steer SASRec's recommendations through SAE features, with the strength calibrated per feature.

Features differ in scale and in how far their direction is from the scoring head's, so one fixed strength moves
some concepts a lot and others not at all. The report therefore searches, per feature, the smallest strength (a
multiple of the feature's largest activation on the annotation data: "1x" = as strongly as it ever fires on a real
history) that doubles the share of its label in the top-10, and says what that costs in NDCG@10. The edits
themselves (add along the decoder direction, or clamp the activation) live in ``hidden_edits``.

Which feature steers a label: the one that *writes* it, not the one that reads it. The annotation labels a feature by
the items it fires before; steering needs a feature whose direction raises the label's items' scores. So every
reliable feature's measured effect on the scores is ranked against each label (``output_aurocs``) and a label is
steered by the feature with the highest AUROC (``select_by="output"``; "annotation" takes the most monosemantic
feature carrying the label). ``output_readability`` asks the same of every feature and hidden dimension: how many
write a single attribute value.

One feature may raise only a cluster of a label's items and push out the rest. The ``writers`` mode steers a label
by every feature assigned to it instead: each reliable feature goes to the steered label its effect separates best
(however weakly), and the feature chosen for a label joins it too; their writes are averaged and added at the last
position, in multiples of that mean write (1x = the mean write, shorter than any one write when they differ).

Next to them the report measures two references. ``label_bias`` adds the same bonus to the score of every item that
carries the label: not an edit of the hidden state, but it tells a weak feature (steering costs far more than the
bonus) from a demanding target (the bonus costs as much). ``concept_direction`` is one direction of SASRec's output
chosen for the label: the one whose effect on the scores best fits that bonus (least squares over the item vectors),
added at the last position. A feature that misses the target where this direction reaches it is a weak feature;
when the direction misses too, the item vectors hardly express the concept. It is a yardstick, not a bound: a
feature edits the stream before the final norm (or is clamped), and a least-squares fit is not the top-10 target,
so a feature can beat it on a label.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from ubp_pipeline.core.recommender.annotation import MIN_FIRES, reliable_features
from ubp_pipeline.core.recommender.hidden_edits import Mode, Steering, shift_edit, steering_edit
from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import Scorer, evaluate_and_recommend, sasrec_scorer
from ubp_pipeline.models.sae import TopKSAE
from ubp_pipeline.models.sasrec import SASRec

# multiples of a feature's largest activation tried in turn: the first that reaches the target share is reported
STRENGTH_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
REFINE_STEPS = 4  # then halvings (geometric) of the gap below the first grid multiple that reached the target
# the reference modes (module docstring); their strength is in units of the spread of a user's SASRec scores
LABEL_BIAS, CONCEPT_DIRECTION = "label_bias", "concept_direction"
REFERENCES = (LABEL_BIAS, CONCEPT_DIRECTION)
WRITERS = "writers"  # the features assigned to the label, together (module docstring)
SelectBy = Literal["output", "annotation"]
STEERING_COLUMNS = [
    "feature", "n_features", "label", "monosemanticity", "output_auroc", "mode", "strength_multiple", "strength",
    "share_before", "share_after", "reached_target", "ndcg@10_before", "ndcg@10_after", "share_ratio", "ndcg_cost",
    "relative_ndcg_cost",
]  # fmt: skip


def resolve_feature(
    annotations: pd.DataFrame, feature: int | str, min_fires: int = MIN_FIRES, report: pd.DataFrame | None = None
) -> int:
    """A feature index as given (``12`` or ``"12"``), or for a label such as ``genre:Drama`` the feature the steering
    ``report`` steered it by (the one that writes it), else the most monosemantic reliable feature carrying it."""
    if isinstance(feature, (int, np.integer)) or feature.isdigit():
        return int(feature)
    steered = pd.DataFrame() if report is None else report[(report["label"] == feature) & ~report["mode"].isin(REFERENCES)]
    if not steered.empty:
        return int(steered["feature"].iloc[0])
    reliable = reliable_features(annotations, min_fires)
    labelled = reliable[reliable["label"] == feature]
    if labelled.empty:
        labels = sorted(reliable["label"].unique())
        raise KeyError(f"no feature that fired at least {min_fires} times is labelled {feature!r}; labels: {labels}")
    return int(labelled["feature"].iloc[0])


def steering_report(
    model: SASRec,
    sae: TopKSAE,
    layer: int,
    annotations: pd.DataFrame,
    sequences: ItemSequences,
    *,
    n_features: int | None = None,
    min_fires: int = MIN_FIRES,
    strength_grid: tuple[float, ...] = STRENGTH_GRID,
    modes: tuple[Mode | str, ...] = ("add", "clamp", LABEL_BIAS),
    target_ratio: float = 2.0,
    refine_steps: int = REFINE_STEPS,
    select_by: SelectBy = "output",
    users: np.ndarray | None = None,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """For each label of the reliable features (at most ``n_features`` labels, most monosemantic first; None = all),
    steered by the feature ``select_by`` chooses (module docstring), in each mode: the smallest multiple of
    ``strength_grid`` that lifts the label's share of the top-10 lists to ``target_ratio`` x its share before (at
    least ``target_ratio`` / 10, at most 1: a label absent from every list must reach two items in ten), narrowed by
    ``refine_steps`` bisections towards the grid multiple below it, or the largest multiple when none does. One row
    per label and mode: the feature, its output AUROC for the label, share before and after, NDCG@10 on ``sequences``
    (target = each user's last item) before and after, and the relative NDCG cost. ``label_bias`` and
    ``concept_direction`` rows are the references (module docstring); their unit is the median over users of their
    SASRec scores' deviation.

    Top-10 lists come from the same histories as the NDCG, so share and cost describe the same recommendations.
    """
    users = np.arange(sequences.n_users) if users is None else users

    def measure(scorer: Scorer) -> tuple[np.ndarray, float]:
        metrics, top = evaluate_and_recommend(scorer, sequences, users, device)
        return top, metrics["ndcg@10"]

    plain = sasrec_scorer(model)
    top_before, ndcg_before = measure(plain)
    spread = score_spread(model, sequences, users, device)
    reliable = reliable_features(annotations, min_fires)
    labels = reliable.drop_duplicates("label")["label"].head(n_features).tolist()
    writes = feature_writes(sae, reliable)
    aurocs = output_aurocs(model, layer, writes, list(reliable["feature"]), labels, sequences, users, device)
    by_feature = reliable.set_index("feature")
    chosen = [
        aurocs[label].idxmax() if select_by == "output" else reliable[reliable["label"] == label]["feature"].iloc[0]
        for label in labels
    ]
    best_written = aurocs.idxmax(axis=1)  # per feature, the steered label its effect separates best: its group
    write_of = dict(zip(reliable["feature"], writes, strict=True))
    rows = []
    for (label, feature_index), mode in itertools.product(zip(labels, chosen, strict=True), modes):
        feature = by_feature.loc[feature_index]
        has_value = sequences.has_value(label)
        share_before = has_value[top_before].mean()
        target = min(target_ratio * max(share_before, 0.1), 1.0)  # 0.1: one item in ten
        group = sorted({feature_index, *best_written.index[best_written == label]}) if mode == WRITERS else []
        unit = spread if mode in REFERENCES else 1.0 if mode == WRITERS else float(feature.max_activation)
        direction = None
        if mode == CONCEPT_DIRECTION:
            direction = concept_direction(model, has_value)
        elif mode == WRITERS:
            direction = torch.stack([write_of[member] for member in group]).mean(0)
        multiple, top, ndcg = smallest_reaching(  # called at once: the closures see this iteration's values
            lambda multiple: measure(  # noqa: B023
                _steered(model, sae, layer, feature_index, mode, multiple * unit, has_value, direction, device)  # noqa: B023
            ),
            lambda top: has_value[top].mean() >= target,  # noqa: B023
            strength_grid,
            refine_steps,
        )
        share_after = has_value[top].mean()
        rows.append(
            {
                "feature": int(feature_index),
                "n_features": 0 if mode in REFERENCES else len(group) if mode == WRITERS else 1,
                "label": label,
                "monosemanticity": feature.monosemanticity,
                "output_auroc": aurocs.loc[feature_index, label],
                "mode": mode,
                "strength_multiple": multiple,
                "strength": multiple * unit,
                "share_before": share_before,
                "share_after": share_after,
                "reached_target": share_after >= target,
                "ndcg@10_before": ndcg_before,
                "ndcg@10_after": ndcg,
            }
        )
    report = pd.DataFrame(rows, columns=STEERING_COLUMNS[:-3])
    report["share_ratio"] = report["share_after"] / report["share_before"].where(report["share_before"] > 0)
    report["ndcg_cost"] = report["ndcg@10_before"] - report["ndcg@10_after"]
    report["relative_ndcg_cost"] = report["ndcg_cost"] / report["ndcg@10_before"].where(report["ndcg@10_before"] > 0)
    return report


@torch.no_grad()
def feature_writes(sae: TopKSAE, features: pd.DataFrame) -> torch.Tensor:
    """(n, d_model): what each feature of ``features`` (columns feature, max_activation) adds to the hidden state
    when it fires at its largest activation."""
    strengths = torch.tensor(features["max_activation"].to_numpy(dtype=np.float32))
    return sae.decoder[:, features["feature"].to_list()].T * strengths.to(sae.decoder.device)[:, None]


@torch.no_grad()
def output_aurocs(
    model: SASRec,
    layer: int,
    writes: torch.Tensor,
    names: list,
    labels: list[str],
    sequences: ItemSequences,
    users: np.ndarray,
    device: torch.device,
) -> pd.DataFrame:
    """(``names`` x labels): how well what each row of ``writes`` (n, d_model) does to the scores separates a label's
    items. A row is added at the last position of ``layer`` (an SAE feature: its decoder column times its largest
    activation); its effect is the mean change of (up to 256 of) ``users``' item scores, and its AUROC for a label
    scores that effect against "the item carries the label" over all items."""
    histories = _sample_histories(sequences, users, device)
    plain = sasrec_scorer(model)(histories)[:, 1:]
    carries = {label: sequences.has_value(label)[1:] for label in labels}
    table = {}
    for name, vector in zip(names, writes.to(device), strict=True):
        effect = (sasrec_scorer(model, shift_edit(layer, vector))(histories)[:, 1:] - plain).mean(0).cpu().numpy()
        table[name] = [roc_auc_score(carries[label], effect) for label in labels]
    return pd.DataFrame.from_dict(table, orient="index", columns=labels)


SINGLE_CONCEPT_OUTPUT_AUROC = 0.8


def output_readability(
    model: SASRec,
    sae: TopKSAE,
    layer: int,
    sae_features: pd.DataFrame,
    hidden_dimensions: pd.DataFrame,
    sequences: ItemSequences,
    *,
    min_fires: int = MIN_FIRES,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """Readability of what features write, beside the annotation's of what they read: per family (``sae``, ``hidden``),
    over its reliable features, the median of the best output AUROC over every attribute value, and the share whose
    best reaches 0.8. A hidden dimension's part writes its unit direction (negated for the negative part) at its
    largest activation, as an SAE feature writes its decoder column."""
    labels = [
        attribute.key(value)
        for attribute in sequences.attributes.values()
        for value in range(len(attribute.labels))
        if 0 < attribute.table[1:, value].sum() < sequences.n_items
    ]
    width = model.config.d_model
    families = {"sae": reliable_features(sae_features, min_fires), "hidden": reliable_features(hidden_dimensions, min_fires)}
    users = np.arange(sequences.n_users)
    rows = {}
    for family, features in families.items():
        if family == "sae":
            writes = feature_writes(sae, features)
        else:
            parts = features["feature"].to_numpy()
            signs = np.where(parts < width, 1.0, -1.0) * features["max_activation"].to_numpy()
            writes = torch.zeros(len(parts), width)
            writes[np.arange(len(parts)), parts % width] = torch.tensor(signs, dtype=torch.float32)
        best = output_aurocs(model, layer, writes, list(features["feature"]), labels, sequences, users, device).max(axis=1)
        rows[family] = {
            "median_best_output_auroc": float(best.median()),
            f"share_best_output_auroc>={SINGLE_CONCEPT_OUTPUT_AUROC}": float((best >= SINGLE_CONCEPT_OUTPUT_AUROC).mean()),
            "reliable": float(len(features)),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _steered(
    model: SASRec, sae: TopKSAE, layer: int, feature: int, mode: str, strength: float, carries: np.ndarray,
    direction: torch.Tensor | None, device: torch.device,
) -> Scorer:
    """SASRec steered along ``feature`` in ``mode`` at ``strength``; for ``label_bias``, SASRec with ``strength``
    added to the score of every item that ``carries`` the label; for ``concept_direction``, with ``strength`` times
    ``direction`` (the label's ``concept_direction``) added to the output at the last position; for ``writers``,
    with ``strength`` times ``direction`` (the mean write of the label's group) added at ``layer``."""
    if mode == CONCEPT_DIRECTION:
        return sasrec_scorer(model, shift_edit(model.output_layer, strength * direction))
    if mode == WRITERS:
        return sasrec_scorer(model, shift_edit(layer, strength * direction))
    if mode == LABEL_BIAS:
        plain, bonus = sasrec_scorer(model), torch.as_tensor(carries, device=device)
        return lambda histories: plain(histories) + strength * bonus
    return sasrec_scorer(model, steering_edit(sae, layer, Steering(int(feature), strength, mode)))


@torch.no_grad()
def concept_direction(model: SASRec, carries: np.ndarray) -> torch.Tensor:
    """(d_model,): the direction of SASRec's output whose change of the scores (item vectors . direction) best fits,
    in least squares over the items, one point more for every item that ``carries`` (n_items + 1,) the label than
    for the rest, up to a shift of every score alike (which no ranking sees: the item vectors are centred). Added at
    strength s it moves a user's scores by about s x that bonus."""
    vectors = model.item_vectors()[1:].float().cpu()
    bonus = torch.as_tensor(carries[1:], dtype=torch.float32)
    fit = torch.linalg.lstsq(vectors - vectors.mean(0), (bonus - bonus.mean())[:, None]).solution[:, 0]
    return fit.to(model.item_embedding.weight.device)


def smallest_reaching(
    measure_at: Callable[[float], tuple[np.ndarray, float]],
    reached: Callable[[np.ndarray], bool],
    grid: tuple[float, ...],
    refine_steps: int,
) -> tuple[float, np.ndarray, float]:
    """(multiple, top-10 lists, NDCG@10) of the smallest grid multiple whose lists reach the target, then narrowed by
    geometric bisection towards the grid multiple below it: overshooting the target costs NDCG the target does not
    ask for. The largest multiple when none reaches it."""
    below = None
    for multiple in sorted(grid):
        top, ndcg = measure_at(multiple)
        if reached(top):
            break
        below = multiple
    else:
        return multiple, top, ndcg
    best = (multiple, top, ndcg)
    for _ in range(refine_steps if below is not None else 0):
        middle = float(np.sqrt(below * best[0]))
        top, ndcg = measure_at(middle)
        if reached(top):
            best = (middle, top, ndcg)
        else:
            below = middle
    return best


def score_spread(model: SASRec, sequences: ItemSequences, users: np.ndarray, device: torch.device) -> float:
    """The median over (up to 256 of) ``users`` of how far their SASRec item scores spread (standard deviation): the
    unit in which the reference modes' strengths are given, a bonus of 1 moving a score by one typical spread."""
    histories = _sample_histories(sequences, users, device)
    return float(sasrec_scorer(model)(histories)[:, 1:].std(dim=1).median())


def _sample_histories(sequences: ItemSequences, users: np.ndarray, device: torch.device) -> torch.Tensor:
    """The evaluation histories (last item dropped) of up to 256 of ``users``, left-padded: enough to measure how
    scores spread and move, in one batch."""
    histories, sample = sequences.drop_last(1), users[:256]
    return torch.as_tensor(histories.padded(sample, int(histories.lengths[sample].max())), device=device)


def reached_within_cost(report: pd.DataFrame, max_relative_cost: float = 0.1) -> pd.Series:
    """Per row: the label reached its target share at no more than ``max_relative_cost`` relative NDCG loss."""
    return report["reached_target"].astype(bool) & (report["relative_ndcg_cost"] <= max_relative_cost)


def steering_summary(report: pd.DataFrame, max_relative_cost: float = 0.1) -> dict[str, float]:
    """Per mode: how many features were steered, the share of them that reached their target share at no more than
    ``max_relative_cost`` relative NDCG loss, and the median relative cost (NaN figures when nothing was steered)."""
    summary = {}
    for mode, rows in report.groupby("mode"):
        cheap = reached_within_cost(rows, max_relative_cost)
        summary |= {
            f"{mode}_features": float(len(rows)),
            f"{mode}_share_reaching_target_within_{max_relative_cost:.0%}_cost": float(cheap.mean()),
            f"{mode}_median_share_ratio": float(rows["share_ratio"].median()),
            f"{mode}_median_relative_ndcg_cost": float(rows["relative_ndcg_cost"].median()),
        }
    return summary
