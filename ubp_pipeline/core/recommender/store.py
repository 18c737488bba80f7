"""The recommender, its SAE dictionary, the annotations and the steering report on disk, each written atomically.

A recommender checkpoint holds everything needed to use it without its training run: SASRec's weights and config,
the baselines' statistics (popularity, item-to-item transitions) and which of the three to serve, the item
vocabulary (item index i = sku ``item_ids[i - 1]``), each item's name and attribute table, the sequence options and
the training day. Any `user_sequences` partition can then be read over the same items.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.common.atomic import atomic_dir, atomic_path
from ubp_pipeline.core.common.checkpoint import load_checkpoint, save_checkpoint
from ubp_pipeline.core.recommender.item_sequences import ItemAttribute, ItemSequences
from ubp_pipeline.core.recommender.ranking import (
    BLEND,
    ITEM_TO_ITEM,
    POPULARITY,
    SASREC,
    ItemToItem,
    Scorer,
    blended_scorer,
    item_to_item_scorer,
    same_for_everyone,
    sasrec_scorer,
)
from ubp_pipeline.core.recommender.sku_sequences import SkuSequenceOptions, sku_sequences_over
from ubp_pipeline.models.sae import SAEConfig, TopKSAE
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

MODEL_PREFIX, ATTRIBUTE_PREFIX, ITEM_IDS = "sasrec.", "attribute.", "item_ids"
TRANSITIONS_KEY, POPULARITY_KEY = "item_to_item.transitions", "item_to_item.popularity"
SAE_FEATURES_FILE, HIDDEN_DIMENSIONS_FILE = "sae_features.parquet", "hidden_dimensions.parquet"
COMPARISON_FILE, ANNOTATION_SETTINGS_FILE = "comparison.parquet", "annotation.json"
COMPARISON_BY_SUBJECT_FILE = "comparison_by_subject.parquet"
STEERING_FILE = "steering.parquet"


@dataclass(frozen=True)
class StoredRecommender:
    model: SASRec
    baselines: ItemToItem
    vocabulary: ItemSequences  # no users: item ids, names and attributes only
    config: dict[str, Any]

    @property
    def served_model(self) -> str:
        """``SASRec``, ``popularity``, ``item-to-item`` or their blend: whichever ranked validation users best."""
        return self.config.get("served_model", SASREC)

    def scorer(self, name: str | None = None) -> Scorer:
        """The scorer of a model by name (default: the served one)."""
        scorers = {
            SASREC: lambda: sasrec_scorer(self.model),
            POPULARITY: lambda: same_for_everyone(self.baselines.popularity),
            ITEM_TO_ITEM: lambda: item_to_item_scorer(self.baselines),
            BLEND: lambda: blended_scorer(self.model, self.baselines),
        }
        name = name or self.served_model
        if name not in scorers:
            raise KeyError(f"no model {name!r}; known: {sorted(scorers)}")
        return scorers[name]()

    @property
    def training_day(self) -> str:
        return self.config["training_day"]

    @property
    def options(self) -> SkuSequenceOptions:
        return SkuSequenceOptions(**self.config["options"])

    def sequences(self, folder: str | Path, min_length: int | None = None) -> ItemSequences:
        """A `user_sequences` partition over this model's items, read with the options it was trained with."""
        options = self.options if min_length is None else dataclasses.replace(self.options, min_length=min_length)
        return sku_sequences_over(folder, self.vocabulary, options)


def save_recommender(
    directory: str | Path, model: SASRec, baselines: ItemToItem, sequences: ItemSequences, config: dict[str, Any]
) -> Path:
    """``config`` must hold ``training_day``, ``options`` (SkuSequenceOptions as a dict) and ``served_model``;
    metrics may ride along."""
    state = {MODEL_PREFIX + name: tensor for name, tensor in model.state_dict().items()}
    state[TRANSITIONS_KEY + ".indices"] = baselines.transitions.indices()
    state[TRANSITIONS_KEY + ".values"] = baselines.transitions.values()
    state[POPULARITY_KEY] = baselines.popularity
    state[ITEM_IDS] = torch.as_tensor(sequences.item_ids.astype(np.int64))
    for name, attribute in sequences.attributes.items():
        state[ATTRIBUTE_PREFIX + name] = torch.as_tensor(attribute.table.astype(np.uint8))
    items = {
        "names": sequences.item_names.tolist(),
        "attributes": {name: list(attribute.labels) for name, attribute in sequences.attributes.items()},
    }
    return save_checkpoint(directory, state, {**config, "sasrec": dataclasses.asdict(model.config), "items": items})


