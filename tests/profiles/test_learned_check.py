"""Models that learn, or do not ship: the field check on every sequence block, and blocks on very few users."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY
from ubp_pipeline.assets.embedders import LEARNED_CHECK, embeddings_key, model_key
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.profiles.blocks import UnlearnedModelError, embed_block, fit_block_transform, train_block
from ubp_pipeline.core.profiles.embedders.base import Embeddings
from ubp_pipeline.core.profiles.embedders.training import FieldVerdict
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.runner import materialize

DAY = TINY.start + timedelta(days=14)


def test_a_field_counts_as_learned_only_beyond_the_margin_over_its_marginal():
    assert not FieldVerdict("category", accuracy=0.30, majority=0.30, loss=3.0, unigram=3.0).learned  # the marginal
    assert not FieldVerdict("category", accuracy=0.31, majority=0.30, loss=2.9, unigram=3.0).learned  # within margin
    assert FieldVerdict("category", accuracy=0.32, majority=0.30, loss=3.2, unigram=3.0).learned  # 7 % more hits
    assert FieldVerdict("event_type", accuracy=0.78, majority=0.78, loss=0.70, unigram=0.81).learned  # 14 % less loss


def test_a_model_that_cannot_learn_fails_the_check_and_its_embeddings_are_not_built(tiny_defs, tiny_settings, instance):
    """lr = 0: the model keeps its random initial weights. The blocking check fails, the run stops before the
    embeddings, and the stored model refuses to embed in any later run."""
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(TINY.start, DAY)).success
    assert materialize(tiny_defs, "user_sequences", instance, partition=DAY).success
    model = model_key("gru_day_event")
    config = {"ops": {model: {"config": {"training_day": DAY.isoformat(), "overrides": {"learning_rate": 0.0, "max_epochs": 1}}}}}
    result = materialize(
        tiny_defs, [model, embeddings_key("gru_day_event")], instance, partition=DAY, run_config=config, raise_on_error=False
    )
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == LEARNED_CHECK and not evaluation.passed
    assert "event_type" in evaluation.metadata["fields_not_learned"].value
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == [model]  # no embeddings
    with pytest.raises(UnlearnedModelError, match="did no better than the marginal"):
        embed_block(
            BLOCKS["gru_day_event"], tiny_settings.artifact_dir / model / DAY.isoformat(),
            tiny_settings.artifact_dir / "user_sequences" / DAY.isoformat(), make_runtime("cpu", threads=1),
        )


def test_pca_keeps_as_many_dimensions_as_the_training_users_allow():
    """A short source: the backtest day has 39 users and the block asks for 64 PCA dimensions."""
    vectors = np.random.default_rng(0).normal(size=(39, 128)).astype(np.float32)
    transform = fit_block_transform(Embeddings(np.arange(39), vectors), pca_dims=64, scaling="l2")
    assert transform.dim == 39 and np.isfinite(transform.apply(vectors)).all()


@pytest.fixture
def few_users(tiny_sequences, tmp_path):
    """The tiny training day cut to 30 users (the sequences partition's files, rows of 30 users)."""
    folder = tmp_path / "few"
    folder.mkdir()
    table = pq.read_table(tiny_sequences["train"] / "sequences.parquet")
    pq.write_table(table.slice(0, 30), folder / "sequences.parquet")
    for name in ("manifest.json", "vocabulary.parquet"):
        (folder / name).write_bytes((tiny_sequences["train"] / name).read_bytes())
    return folder


def test_a_block_trained_on_fewer_users_than_its_pca_dims_adapts_and_says_so(few_users, tmp_path):
    spec = BLOCKS["gru_week_all"]
    overrides = {"hidden_dim": 96, "embedding_dim": 32, "max_epochs": 1}
    trained = train_block(spec, few_users, tmp_path / "model", make_runtime("cpu", threads=1), "day", overrides)
    summary = trained.summary()
    assert summary["dims"] == trained.training_users == 30 < spec.pca_dims
    assert summary["pca_dims_capped_by_users"] is True
