"""Multi-process training: torchrun with two CPU ranks (gloo), launched by Dagster through dagster-pipes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tests.conftest import TINY
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.profiles.blocks import embed_block
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.runner import materialize

DAY = TINY.start + timedelta(days=14)


def test_two_ranks_train_the_gru_autoencoder_and_rank_zero_reports_it(tiny_defs, tiny_settings, instance):
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(TINY.start, DAY)).success
    assert materialize(tiny_defs, "user_sequences", instance, partition=DAY).success
    config = {"training_day": DAY.isoformat(), "ranks": 2, "overrides": {"max_epochs": 2}}
    result = materialize(tiny_defs, "gru_day_event_model", instance, run_config={"ops": {"gru_day_event_model": {"config": config}}})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("gru_day_event_model")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["ranks"] == 2 and metadata["reported_by_rank"] == 0
    assert metadata["ranks_agree_on_weights"] is True  # gradients averaged across ranks: one model, not two
    assert metadata["training_cutoff"] == DAY.isoformat() and metadata["epochs"] >= 1
    assert "valid_loss" in metadata["training_curve"]

    model_dir = tiny_settings.artifact_dir / "gru_day_event_model" / DAY.isoformat()
    block = embed_block(BLOCKS["gru_day_event"], model_dir, tiny_settings.artifact_dir / "user_sequences" / DAY.isoformat(), make_runtime("cpu", threads=1))
    assert block.vectors.shape[1] == 128 and np.isfinite(block.vectors).all() and len(block.client_ids) > 100
    assert block.provenance["world_size"] == 2


def test_blocks_without_a_data_parallel_loop_refuse_several_ranks(tiny_defs, instance):
    config = {"ops": {"als_urls_model": {"config": {"training_day": DAY.isoformat(), "ranks": 2}}}}
    result = materialize(tiny_defs, "als_urls_model", instance, run_config=config, raise_on_error=False)
    assert not result.success
    assert "does not train data-parallel" in result.get_step_failure_events()[0].step_failure_data.error.message
