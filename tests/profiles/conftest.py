"""Fixtures shared by the sequence-model tests."""

import pytest

from ubp_pipeline.core.common.device import make_runtime


@pytest.fixture(scope="module")
def runtime():
    """CPU, seeded, one thread: tiny models gain nothing from more, and on a shared machine extra threads only wait."""
    return make_runtime("cpu", seed=0, threads=1)
