"""Shared fixtures: a tiny generated data set and definitions bound to temporary folders."""

from __future__ import annotations

import warnings
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from tests.factories import settings_for
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
