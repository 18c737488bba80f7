"""Steer SASRec's recommendations through SAE features, with the strength calibrated per feature.

Features differ in scale and in how far their direction is from the scoring head's, so one fixed strength moves
some concepts a lot and others not at all. The report therefore searches, per feature, the smallest strength (a
multiple of the feature's largest activation on the annotation data: "1x" = as strongly as it ever fires on a real
history) that doubles the share of its label in the top-10, and says what that costs in NDCG@10. The edits
themselves (add along the decoder direction, or clamp the activation) live in ``hidden_edits``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.recommender.annotation import MIN_FIRES, reliable_features
from ubp_pipeline.core.recommender.hidden_edits import HiddenEdit, Mode, Steering, steering_edit
from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import evaluate_and_recommend, sasrec_scorer
from ubp_pipeline.models.sae import TopKSAE
from ubp_pipeline.models.sasrec import SASRec

# multiples of a feature's largest activation tried in turn: the first that reaches the target share is reported
STRENGTH_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
STEERING_COLUMNS = [
    "feature", "label", "monosemanticity", "mode", "strength_multiple", "strength", "share_before", "share_after",
    "reached_target", "ndcg@10_before", "ndcg@10_after", "share_ratio", "ndcg_cost", "relative_ndcg_cost",
]  # fmt: skip


def resolve_feature(annotations: pd.DataFrame, feature: int | str, min_fires: int = MIN_FIRES) -> int:
    """A feature index as given (``12`` or ``"12"``), or for a label such as ``genre:Drama`` the most monosemantic
    reliable feature carrying it."""
    if isinstance(feature, (int, np.integer)) or feature.isdigit():
        return int(feature)
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
    modes: tuple[Mode, ...] = ("add", "clamp"),
    target_ratio: float = 2.0,
    users: np.ndarray | None = None,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """For the most monosemantic reliable feature of each label (at most ``n_features`` labels; None = all), in each
    mode, the smallest multiple of ``strength_grid`` that lifts the label's share of the top-10 lists to
    ``target_ratio`` x its share before (at least ``target_ratio`` / 10, at most 1: a label absent from every list must
    reach two items in ten), or the largest multiple when none does. One row per feature and mode: share before and
    after, NDCG@10 on ``sequences`` (target = each user's last item) before and after, and the relative NDCG cost.

    Top-10 lists come from the same histories as the NDCG, so share and cost describe the same recommendations.
    """
    users = np.arange(sequences.n_users) if users is None else users

    def measure(edit: HiddenEdit | None) -> tuple[np.ndarray, float]:
        metrics, top = evaluate_and_recommend(sasrec_scorer(model, edit), sequences, users, device)
        return top, metrics["ndcg@10"]

    top_before, ndcg_before = measure(None)
    features = reliable_features(annotations, min_fires).drop_duplicates("label").head(n_features)
    rows = []
    for feature, mode in itertools.product(features.itertuples(), modes):
        has_value = sequences.has_value(feature.label)
        share_before = has_value[top_before].mean()
        target = min(target_ratio * max(share_before, 0.1), 1.0)  # 0.1: one item in ten
        for multiple in sorted(strength_grid):
            steering = Steering(int(feature.feature), multiple * float(feature.max_activation), mode)
            top, ndcg = measure(steering_edit(sae, layer, steering))
            share_after = has_value[top].mean()
            if share_after >= target:
                break
        rows.append(
            {
                "feature": steering.feature,
                "label": feature.label,
                "monosemanticity": feature.monosemanticity,
                "mode": mode,
                "strength_multiple": multiple,
                "strength": steering.strength,
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


def steering_summary(report: pd.DataFrame, max_relative_cost: float = 0.1) -> dict[str, float]:
    """Per mode: how many features were steered, the share of them that reached their target share at no more than
    ``max_relative_cost`` relative NDCG loss, and the median relative cost (NaN figures when nothing was steered)."""
    summary = {}
    for mode, rows in report.groupby("mode"):
        cheap = rows["reached_target"].astype(bool) & (rows["relative_ndcg_cost"] <= max_relative_cost)
        summary |= {
            f"{mode}_features": float(len(rows)),
            f"{mode}_share_reaching_target_within_{max_relative_cost:.0%}_cost": float(cheap.mean()),
            f"{mode}_median_share_ratio": float(rows["share_ratio"].median()),
            f"{mode}_median_relative_ndcg_cost": float(rows["relative_ndcg_cost"].median()),
        }
    return summary
