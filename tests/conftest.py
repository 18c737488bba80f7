"""Shared fixtures: a tiny generated data set and definitions bound to temporary folders."""

from __future__ import annotations

import warnings
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from tests.factories import settings_for
from ubp_pipeline.core.sequences.stat_features import build_stat_features
from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceLayout
from ubp_pipeline.data.synthetic import SyntheticConfig, generate
from ubp_pipeline.definitions import build_definitions

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

TINY = SyntheticConfig(users=400, days=21, seed=7, start=date(2022, 6, 23))


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A 400-user, 21-day synthetic data set, generated once per test session (read-only for tests)."""
    out = tmp_path_factory.mktemp("tiny") / "source"
    generate(TINY, out)
    return out


@pytest.fixture
def tiny_settings(tiny_source, tmp_path):
    last_day = TINY.start + timedelta(days=TINY.days - 1)
    return settings_for(tiny_source, tmp_path / "home", TINY.start, last_day)


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def tiny_defs(tiny_settings):
    return build_definitions(tiny_settings)


TRAIN_DAY = TINY.start + timedelta(days=14)
LAST_DAY = TINY.start + timedelta(days=TINY.days - 1)


@pytest.fixture(scope="session")
def tiny_warehouse(tiny_source, tmp_path_factory) -> Path:
    """The tiny data set ingested (all days) with the core functions, no Dagster; read-only for tests."""
    path = tmp_path_factory.mktemp("tiny_warehouse") / "warehouse.duckdb"
    layout = SourceLayout(tiny_source)
    with connect_warehouse(path) as con:
        ingest_product_properties(con, layout)
        ingest_event_tables(con, layout, EVENT_TYPES, TINY.start, LAST_DAY)
    return path


AS_OF_DAYS = {"train": TRAIN_DAY, "later": LAST_DAY}


def _as_of_partitions(warehouse: Path, home: Path, build) -> dict[str, Path]:
    """``build(con, as_of, folder)`` for the training day and the last day of the tiny data set."""
    folders = {name: home / name for name in AS_OF_DAYS}
    with connect_warehouse(warehouse, read_only=True) as con:
        for name, as_of in AS_OF_DAYS.items():
            build(con, as_of, folders[name])
    return folders


@pytest.fixture(scope="session")
def tiny_sequences(tiny_warehouse, tmp_path_factory) -> dict[str, Path]:
    """Sequences partitions of the tiny data set: {"train": as of day 14, "later": as of the last day} (read-only)."""

    def build(con, as_of, folder):
        build_sequences(con, SequenceSpec(as_of=as_of, first_day=TINY.start, max_events=64, top_skus=300, top_urls=300), folder)

    return _as_of_partitions(tiny_warehouse, tmp_path_factory.mktemp("tiny_sequences"), build)


@pytest.fixture(scope="session")
def tiny_stat_features(tiny_warehouse, tmp_path_factory) -> dict[str, Path]:
    """stat_features partitions of the tiny data set, same days as ``tiny_sequences`` (read-only)."""
    return _as_of_partitions(
        tiny_warehouse, tmp_path_factory.mktemp("tiny_stat_features"), lambda con, as_of, folder: build_stat_features(con, as_of, 180, folder)
    )
