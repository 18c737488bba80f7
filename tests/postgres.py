"""A real PostgreSQL server for instance-storage tests: Debian's package, a throw-away cluster on a free local port.

The server runs as the `postgres` system user (initdb refuses root) with trust authentication on 127.0.0.1 only, and
is stopped when the fixture ends. Without the package the tests are skipped with the reason on a developer's machine;
on CI (CI=true) that is a failure (`make test` installs the package).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _server_binaries() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*command: str) -> subprocess.CompletedProcess:
    runner = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    done = subprocess.run([*runner, *command], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster in a temporary folder of its own (pytest's folders are closed to other users); yield its
    SQLAlchemy URL (psycopg2, database `dagster`); stop it and remove the folder."""
    binaries = _server_binaries()
    if binaries is None:
        if os.environ.get("CI"):
            raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql); Postgres storage tests skipped")
    root = Path(tempfile.mkdtemp(prefix="ubp-postgres-"))
    data, port = root / "pgdata", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    _as_postgres(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    try:
        _as_postgres(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dagster")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    finally:
        _as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def postgres_home(home: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the deployment's Postgres config (deploy/dagster.postgres.yaml), which
    reads the server's URL from DAGSTER_PG_URL."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    return home
