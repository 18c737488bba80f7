"""A profile block: train its embedder on one day, store it, and embed any day with it.

Models are kept per training cutoff (``<block>_model/<cutoff day>/``): a day is embedded by the newest model
trained on or before it (``model_for_day``). The backtest's models (cutoff = the evaluated day) and the production
models (cutoff = the newest day) therefore live side by side, and no refresh ever re-embeds a past day with a model
trained after it.

From an embedder's raw vectors to a block: optional PCA, row scaling, and the vector for missing users. All three
are fitted once, on the training day's embeddings, and stored with the model: a block then has the same axes, scale
and fill value on every day it is computed, which downstream models trained on one day rely on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.common.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.markdown_tables import markdown_table
from ubp_pipeline.core.common.progress import EpochCallback
from ubp_pipeline.core.profiles.assembly import BlockVectors
from ubp_pipeline.core.profiles.embedders.base import Embeddings, FittedEmbedder
from ubp_pipeline.core.profiles.embedders.training import FieldVerdict, field_verdicts
from ubp_pipeline.core.profiles.registry import BlockSpec, Scaling


@dataclass(frozen=True)
class BlockTransform:
    """x -> (x - mean) @ components.T (if PCA) -> per-row L2 (if scaling == "l2"); ``fill`` stands in for absent users."""

    components: np.ndarray | None
    mean: np.ndarray | None
    scaling: Scaling
    fill: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.fill)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors.astype(np.float32)
        if self.components is not None:
            out = (out - self.mean) @ self.components.T
        if self.scaling == "l2":
            out = normalize(out, norm="l2")
        return out.astype(np.float32)

    def to_state(self) -> dict[str, np.ndarray]:
        state = {"fill": self.fill}
        if self.components is not None:
            state |= {"pca_components": self.components, "pca_mean": self.mean}
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], scaling: Scaling) -> BlockTransform:
        return cls(state.get("pca_components"), state.get("pca_mean"), scaling, state["fill"])


def fit_block_transform(training: Embeddings, pca_dims: int | None, scaling: Scaling, seed: int = 0) -> BlockTransform:
    """Fit PCA (when it reduces dimensions) on the training day's vectors; fill = mean of the transformed vectors.

    PCA cannot find more axes than there are training users: on a short source (a backtest day with a few dozen
    users) the block keeps as many as the users allow, and ``pca_dims_used`` reports the cut."""
    components = mean = None
    dims = pca_dims_used(pca_dims, *training.vectors.shape)
    if dims is not None:
        pca = PCA(n_components=dims, random_state=seed).fit(training.vectors)
        components, mean = pca.components_.astype(np.float32), pca.mean_.astype(np.float32)
    transform = BlockTransform(components, mean, scaling, np.zeros(0, np.float32))
    fill = transform.apply(training.vectors).mean(axis=0).astype(np.float32)
    return BlockTransform(components, mean, scaling, fill)


def pca_dims_used(pca_dims: int | None, users: int, raw_dims: int) -> int | None:
    """The PCA size a block gets: its configured size, capped by its training users; None = no PCA."""
    if pca_dims is None or pca_dims >= raw_dims:
        return None
    if users < 2:
        raise ValueError(f"a PCA to {pca_dims} dimensions needs at least 2 training users, got {users}")
    return min(pca_dims, users)


MODEL_STATE_PREFIX, TRANSFORM_STATE_PREFIX = "embedder.", "block."
VECTORS_FILE, CLIENT_IDS_FILE, FILL_FILE, MANIFEST_FILE = "vectors.npy", "client_ids.npy", "fill.npy", "manifest.json"


def save_block_model(
    directory: str | Path, fitted: FittedEmbedder, transform: BlockTransform, provenance: dict[str, Any]
) -> Path:
    """One checkpoint for the embedder's state and the block transform (safetensors + JSON config, atomic)."""
    state = {MODEL_STATE_PREFIX + k: v for k, v in fitted.state.items()}
    state |= {TRANSFORM_STATE_PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in transform.to_state().items()}
    config = {"embedder": fitted.config, "scaling": transform.scaling, "provenance": provenance}
    return save_checkpoint(directory, state, config)


def load_block_model(directory: str | Path) -> tuple[FittedEmbedder, BlockTransform, dict[str, Any]]:
    checkpoint = load_checkpoint(directory)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in checkpoint.state_dict.items() if k.startswith(prefix)}

    fitted = FittedEmbedder(state=part(MODEL_STATE_PREFIX), config=checkpoint.config["embedder"])
    transform = BlockTransform.from_state(
        {k: v.numpy() for k, v in part(TRANSFORM_STATE_PREFIX).items()}, checkpoint.config["scaling"]
    )
    return fitted, transform, checkpoint.config["provenance"]


def save_block_vectors(directory: str | Path, block: BlockVectors) -> Path:
    """A block's vectors of one day, written as one swap of the day's folder."""
    with atomic_dir(directory) as tmp:
        np.save(tmp / CLIENT_IDS_FILE, block.client_ids.astype(np.int64))
        np.save(tmp / VECTORS_FILE, block.vectors.astype(np.float32))
        np.save(tmp / FILL_FILE, block.fill.astype(np.float32))
        (tmp / MANIFEST_FILE).write_text(json.dumps({"name": block.name, **block.provenance}, indent=2, default=str))
    return Path(directory)


def load_block_vectors(directory: str | Path) -> BlockVectors:
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    name = manifest.pop("name")
    return BlockVectors(
        name=name,
        client_ids=np.load(directory / CLIENT_IDS_FILE),
        vectors=np.load(directory / VECTORS_FILE),
        fill=np.load(directory / FILL_FILE),
        provenance=manifest,
    )


