"""The daily partitions: one per event day of the data set, with an end date (historical data never runs to today)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg

from ubp_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Fixed days for a data set; for a live deployment every complete day up to yesterday."""
    end = None if settings.is_live else (settings.last_day + timedelta(days=1)).isoformat()
    return dg.DailyPartitionsDefinition(start_date=settings.first_day.isoformat(), end_date=end)


def partition_day(key: str) -> date:
    return date.fromisoformat(key)


def window_days(window: dg.TimeWindow) -> tuple[date, date]:
    """First and last day (inclusive) covered by a partition time window."""
    start: datetime = window.start
    end: datetime = window.end
    return start.date(), (end - timedelta(days=1)).date()
