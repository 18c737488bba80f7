"""Write files and folders so that readers see the old version or the new one, never half of either.

A temporary sibling is named ``.<name>.tmp-<host>-<pid>-<random>``: a write killed before its swap leaves it behind,
and the next write of the same target removes the ones whose process on this host is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_abandoned_temps(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by killed writers on this host (a live writer's are kept); returns them."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-{_host()}-(\d+)-[0-9a-f]{{8}}")
    abandoned = [
        sibling
        for sibling in path.parent.glob(f".{path.name}.tmp-*")
        if (match := pattern.fullmatch(sibling.name)) and not _is_running(int(match.group(1)))
    ]
    for sibling in abandoned:
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
    return abandoned


def _prepare(path: str | os.PathLike) -> tuple[Path, Path]:
    """The target and a fresh temporary name beside it, once the parent exists and dead writers' leftovers are gone."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(target)
    return target, _temp_sibling(target)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name next to ``path``; rename it into place only if the block succeeds."""
    target, tmp = _prepare(path)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success swap it in for ``path`` (the old folder is removed after the swap)."""
    target, tmp = _prepare(path)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = _temp_sibling(target)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
