"""The main job as a user runs it: ingest every day in one run, then build the as-of assets for the days that matter.

Two model sets: backtest models, trained with their cutoff at the backtest day (the newest day with a complete 28-day
future), embed that day, whose profiles are then evaluated without leakage; production models, trained on the newest
day, embed the served profile. The backtest runs before the newest profile is built, so the block selection it
makes shapes the served profile.

A block model that fails its learned_every_field check does not stop the job: its embeddings record why, and the
profiles leave it out. Nor does the recommender (on small data a stage may find too little to learn or to label):
its failure is printed. Any other failure stops the job.
"""

from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg

from ubp_pipeline.assets.embedders import model_key
from ubp_pipeline.assets.evaluation import PROFILE_EVALUATION
from ubp_pipeline.assets.recommender import RECOMMENDER_GROUP, SASREC_MODEL
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.runner import RunResult, materialize
from ubp_pipeline.settings import Settings

BACKTEST_HORIZON_DAYS = 28  # two 14-day target windows follow the evaluated day
INPUTS = ["user_sequences", "stat_features"]
OUTPUTS = ["group:embeddings", "group:profiles"]


def backtest_day(settings: Settings) -> date | None:
    """The newest day with a complete 28-day future inside the data, or None when the data is too short."""
    day = settings.last_day - timedelta(days=BACKTEST_HORIZON_DAYS)
    return day if day >= settings.first_day else None


def training_day(settings: Settings) -> date:
    return backtest_day(settings) or settings.last_day


def as_of_days(settings: Settings) -> list[date]:
    """The days whose snapshots the main job builds: the backtest day (if any) and the newest day."""
    return sorted({training_day(settings), settings.last_day})


@dataclass
class PipelineRuns:
    run_ids: list[str] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.run_ids.append(result.run_id)


def trained_blocks(defs: dg.Definitions) -> list[str]:
    """The blocks ``defs`` trains: the default ones and the opt-in ones its settings asked for."""
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return [name for name in BLOCKS if dg.AssetKey(model_key(name)) in keys]


def train_models(defs: dg.Definitions, instance: dg.DagsterInstance, cutoff: date) -> RunResult:
    """Every block model with its cutoff at ``cutoff``; failed learned_every_field checks are reported, not raised."""
    config = {"ops": {model_key(name): {"config": {"training_day": cutoff.isoformat()}} for name in trained_blocks(defs)}}
    result = materialize(defs, "group:models", instance, run_config=config, raise_on_error=False)
    unlearned = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations() if not e.passed}
    failed = {e.step_key for e in result.get_step_failure_events()}
    if failed - unlearned:
        raise dg.DagsterError(f"training the block models on {cutoff} failed in {sorted(failed - unlearned)} (run {result.run_id})")
    for model in sorted(unlearned):
        print(f"{model} (cutoff {cutoff}) failed its learned_every_field check: the profiles leave that block out")
    return result


def run_pipeline(defs: dg.Definitions, settings: Settings, instance: dg.DagsterInstance) -> PipelineRuns:
    runs = PipelineRuns()
    runs.add(materialize(defs, "group:ingest", instance, partition_range=(settings.first_day, settings.last_day)))
    for day in as_of_days(settings):
        runs.add(materialize(defs, INPUTS, instance, partition=day))
    evaluated = backtest_day(settings)
    if evaluated is not None:
        runs.add(train_models(defs, instance, evaluated))
        runs.add(materialize(defs, OUTPUTS, instance, partition=evaluated))
        evaluation_config = {"ops": {PROFILE_EVALUATION: {"config": {"probe": settings.probe}}}}
        runs.add(materialize(defs, "group:evaluation", instance, partition=evaluated, run_config=evaluation_config))
    runs.add(train_models(defs, instance, settings.last_day))
    runs.add(materialize(defs, OUTPUTS, instance, partition=settings.last_day))
    recommender_config = {"ops": {SASREC_MODEL: {"config": {"training_day": training_day(settings).isoformat()}}}}
    recommender = materialize(defs, f"group:{RECOMMENDER_GROUP}", instance, run_config=recommender_config, raise_on_error=False)
    for failure in recommender.get_step_failure_events():  # the profiles stand without it; say what went wrong
        print(f"the recommender stopped at {failure.step_key}: {failure.step_failure_data.error.message.strip()}")
    runs.add(recommender)
    return runs
