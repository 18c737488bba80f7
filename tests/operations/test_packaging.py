"""A non-editable install carries the SQL: the wheel holds sql/ inside the package and runs it from there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOT_SOURCE = (".git", ".venv", "data", "dagster_home", "build", "*.egg-info", "__pycache__", ".pytest_cache", "bench")


def test_the_wheel_carries_every_sql_file_and_runs_one_from_the_installed_package(tmp_path):
    # built from a copy, as a clean checkout would be, so the build leaves nothing in the working tree
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path), str(source)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("ubp_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name.removeprefix("ubp_pipeline/sql/") for name in archive.namelist() if name.endswith(".sql")}
        archive.extractall(tmp_path / "installed")
    assert packaged == {str(p.relative_to(REPO / "sql")) for p in (REPO / "sql").rglob("*.sql")}

    # The extracted wheel first on the path, started away from the source tree: the schema is created from its SQL.
    script = (
        "import json, duckdb, ubp_pipeline\n"
        "from ubp_pipeline.core.common.sql import run_sql\n"
        "con = duckdb.connect()\n"
        "run_sql(con, 'warehouse/schema')\n"
        "print(ubp_pipeline.__file__)\n"
        "print(json.dumps(sorted(r[0] for r in con.execute('SELECT table_name FROM information_schema.tables').fetchall())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(tmp_path / "installed")
    assert {"events", "quarantine", "product_properties"} <= set(json.loads(out[1]))