def load_recommender(directory: str | Path, device: torch.device = torch.device("cpu")) -> StoredRecommender:
    checkpoint = load_checkpoint(directory)
    config = checkpoint.config
    model = SASRec(SASRecConfig(**config["sasrec"]))
    model.load_state_dict(
        {name[len(MODEL_PREFIX) :]: t for name, t in checkpoint.state_dict.items() if name.startswith(MODEL_PREFIX)}
    )
    model.to(device).eval()
    attributes = {
        name: ItemAttribute(name, tuple(labels), checkpoint.state_dict[ATTRIBUTE_PREFIX + name].numpy().astype(bool))
        for name, labels in config["items"]["attributes"].items()
    }
    tensors = checkpoint.state_dict
    n = len(tensors[POPULARITY_KEY])
    indices, values = tensors[TRANSITIONS_KEY + ".indices"], tensors[TRANSITIONS_KEY + ".values"]
    transitions = torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=True).coalesce()
    baselines = ItemToItem(transitions=transitions, popularity=tensors[POPULARITY_KEY])
    vocabulary = ItemSequences(
        items=np.zeros(0, np.int64),
        offsets=np.zeros(1, np.int64),
        user_ids=np.zeros(0, np.int64),
        item_ids=checkpoint.state_dict[ITEM_IDS].numpy(),
        item_names=np.asarray(config["items"]["names"], dtype=object),
        attributes=attributes,
    )
    return StoredRecommender(model=model, baselines=baselines, vocabulary=vocabulary, config=config)


@dataclass(frozen=True)
class StoredDictionary:
    sae: TopKSAE
    layer: int
    config: dict[str, Any]


def save_dictionary(directory: str | Path, sae: TopKSAE, layer: int, config: dict[str, Any]) -> Path:
    return save_checkpoint(
        directory, sae.state_dict(), {**config, "sae": dataclasses.asdict(sae.config), "layer": layer}
    )


def load_dictionary(directory: str | Path, device: torch.device = torch.device("cpu")) -> StoredDictionary:
    checkpoint = load_checkpoint(directory)
    sae = TopKSAE(SAEConfig(**checkpoint.config["sae"]))
    sae.load_state_dict(checkpoint.state_dict)
    return StoredDictionary(sae=sae.to(device).eval(), layer=checkpoint.config["layer"], config=checkpoint.config)


@dataclass(frozen=True)
class Annotations:
    """What each SAE feature and each hidden dimension means (one row per live feature, ``core.recommender.annotation``), the
    families compared, and the settings they were read with (``subject``, ``min_fires``, ``tokens``)."""

    sae_features: pd.DataFrame
    hidden_dimensions: pd.DataFrame
    comparison: pd.DataFrame  # one row per family (sae, hidden) for the labels' subject
    comparison_by_subject: pd.DataFrame  # the same for the current and the next item (column ``subject``)
    settings: dict[str, Any]

    @property
    def min_fires(self) -> int:
        return int(self.settings["min_fires"])


def save_annotations(directory: str | Path, annotations: Annotations) -> Path:
    with atomic_dir(directory) as tmp:
        annotations.sae_features.to_parquet(tmp / SAE_FEATURES_FILE, index=False)
        annotations.hidden_dimensions.to_parquet(tmp / HIDDEN_DIMENSIONS_FILE, index=False)
        annotations.comparison.to_parquet(tmp / COMPARISON_FILE)
        annotations.comparison_by_subject.to_parquet(tmp / COMPARISON_BY_SUBJECT_FILE)
        (tmp / ANNOTATION_SETTINGS_FILE).write_text(json.dumps(annotations.settings, indent=2))
    return Path(directory)


def load_annotations(directory: str | Path) -> Annotations:
    directory = Path(directory)
    return Annotations(
        sae_features=pd.read_parquet(directory / SAE_FEATURES_FILE),
        hidden_dimensions=pd.read_parquet(directory / HIDDEN_DIMENSIONS_FILE),
        comparison=pd.read_parquet(directory / COMPARISON_FILE),
        comparison_by_subject=pd.read_parquet(directory / COMPARISON_BY_SUBJECT_FILE),
        settings=json.loads((directory / ANNOTATION_SETTINGS_FILE).read_text()),
    )


def save_steering_report(directory: str | Path, report: pd.DataFrame) -> Path:
    with atomic_path(Path(directory) / STEERING_FILE) as tmp:
        report.to_parquet(tmp, index=False)
    return Path(directory) / STEERING_FILE


def load_steering_report(directory: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(directory) / STEERING_FILE)
