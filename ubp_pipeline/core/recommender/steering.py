"""Steer SASRec's recommendations through SAE features: push the hidden state along a feature's decoder direction.

The edit is made at the SAE's layer and only at the **last position**. Recommendations are read from the last
position alone, so that is where a request like "more Drama now" belongs; the earlier positions keep encoding what
the user actually did, so later attention blocks still see the true history (when the SAE sits after the last
block, editing earlier positions could not change the scores anyway).

Strength is in activation units: ``add`` moves the hidden state by ``strength`` along the unit-norm decoder column
(as if the feature fired ``strength`` more), ``clamp`` sets the feature's activation to ``strength`` and leaves the
SAE's reconstruction error in place. The report expresses strengths as multiples of the feature's largest activation
seen in the annotation data, so "1x" means "as strongly as this feature ever fires on real histories".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.recommender.annotation import MIN_FIRES, reliable_features
from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import HiddenEdit, evaluate_full_ranking, recommend_top_k, sasrec_scorer
from ubp_pipeline.models.sae import TopKSAE
from ubp_pipeline.models.sasrec import SASRec


@dataclass(frozen=True)
class Steering:
    feature: int
    strength: float
    mode: Literal["add", "clamp"] = "add"


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


def steering_edit(sae: TopKSAE, layer: int, steering: Steering) -> HiddenEdit:
    """The hidden-state edit at the SAE's ``layer``, last position only (see the module docstring)."""
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


def recommend(
    model: SASRec,
    sequences: ItemSequences,
    user_id: int | str,
    *,
    k: int = 10,
    sae: TopKSAE | None = None,
    layer: int | None = None,
    steering: Steering | None = None,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """The ``k`` best unseen items for one user (raw id) after their whole history, optionally steered; one row per
    item with its raw id, name and every attribute's values."""
    position = np.searchsorted(sequences.user_ids, user_id)
    if position >= sequences.n_users or sequences.user_ids[position] != user_id:
        raise KeyError(f"user {user_id!r} has no sequence")
    if steering is not None and (sae is None or layer is None):
        raise ValueError("steering needs the SAE and the layer it reads")
    edit = None if steering is None else steering_edit(sae, layer, steering)
    items = recommend_top_k(sasrec_scorer(model, edit), sequences, np.array([position]), k, device)[0]
    frame = pd.DataFrame(
        {"rank": np.arange(1, k + 1), "item_id": sequences.item_ids[items - 1], "name": sequences.item_names[items]}
    )
    for name, attribute in sequences.attributes.items():
        frame[name] = attribute.describe(items)
    return frame


def steering_report(
    model: SASRec,
    sae: TopKSAE,
    layer: int,
    annotations: pd.DataFrame,
    sequences: ItemSequences,
    *,
    n_features: int = 5,
    min_fires: int = MIN_FIRES,
    strength_multiples: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
    users: np.ndarray | None = None,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """For the ``n_features`` most monosemantic reliable features with distinct labels, one row per strength (a
    multiple of the feature's max activation): the mean share of top-10 recommendations carrying the label's value
    before and after steering, and the leave-one-out NDCG@10 on ``sequences`` (target = each user's last item)
    before and after.

    Top-10 lists come from the same histories as the NDCG, so share and cost describe the same recommendations.
    """
    users = np.arange(sequences.n_users) if users is None else users
    histories = sequences.drop_last(1)

    def measure(edit: HiddenEdit | None) -> tuple[np.ndarray, float]:
        scorer = sasrec_scorer(model, edit)
        top = recommend_top_k(scorer, histories, users, 10, device)
        return top, evaluate_full_ranking(scorer, sequences, device=device, users=users)["ndcg@10"]

    top_before, ndcg_before = measure(None)
    features = reliable_features(annotations, min_fires).drop_duplicates("label").head(n_features)
    rows = []
    for feature in features.itertuples():
        has_value = sequences.has_value(feature.label)
        for multiple in strength_multiples:
            steering = Steering(int(feature.feature), multiple * float(feature.max_activation))
            top, ndcg = measure(steering_edit(sae, layer, steering))
            rows.append(
                {
                    "feature": steering.feature,
                    "label": feature.label,
                    "monosemanticity": feature.monosemanticity,
                    "strength_multiple": multiple,
                    "strength": steering.strength,
                    "share_before": has_value[top_before].mean(),
                    "share_after": has_value[top].mean(),
                    "ndcg@10_before": ndcg_before,
                    "ndcg@10_after": ndcg,
                }
            )
    report = pd.DataFrame(rows)
    report["share_ratio"] = report["share_after"] / report["share_before"]
    report["ndcg_cost"] = report["ndcg@10_before"] - report["ndcg@10_after"]
    return report
