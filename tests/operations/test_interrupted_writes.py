"""A write killed before its swap leaves a temporary folder behind; the next write of the same target removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.operations.test_faults import KILLED_WRITER, REPO
from ubp_pipeline.core.common.atomic import atomic_dir


def test_the_next_write_removes_the_temporary_folder_of_a_killed_one(tmp_path):
    target = tmp_path / "model"
    ready = tmp_path / "ready"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target), str(ready)], env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    deadline = time.monotonic() + 60
    while not ready.exists():  # the writer is inside its write: the temporary folder holds half of the new files
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the middle of its write"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    (leftover,) = tmp_path.glob(".model.tmp-*")
    assert (leftover / "weights.bin").read_bytes() == b"half of the new"

    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"the new weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "ready"]
    assert (target / "weights.bin").read_bytes() == b"the new weights"


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "profiles"
    with atomic_dir(target) as outer:
        (outer / "part").write_text("still being written")
        with atomic_dir(target) as inner:  # a second writer of the same target, in a process that is alive
            (inner / "part").write_text("other")
        assert (outer / "part").read_text() == "still being written"
