"""One user's top-k items from the stored recommender: plain (from the served model, whichever of SASRec, the
baselines and their blend ranked validation users best), steered through SAE features, or explained by them
(`ubp recommend`). Steering and explanations act on SASRec, the model the SAE reads.

A steering request names a feature by index (``37``) or by label (``category:12``: the feature the steering report
steered that label by, the one whose effect on the scores best raises its items; without a report, the most
monosemantic reliable feature with that label) and a strength in multiples of the feature's largest activation on the annotation data, the
scale of the steering report: 1 = "as strongly as this feature ever fires on a real history". Several requests are
applied one after the other at the last position of the SAE's layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.recommender.hidden_edits import Steering, chain_edits, steering_edit
from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import SASREC, Scorer, recommend_top_k, sasrec_scorer
from ubp_pipeline.core.recommender.steering import resolve_feature
from ubp_pipeline.core.recommender.store import (
    STEERING_FILE,
    StoredDictionary,
    load_annotations,
    load_dictionary,
    load_recommender,
    load_steering_report,
)
from ubp_pipeline.core.sequences.user_sequences import SEQUENCES_FILE
from ubp_pipeline.models.sasrec import SASRec

EXPLANATION_COLUMNS = ["rank", "name", "feature", "label", "monosemanticity", "activation", "score_drop"]


@dataclass(frozen=True)
class SteeringRequest:
    feature: str  # an index or a label such as category:12
    multiple: float  # of the feature's max activation

    @classmethod
    def parse(cls, text: str) -> SteeringRequest:
        """``FEATURE=STRENGTH``, e.g. ``category:12=2`` or ``37=0.5``."""
        feature, _, strength = text.rpartition("=")
        try:
            if feature:
                return cls(feature, float(strength))
        except ValueError:
            pass
        raise ValueError(f"expected FEATURE=STRENGTH (e.g. category:12=2 or 37=0.5), got {text!r}")


@dataclass(frozen=True)
class ResolvedSteering:
    steering: Steering
    target: str  # what the request steers toward: the label asked for, or the feature's own label for an index
    label: str  # the feature's annotation: what it reads
    monosemanticity: float
    multiple: float


@dataclass(frozen=True)
class ClientRecommendations:
    client_id: int
    partition: str  # the user_sequences day the history was read from
    model: str  # the model whose lists these are
    served_model: str  # the model that ranked validation users best (what plain requests get)
    history: pd.DataFrame  # the client's known skus, oldest first
    before: pd.DataFrame
    after: pd.DataFrame | None  # None when nothing was steered
    steerings: list[ResolvedSteering]
    explanation: pd.DataFrame | None  # explain_recommendations of the list shown last; None unless asked


def newest_partition(asset_dir: str | Path) -> Path:
    """The newest day folder of a partitioned asset that holds sequences (folder names are ISO days)."""
    days = sorted(folder for folder in Path(asset_dir).glob("????-??-??") if (folder / SEQUENCES_FILE).exists())
    if not days:
        raise FileNotFoundError(f"no user_sequences partition under {asset_dir}")
    return days[-1]


def items_frame(sequences: ItemSequences, items: np.ndarray) -> pd.DataFrame:
    """Item indices as rows a person can read: raw id, name and every attribute's values."""
    frame = pd.DataFrame({"item_id": sequences.item_ids[items - 1], "name": sequences.item_names[items]})
    for name, attribute in sequences.attributes.items():
        frame[name] = attribute.describe(items)
    return frame


def user_position(sequences: ItemSequences, user_id: int | str) -> int:
    """The row of a raw user id in ``sequences``; KeyError when the user has no sequence there."""
    position = int(np.searchsorted(sequences.user_ids, user_id))
    if position >= sequences.n_users or sequences.user_ids[position] != user_id:
        raise KeyError(f"user {user_id!r} has no sequence")
    return position


def recommend(scorer: Scorer, sequences: ItemSequences, user_id: int | str, k: int = 10) -> pd.DataFrame:
    """The ``k`` best items a user has not seen yet, after their whole history, as ranked rows (``items_frame``)."""
    items = recommend_top_k(scorer, sequences, np.array([user_position(sequences, user_id)]), k)[0]
    frame = items_frame(sequences, items)
    frame.insert(0, "rank", np.arange(1, k + 1))
    return frame


