"""One client's top-k skus from the stored recommender, plain and steered through SAE features (`ubp recommend`).

A steering request names a feature by index (``37``) or by label (``category:12``: the most monosemantic reliable
feature with that label) and a strength in multiples of the feature's largest activation on the annotation data, the
scale of the steering report: 1 = "as strongly as this feature ever fires on a real history". Several requests are
applied one after the other at the last position of the SAE's layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.recommender.item_sequences import ItemSequences
from ubp_pipeline.core.recommender.ranking import HiddenEdit, recommend_top_k, sasrec_scorer
from ubp_pipeline.core.recommender.steering import Steering, resolve_feature, steering_edit
from ubp_pipeline.core.recommender.store import (
    StoredDictionary,
    load_annotations,
    load_dictionary,
    load_recommender,
)
from ubp_pipeline.core.sequences.user_sequences import SEQUENCES_FILE


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
    label: str
    monosemanticity: float
    multiple: float


@dataclass(frozen=True)
class ClientRecommendations:
    client_id: int
    partition: str  # the user_sequences day the history was read from
    history: pd.DataFrame  # the client's known skus, oldest first
    before: pd.DataFrame
    after: pd.DataFrame | None  # None when nothing was steered
    steerings: list[ResolvedSteering]


def newest_partition(asset_dir: str | Path) -> Path:
    """The newest day folder of a partitioned asset that holds sequences (folder names are ISO days)."""
    days = sorted(folder for folder in Path(asset_dir).glob("????-??-??") if (folder / SEQUENCES_FILE).exists())
    if not days:
        raise FileNotFoundError(f"no user_sequences partition under {asset_dir}")
    return days[-1]


def _items_frame(sequences: ItemSequences, items: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"sku": sequences.item_ids[items - 1], "name": sequences.item_names[items]})
    for name, attribute in sequences.attributes.items():
        frame[name] = attribute.describe(items)
    return frame


def _combined_edit(dictionary: StoredDictionary, steerings: list[ResolvedSteering]) -> HiddenEdit:
    edits = [steering_edit(dictionary.sae, dictionary.layer, resolved.steering) for resolved in steerings]

    def apply(hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        for edit in edits:
            hidden = edit.apply(hidden, items)
        return hidden

    return HiddenEdit(dictionary.layer, apply)


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
) -> ClientRecommendations:
    """The client's top-``k`` unseen skus after their history in ``sequences_dir``, and again with every request
    applied (``clamp``: set the feature's activation instead of adding to it)."""
    stored = load_recommender(model_dir)
    sequences = stored.sequences(sequences_dir, min_length=1)
    position = int(np.searchsorted(sequences.user_ids, client_id))
    if position >= sequences.n_users or sequences.user_ids[position] != client_id:
        raise KeyError(f"client {client_id} has no product event on a sku the model knows in {sequences_dir}")
    users = np.array([position])

    def top_k(edit: HiddenEdit | None) -> pd.DataFrame:
        items = recommend_top_k(sasrec_scorer(stored.model, edit), sequences, users, k)[0]
        frame = _items_frame(sequences, items)
        frame.insert(0, "rank", np.arange(1, k + 1))
        return frame

    resolved, after = [], None
    if requests:
        dictionary = load_dictionary(dictionary_dir)
        annotations = load_annotations(annotations_dir)
        table = annotations.sae_features.set_index("feature")
        for request in requests:
            feature = resolve_feature(annotations.sae_features, request.feature, annotations.min_fires)
            if feature not in table.index:
                raise KeyError(f"feature {feature} never fired on the annotation data: nothing to steer by")
            row = table.loc[feature]
            steering = Steering(feature, request.multiple * float(row["max_activation"]), "clamp" if clamp else "add")
            resolved.append(ResolvedSteering(steering, row["label"], float(row["monosemanticity"]), request.multiple))
        after = top_k(_combined_edit(dictionary, resolved))
    return ClientRecommendations(
        client_id=client_id,
        partition=Path(sequences_dir).name,
        history=_items_frame(sequences, sequences.sequence(position)),
        before=top_k(None),
        after=after,
        steerings=resolved,
    )
