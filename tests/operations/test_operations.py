"""Operating the pipeline: schedules, the new-file sensor, and the cron-gated refresh after a day changes."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from tests.factories import event_frame, settings_for, write_source, write_table
from ubp_pipeline.assets.embedders import model_key
from ubp_pipeline.data.synthetic import SyntheticConfig, generate
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.resources import EventSource
from ubp_pipeline.runner import materialize


def _schedule(defs, name):
    return next(s for s in defs.schedules if s.name == name)


def _tick(defs, name, moment: datetime):
    context = dg.build_schedule_context(scheduled_execution_time=moment, repository_def=defs.get_repository_def())
    return _schedule(defs, name).evaluate_tick(context)


def test_schedules_target_the_day_that_closed_and_the_newest_complete_backtest(tiny_defs):
    assert _schedule(tiny_defs, "nightly_profile_refresh").default_status == dg.DefaultScheduleStatus.STOPPED
    request = _tick(tiny_defs, "nightly_profile_refresh", datetime(2022, 7, 1, 2, 30, tzinfo=UTC))
    assert [r.partition_key for r in request.run_requests] == ["2022-06-30"]
    late = _tick(tiny_defs, "nightly_profile_refresh", datetime(2023, 1, 1, 2, 30, tzinfo=UTC))
    assert not late.run_requests and "outside the configured days" in late.skip_message
    due = _tick(tiny_defs, "nightly_evaluation", datetime(2022, 7, 22, 4, 30, tzinfo=UTC))
    assert [r.partition_key for r in due.run_requests] == ["2022-06-23"]  # 28 days before the day that closed
    too_early = _tick(tiny_defs, "nightly_evaluation", datetime(2022, 7, 12, 4, 30, tzinfo=UTC))
    assert not too_early.run_requests and "outside the configured days" in too_early.skip_message
    assert _schedule(tiny_defs, "weekly_retrain").cron_schedule == "0 3 * * 0"


def _sensor_tick(sensor, source, cursor, instance):
    context = dg.build_sensor_context(cursor=cursor, instance=instance, resources={"source": EventSource(directory=str(source))})
    result = sensor.evaluate_tick(context)
    return result.run_requests, result.cursor


def test_new_or_changed_files_trigger_one_ingest_per_table_of_exactly_their_days(tmp_path):
    source = write_source(tmp_path / "src", {"product_buy": [(1, "2022-07-02 10:00:00", 10), (2, "2022-07-04 10:00:00", 11)]})
    (source / "page_visit.parquet").unlink()
    write_table(source / "page_visit", "day-2022-07-03", event_frame("page_visit", [(1, "2022-07-03 09:00:00", 5)]))
    defs = build_definitions(settings_for(source, tmp_path / "home", date(2022, 7, 1), date(2022, 7, 10)))
    sensor = defs.resolve_sensor_def("new_source_files")
    with dg.DagsterInstance.ephemeral() as instance:
        first, cursor = _sensor_tick(sensor, source, None, instance)
        by_asset = {r.asset_selection[0].to_user_string(): r for r in first}
        assert set(by_asset) == {"product_properties", "raw_product_buy", "raw_page_visit"}  # empty files hold no day
        buys = by_asset["raw_product_buy"].tags
        assert (buys["dagster/asset_partition_range_start"], buys["dagster/asset_partition_range_end"]) == ("2022-07-02", "2022-07-04")
        assert _sensor_tick(sensor, source, cursor, instance)[0] == []  # nothing new: no run, however often it ticks

        write_table(source / "page_visit", "day-2022-07-05", event_frame("page_visit", [(2, "2022-07-05 09:00:00", 6)]))
        again, _ = _sensor_tick(sensor, source, cursor, instance)
        assert [r.tags["dagster/asset_partition_range_start"] for r in again] == ["2022-07-05"]
        assert again[0].run_key.startswith("page_visit:") and again[0].run_key not in {r.run_key for r in first}


def test_the_first_tick_over_a_folder_of_daily_files_is_one_run_per_table(tmp_path):
    source = write_source(tmp_path / "src")
    (source / "page_visit.parquet").unlink()
    days = [date(2022, 7, 1) + timedelta(days=i) for i in range(12)]
    for day in days:
        write_table(source / "page_visit", f"day-{day}", event_frame("page_visit", [(1, f"{day} 09:00:00", 5)]))
    write_table(source, "product_buy", event_frame("product_buy", [(1, "1970-01-01 00:00:00", 10)]))  # wild clock
    defs = build_definitions(settings_for(source, tmp_path / "home", days[0], days[-1]))
    with dg.DagsterInstance.ephemeral() as instance:
        requests, _ = _sensor_tick(defs.resolve_sensor_def("new_source_files"), source, None, instance)
    ranges = {
        r.asset_selection[0].to_user_string(): (r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end"))
        for r in requests
    }
    assert len(requests) == len(ranges) == 3
    assert ranges["raw_page_visit"] == (days[0].isoformat(), days[-1].isoformat())
    assert ranges["raw_product_buy"] == (days[0].isoformat(), days[0].isoformat())  # its run quarantines the row
    assert ranges["product_properties"] == (None, None)


def _digest(folder) -> str:
    return hashlib.sha256(b"".join((folder / name).read_bytes() for name in ("client_ids.npy", "embeddings.npy"))).hexdigest()


def test_a_changed_day_refreshes_exactly_the_profiles_that_contain_it(tmp_path):
    config = SyntheticConfig(users=200, days=20, seed=9, start=date(2022, 6, 23))
    generate(config, tmp_path / "src")
    first, last = config.start, config.start + timedelta(days=config.days - 1)
    early, late, changed = first + timedelta(days=8), last, first + timedelta(days=12)
    settings = settings_for(tmp_path / "src", tmp_path / "home", first, last)
    defs = build_definitions(settings)
    profiles = settings.artifact_dir / "universal_profiles"
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(first, last)).success
        for day in (early, late):
            assert materialize(defs, ["user_sequences", "stat_features"], instance, partition=day).success
        trained = {"ops": {model_key(n): {"config": {"training_day": early.isoformat()}} for n in settings.blocks}}
        assert materialize(defs, "group:models", instance, run_config=trained).success
        for day in (early, late):
            assert materialize(defs, ["group:embeddings", "group:profiles"], instance, partition=day).success
        before = {day: (_digest(profiles / day.isoformat()), os.path.getmtime(profiles / day.isoformat() / "embeddings.npy")) for day in (early, late)}

        now = datetime.now(UTC)
        cursor = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now).cursor
        visits = pd.read_parquet(tmp_path / "src" / "page_visit.parquet")
        visits = visits[visits["timestamp"].dt.date != changed]  # the source re-delivers day 12 without its visits
        visits.to_parquet(tmp_path / "src" / "page_visit.parquet", index=False)
        allow_shrink = {"ops": {"raw_events": {"config": {"allow_shrink": True}}}}  # the smaller day is deliberate
        assert materialize(defs, "raw_page_visit", instance, partition=changed, run_config=allow_shrink).success

        next_tick = (now + timedelta(days=1)).replace(hour=5, minute=1, second=0, microsecond=0)
        result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=next_tick, cursor=cursor)
        requested = {
            (key.to_user_string(), partition)
            for key in defs.resolve_asset_graph().get_all_asset_keys()
            for partition in result.get_requested_partitions(key)
        }
        assert all(partition == late.isoformat() for _, partition in requested), requested
        assert {"user_sequences", "stat_features", "universal_profiles"} <= {key for key, _ in requested}
        assert materialize(defs, sorted(key for key, _ in requested), instance, partition=late).success

    assert _digest(profiles / late.isoformat()) != before[late][0]  # the late profile sees the change
    assert _digest(profiles / early.isoformat()) == before[early][0]  # the early one predates it: untouched
    assert os.path.getmtime(profiles / early.isoformat() / "embeddings.npy") == before[early][1]
