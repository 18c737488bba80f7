"""Every profile block trains on tiny data, embeds exactly the users it should, and reloads bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ubp_pipeline.core.common.device import make_runtime, select_device
from ubp_pipeline.core.profiles.blocks import (
    BlockTransform,
    embed_block,
    fit_block_transform,
    load_block_model,
    save_block_model,
    train_block,
)
from ubp_pipeline.core.profiles.embedders.base import Embeddings
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.core.sequences.stat_features import load_stat_features
from ubp_pipeline.core.sequences.user_sequences import load_sequences
from ubp_pipeline.resources import TorchDevice

# a short training recipe under which each sequence block still learns every field of the tiny set (a block that
# does not may not embed), in seconds
QUICK = {"max_epochs": 4, "learning_rate": 3e-3, "warmup_steps": 20}


def _quick_overrides(spec) -> dict:
    return QUICK if hasattr(spec.build().config, "recipe") else {}


def _inputs(spec, tiny_sequences, tiny_stat_features):
    return tiny_stat_features if spec.input_asset == "stat_features" else tiny_sequences


def _users_of(folder, input_asset) -> np.ndarray:
    if input_asset == "stat_features":
        return load_stat_features(folder).client_ids
    return load_sequences(folder).client_ids


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_embeds_the_right_users_with_finite_vectors_of_its_size(name, tiny_sequences, tiny_stat_features, tmp_path):
    spec = BLOCKS[name]
    inputs = _inputs(spec, tiny_sequences, tiny_stat_features)
    runtime = make_runtime("cpu", seed=0, threads=1)
    trained = train_block(spec, inputs["train"], tmp_path / "model", runtime, "train-day", _quick_overrides(spec))
    assert trained.provenance["training_day"] == "train-day" and trained.history
    for day in ("train", "later"):
        block = embed_block(spec, tmp_path / "model", inputs[day], runtime)
        assert block.vectors.shape == (len(block.client_ids), trained.provenance["dims"])
        assert block.vectors.dtype == np.float32 and np.isfinite(block.vectors).all()
        assert len(np.unique(block.client_ids)) == len(block.client_ids)
        users = _users_of(inputs[day], spec.input_asset)
        assert set(block.client_ids) <= set(users) and len(block.client_ids) >= 0.5 * len(users)
        if spec.scaling == "l2":
            assert np.allclose(np.linalg.norm(block.vectors, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_reloaded_checkpoint_reproduces_embeddings_bit_for_bit(name, tiny_sequences, tiny_stat_features, tmp_path):
    spec = BLOCKS[name]
    inputs = _inputs(spec, tiny_sequences, tiny_stat_features)
    runtime = make_runtime("cpu", seed=0, threads=1)
    embedder = spec.build(_quick_overrides(spec))
    fitted = embedder.fit(inputs["train"], runtime)
    direct = embedder.embed(fitted, inputs["later"], runtime)
    transform = fit_block_transform(direct, spec.pca_dims, spec.scaling)
    save_block_model(tmp_path / "model", fitted, transform, {"training_day": "x"})
    reloaded, reloaded_transform, provenance = load_block_model(tmp_path / "model")
    again = spec.build(_quick_overrides(spec)).embed(reloaded, inputs["later"], runtime)
    assert provenance == {"training_day": "x"}
    assert np.array_equal(direct.client_ids, again.client_ids)
    assert np.array_equal(direct.vectors, again.vectors)
    assert np.array_equal(transform.apply(direct.vectors), reloaded_transform.apply(again.vectors))


def test_block_transform_reduces_scales_and_fills_with_the_training_mean():
    rng = np.random.default_rng(0)
    training = Embeddings(np.arange(200), rng.normal(size=(200, 16)).astype(np.float32) * 5)
    transform = fit_block_transform(training, pca_dims=4, scaling="l2")
    out = transform.apply(training.vectors)
    assert out.shape == (200, 4) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(transform.fill, out.mean(axis=0), atol=1e-6)
    restored = BlockTransform.from_state(transform.to_state(), "l2")
    assert np.array_equal(restored.apply(training.vectors), out)
    unreduced = fit_block_transform(training, pca_dims=32, scaling="none")
    assert unreduced.components is None and np.array_equal(unreduced.apply(training.vectors), training.vectors)


def test_the_device_resource_picks_the_best_device_here_and_refuses_a_missing_gpu():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    runtime = TorchDevice().runtime()
    assert runtime.device.type == runtime.describe()["device"] == expected
    assert runtime.describe()["mixed_precision"] is (expected == "cuda")  # bf16 autocast on a GPU only

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda' was requested but is not available"):
            select_device("cuda")
