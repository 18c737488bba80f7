"""The backtest through Dagster on a small synthetic set: targets, the table with every row, the chart, refusals."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pytest

from tests.factories import settings_for
from ubp_pipeline.assets.embedders import model_key
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.data.synthetic import SyntheticConfig, generate
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.runner import materialize

CONFIG = SyntheticConfig(users=300, days=40, seed=3, start=date(2022, 6, 23))
LAST = CONFIG.start + timedelta(days=CONFIG.days - 1)
D = LAST - timedelta(days=28)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ingested data, inputs of D and D+5, and a Dagster instance shared by the tests of this module."""
    root = tmp_path_factory.mktemp("evaluation")
    generate(CONFIG, root / "source")
    settings = settings_for(root / "source", root / "home", CONFIG.start, LAST)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(CONFIG.start, LAST)).success
        for day in (D, D + timedelta(days=5)):
            assert materialize(defs, ["user_sequences", "stat_features"], instance, partition=day).success
        yield settings, defs, instance


def _train_models(defs, instance, day: date) -> None:
    config = {"ops": {model_key(name): {"config": {"training_day": day.isoformat()}} for name in BLOCKS}}
    assert materialize(defs, "group:models", instance, run_config=config).success
    assert materialize(defs, ["group:embeddings", "group:profiles"], instance, partition=D).success


def test_the_backtest_scores_every_row_and_draws_the_chart(world):
    settings, defs, instance = world
    _train_models(defs, instance, D)
    config = {"ops": {"profile_evaluation": {"config": {"score_blocks": False}}}}
    result = materialize(defs, "group:evaluation", instance, partition=D, run_config=config)
    assert result.success
    folder = settings.artifact_dir / "profile_evaluation" / D.isoformat()
    scores = pd.read_parquet(folder / "scores.parquet")
    assert list(dict.fromkeys(scores["row"])) == ["ensemble", "baseline", "baseline_scaled", "oracle"]
    assert {"churn", "conversion", "propensity_category", "propensity_sku", "propensity_price"} <= set(scores["task"])
    assert scores["probe"].unique().tolist() == ["quick-w256"]
    assert scores["score"].between(0, 1).all()
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = result.asset_materializations_for_node("profile_evaluation")[0].metadata
    assert "ensemble | " in metadata["scores"].value and metadata["chart"].value.startswith("![scores](data:image/png;base64,")
    assert metadata["ensemble_total"].value == pytest.approx(scores.loc[scores["row"] == "ensemble", "score"].sum())


def test_a_day_without_a_complete_future_cannot_be_evaluated(world):
    _, defs, instance = world
    result = materialize(defs, "downstream_targets", instance, partition=D + timedelta(days=5), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "has no complete 28-day future" in failure and f"newest day that can be evaluated is {D}" in failure


def test_models_trained_after_the_day_are_refused(world):
    _, defs, instance = world
    _train_models(defs, instance, D + timedelta(days=5))
    result = materialize(defs, "profile_evaluation", instance, partition=D, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert f"were trained on data after {D}" in failure
