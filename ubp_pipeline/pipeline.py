"""The main job as a user runs it: ingest every day in one run, then build the as-of assets for the days that matter."""

from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg

from ubp_pipeline.assets.sequences import USER_SEQUENCES
from ubp_pipeline.runner import materialize
from ubp_pipeline.settings import Settings

BACKTEST_HORIZON_DAYS = 28  # two 14-day target windows follow the evaluated day


def backtest_day(settings: Settings) -> date | None:
    """The newest day with a complete 28-day future inside the data, or None when the data is too short."""
    day = settings.last_day - timedelta(days=BACKTEST_HORIZON_DAYS)
    return day if day >= settings.first_day else None


def as_of_days(settings: Settings) -> list[date]:
    """The days whose snapshots the main job builds: the backtest day (if any) and the newest day."""
    days = [backtest_day(settings), settings.last_day]
    return sorted({d for d in days if d is not None})


@dataclass
class PipelineRuns:
    run_ids: list[str] = field(default_factory=list)

    def add(self, result: dg.ExecuteInProcessResult) -> None:
        self.run_ids.append(result.run_id)


def run_pipeline(defs: dg.Definitions, settings: Settings, instance: dg.DagsterInstance) -> PipelineRuns:
    runs = PipelineRuns()
    runs.add(materialize(defs, "group:ingest", instance, partition_range=(settings.first_day, settings.last_day)))
    for day in as_of_days(settings):
        runs.add(materialize(defs, USER_SEQUENCES, instance, partition=day))
    return runs