class NoModelForDay(FileNotFoundError):
    """No model of the block was trained on or before the day to embed: a later model would see its future."""


def model_for_day(model_root: str | Path, day: str) -> Path:
    """The folder of the newest model under ``model_root`` whose training cutoff is on or before ``day``."""
    cutoffs = sorted(folder.name for folder in Path(model_root).glob("????-??-??") if (folder / CONFIG_FILE).exists())
    usable = [cutoff for cutoff in cutoffs if cutoff <= day]
    if not usable:
        trained = f"models trained on {', '.join(cutoffs)}" if cutoffs else "no model trained yet"
        raise NoModelForDay(f"{Path(model_root).name} has {trained}; none on or before {day}: train one with training_day <= {day}")
    return Path(model_root) / usable[-1]


EXCLUDED_FILE = "excluded.json"


def save_excluded_block(directory: str | Path, name: str, reason: str, provenance: dict[str, Any]) -> Path:
    """The day's folder of a block whose model may not embed: why, instead of vectors, so profiles leave it out."""
    with atomic_dir(directory) as tmp:
        (tmp / EXCLUDED_FILE).write_text(json.dumps({"name": name, "reason": reason, **provenance}, indent=2, default=str))
    return Path(directory)


def excluded_reason(directory: str | Path) -> str | None:
    """Why the block's vectors of that day were not built, or None when they were."""
    marker = Path(directory) / EXCLUDED_FILE
    return json.loads(marker.read_text())["reason"] if marker.exists() else None


LEARNED_CHECK = "learned_every_field"  # the model asset's check that every predicted field beats its marginal


class UnlearnedModelError(RuntimeError):
    """A block model whose check found a field no better than its marginal: it may not embed anything."""


@dataclass(frozen=True)
class TrainedBlock:
    provenance: dict[str, Any]
    history: list[dict[str, float]]
    training_users: int
    verdicts: list[FieldVerdict]  # one per predicted field (none for blocks that predict no field)

    @property
    def learned(self) -> bool:
        return all(v.learned for v in self.verdicts)

    def summary(self) -> dict[str, Any]:
        """What a model materialization reports: plain numbers and strings (the curve as a markdown table), with
        each field's held-out accuracy, majority, loss and unigram loss at the kept epoch as numbers of their own."""
        final = {f"final_{k}": float(v) for k, v in (self.history[-1] if self.history else {}).items() if k != "epoch"}
        fields = {
            f"{v.field}_{name}": value for v in self.verdicts for name, value in v.as_dict().items() if name != "learned"
        }
        return {
            "training_cutoff": self.provenance["training_day"],
            "model_version": self.provenance["model_version"],
            "dims": self.provenance["dims"],
            "pca_dims_capped_by_users": self.provenance["pca_dims_capped_by_users"],
            "training_users": self.training_users,
            "training_seconds": self.provenance["training_seconds"],
            "device": self.provenance["device_name"],
            "ranks": self.provenance["world_size"],
            "epochs": len(self.history),
            "training_curve": markdown_table(pd.DataFrame(self.history)),
            **final,
            **fields,
        }


def train_block(
    spec: BlockSpec,
    input_folder: Path,
    model_dir: Path,
    runtime: TorchRuntime,
    training_day: str,
    overrides: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainedBlock:
    """Fit the block's embedder on one day, fit its transform on that day's vectors, store both in one checkpoint.

    A model that fails its field check is stored too (to be inspected), marked so that ``embed_block`` refuses it."""
    started = time.perf_counter()
    embedder = spec.build(overrides, runtime.device.type)
    fitted = embedder.fit(input_folder, runtime, on_epoch)
    training = embedder.embed(fitted, input_folder, runtime)
    transform = fit_block_transform(training, spec.pca_dims, spec.scaling, runtime.seed)
    verdicts = field_verdicts(fitted.history, fitted.config["best_epoch"]) if spec.predicts_fields else []
    provenance = {
        "block": spec.name,
        "block_version": spec.version,
        "training_day": training_day,
        "model_version": f"{spec.name}@{spec.version}/{training_day}/{weights_digest(fitted)}",
        "raw_dims": int(training.vectors.shape[1]),
        "dims": transform.dim,
        "pca_dims_capped_by_users": transform.components is not None and transform.dim < (spec.pca_dims or 0),
        "training_seconds": round(time.perf_counter() - started, 2),
        "overrides": overrides or {},
        "fields_not_learned": [v.field for v in verdicts if not v.learned],
        **runtime.describe(),
    }
    save_block_model(model_dir, fitted, transform, provenance)
    return TrainedBlock(provenance, fitted.history.epochs, len(training.client_ids), verdicts)


def embed_block(spec: BlockSpec, model_dir: Path, input_folder: Path, runtime: TorchRuntime) -> BlockVectors:
    """The block's vectors for the users of one day, with the stored model and transform."""
    fitted, transform, provenance = load_block_model(model_dir)
    if provenance.get("fields_not_learned"):
        raise UnlearnedModelError(
            f"{provenance['model_version']} did no better than the marginal on {provenance['fields_not_learned']} "
            f"(its learned_every_field check failed): retrain {spec.name} before it embeds a profile"
        )
    embedder = spec.build(provenance.get("overrides"), runtime.device.type)
    raw = embedder.embed(fitted, input_folder, runtime)
    return BlockVectors(spec.name, raw.client_ids, transform.apply(raw.vectors), transform.fill, provenance)


def weights_digest(fitted: FittedEmbedder) -> str:
    """A short hash of the fitted state (the tail of model_version): equal digests, equal weights."""
    digest = hashlib.sha256()
    for name in sorted(fitted.state):
        digest.update(name.encode())
        digest.update(fitted.state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]