def explain_recommendations(
    model: SASRec,
    dictionary: StoredDictionary,
    annotations: pd.DataFrame,
    sequences: ItemSequences,
    position: int,
    items: np.ndarray,
    top_n: int = 3,
) -> pd.DataFrame:
    """Which SAE features put each recommended item where it is: every feature active at the user's last position is
    removed in turn (its activation clamped to 0) and the drop of each item's score recorded. One row per item and
    feature among the ``top_n`` largest positive drops, with the feature's label and monosemanticity."""
    history = torch.as_tensor(sequences.padded(np.array([position]), model.config.max_len))
    with torch.no_grad():
        activations = dictionary.sae.encode(model.hidden_state(history, dictionary.layer)[0, -1])
    scores = {None: sasrec_scorer(model)(history)[0, items]}
    for feature in activations.nonzero()[:, 0].tolist():
        ablated = steering_edit(dictionary.sae, dictionary.layer, Steering(feature, 0.0, "clamp"))
        scores[feature] = sasrec_scorer(model, ablated)(history)[0, items]
    labels = annotations.set_index("feature")
    rows = []
    for rank, item in enumerate(items, start=1):
        drops = {f: float(scores[None][rank - 1] - s[rank - 1]) for f, s in scores.items() if f is not None}
        for feature, drop in sorted(drops.items(), key=lambda pair: -pair[1])[:top_n]:
            if drop <= 0:
                break
            known = feature in labels.index
            rows.append(
                {
                    "rank": rank,
                    "name": sequences.item_names[item],
                    "feature": feature,
                    "label": labels.loc[feature, "label"] if known else "unlabelled",
                    "monosemanticity": float(labels.loc[feature, "monosemanticity"]) if known else float("nan"),
                    "activation": float(activations[feature]),
                    "score_drop": drop,
                }
            )
    return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)


def recommend_for_client(
    model_dir: str | Path,
    dictionary_dir: str | Path,
    annotations_dir: str | Path,
    sequences_dir: str | Path,
    client_id: int,
    requests: list[SteeringRequest],
    *,
    k: int = 10,
    clamp: bool = False,
    explain: bool = False,
    steering_dir: str | Path | None = None,
) -> ClientRecommendations:
    """The client's top-``k`` unseen skus after their history in ``sequences_dir`` from the served model; when
    steering or explaining, from SASRec (the model the SAE reads), and again with every request applied (``clamp``:
    set the feature's activation instead of adding to it). A label is resolved through the steering report in
    ``steering_dir`` when there is one."""
    stored = load_recommender(model_dir)
    sequences = stored.sequences(sequences_dir, min_length=1)
    try:
        position = user_position(sequences, client_id)
    except KeyError:
        raise KeyError(f"client {client_id} has no product event on a sku the model knows in {sequences_dir}") from None

    shown = SASREC if requests or explain else stored.served_model
    before = recommend(stored.scorer(shown), sequences, client_id, k)
    resolved, after, explanation = [], None, None
    if requests or explain:
        dictionary = load_dictionary(dictionary_dir)
        annotations = load_annotations(annotations_dir)
        table = annotations.sae_features.set_index("feature")
        report_file = None if steering_dir is None else Path(steering_dir) / STEERING_FILE
        report = load_steering_report(steering_dir) if report_file is not None and report_file.exists() else None
    for request in requests:
        feature = resolve_feature(annotations.sae_features, request.feature, annotations.min_fires, report)
        if feature not in table.index:
            raise KeyError(f"feature {feature} never fired on the annotation data: nothing to steer by")
        row = table.loc[feature]
        steering = Steering(feature, request.multiple * float(row["max_activation"]), "clamp" if clamp else "add")
        target = row["label"] if request.feature.isdigit() else request.feature
        resolved.append(
            ResolvedSteering(steering, target, row["label"], float(row["monosemanticity"]), request.multiple)
        )
    if resolved:
        edits = chain_edits([steering_edit(dictionary.sae, dictionary.layer, r.steering) for r in resolved])
        after = recommend(sasrec_scorer(stored.model, edits), sequences, client_id, k)
    if explain:
        recommended = (before if after is None else after)["item_id"].to_numpy()
        items = pd.Index(sequences.item_ids).get_indexer(recommended) + 1
        explanation = explain_recommendations(
            stored.model, dictionary, annotations.sae_features, sequences, position, items
        )
    return ClientRecommendations(
        client_id=client_id,
        partition=Path(sequences_dir).name,
        model=shown,
        served_model=stored.served_model,
        history=items_frame(sequences, sequences.sequence(position)),
        before=before,
        after=after,
        steerings=resolved,
        explanation=explanation,
    )
