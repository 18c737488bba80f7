"""Jobs, schedules, the new-file sensor and the refresh condition: how the pipeline runs without a person.

- nightly_profile_refresh (02:30 UTC): the day that just closed, from ingest to profiles, in one run.
- nightly_evaluation (04:30 UTC): the backtest of the newest day whose 28-day future is complete.
- weekly_retrain (Sunday 03:00 UTC): every model, on the newest materialized sequences day.
- new_source_files sensor: new or changed source files trigger one ingest per table of exactly the days they hold.
- REFRESH: as-of assets whose upstream changed (a re-ingested day, a retrained model) are refreshed at the next
  05:00 UTC tick, for the partitions that already exist; cron-gated, never eager.
All start STOPPED; a user turns them on in the UI (Automation tab) or with `dagster schedule start`.
"""

import hashlib
import json
from datetime import datetime, timedelta

import dagster as dg

from ubp_pipeline.resources import EventSource

NIGHTLY_CRON = "30 2 * * *"
EVALUATION_CRON = "30 4 * * *"
RETRAIN_CRON = "0 3 * * 0"
REFRESH_CRON = "0 5 * * *"
TIMEZONE = "UTC"
FUTURE_DAYS = 28

REFRESH = (
    dg.AutomationCondition.cron_tick_passed(REFRESH_CRON, TIMEZONE).since_last_handled()
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("refresh existing partitions after upstream changes, at 05:00 UTC")

INGEST_JOB = "ingest_job"
DAILY_REFRESH_JOB = "daily_refresh_job"
EVALUATION_JOB = "evaluation_job"
RETRAIN_JOB = "retrain_job"


# (job, asset groups, description, tags): every job selects whole groups, so a new asset joins its group's jobs
_JOBS = (
    (INGEST_JOB, ("ingest",), "Load the catalogue and the selected days of raw events (a range is one run).", {}),
    (
        DAILY_REFRESH_JOB, ("ingest", "sequences", "embeddings", "profiles"),
        "One day end to end: ingest, sequences and statistics, block embeddings, universal profiles.", {},
    ),
    (EVALUATION_JOB, ("evaluation",), "Targets of the 28 days after the day and the backtest of its profiles.", {}),
    (
        RETRAIN_JOB, ("models", "recommender"), "Retrain every model on the newest materialized sequences day.",
        {"ubp/accelerator": "gpu"},  # deploy/dagster.postgres.yaml caps concurrent GPU runs by this tag
    ),
)


def jobs() -> list:
    return [
        dg.define_asset_job(name, selection=dg.AssetSelection.groups(*groups), description=description, tags=tags)
        for name, groups, description, tags in _JOBS
    ]


def _day_before(moment: datetime) -> str:
    return (moment - timedelta(days=1)).date().isoformat()


def schedules(daily: dg.DailyPartitionsDefinition) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        job_name=DAILY_REFRESH_JOB, cron_schedule=NIGHTLY_CRON, execution_timezone=TIMEZONE,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def nightly_profile_refresh(context: dg.ScheduleEvaluationContext):
        """Ingest the day that just closed and rebuild its sequences, embeddings and profiles."""
        day = _day_before(context.scheduled_execution_time)
        if not daily.has_partition_key(day):
            return dg.SkipReason(f"{day} is outside the configured days (UBP_FIRST_DAY..UBP_LAST_DAY)")
        return dg.RunRequest(run_key=f"refresh-{day}", partition_key=day)

    @dg.schedule(
        job_name=EVALUATION_JOB, cron_schedule=EVALUATION_CRON, execution_timezone=TIMEZONE,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def nightly_evaluation(context: dg.ScheduleEvaluationContext):
        """Backtest the newest day whose two 14-day target windows have just become complete."""
        closed = context.scheduled_execution_time - timedelta(days=1)
        day = (closed - timedelta(days=FUTURE_DAYS)).date().isoformat()
        if not daily.has_partition_key(day):
            return dg.SkipReason(f"{day} is outside the configured days")
        return dg.RunRequest(run_key=f"evaluation-{day}", partition_key=day)

    retrain = dg.ScheduleDefinition(
        name="weekly_retrain", job_name=RETRAIN_JOB, cron_schedule=RETRAIN_CRON, execution_timezone=TIMEZONE,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Retrain every model on the newest materialized user_sequences day.",
    )
    return [nightly_profile_refresh, nightly_evaluation, retrain]


def new_source_files_sensor(daily: dg.DailyPartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        job_name=INGEST_JOB, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def new_source_files(context: dg.SensorEvaluationContext, source: EventSource):
        """One ingest run per table with new or changed files, over exactly the days those files hold.

        The cursor remembers each file's size and modification time; the run key is the table with the signatures
        of its changed files, so a delivery is ingested once however often the sensor ticks, and a first tick over
        a folder of 180 daily files is one run, not 180. Files dated wholly outside the configured days get a run
        of the nearest configured day, which quarantines their rows as outside_day_range.
        """
        from ubp_pipeline.core.warehouse.source_layout import PRODUCT_PROPERTIES, SourceError
        from ubp_pipeline.core.warehouse.source_scan import changed_files, day_range

        seen = json.loads(context.cursor or "{}")
        changes, signatures = changed_files(source.layout(), seen)
        keys = daily.get_partition_keys()
        for table in dict.fromkeys(change.table for change in changes):
            files = [change for change in changes if change.table == table]
            versions = "\n".join(sorted(f"{change.path}@{change.signature}" for change in files))
            run_key = f"{table}:{hashlib.sha256(versions.encode()).hexdigest()[:16]}"
            if table == PRODUCT_PROPERTIES:
                yield dg.RunRequest(run_key=run_key, asset_selection=[dg.AssetKey(PRODUCT_PROPERTIES)])
                continue
            try:
                first, last = day_range([change.path for change in files])
            except SourceError as error:  # empty files: nothing to ingest until rows arrive
                context.log.info(str(error))
                continue
            first, last = (min(max(day.isoformat(), keys[0]), keys[-1]) for day in (first, last))
            yield dg.RunRequest(
                run_key=run_key,
                asset_selection=[dg.AssetKey(f"raw_{table}")],
                tags={
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                    "ubp/source_files": str(len(files)),
                },
            )
        context.update_cursor(json.dumps(signatures))

    return new_source_files
