"""Universal profiles: blocks concatenated per relevant client, float16, in the challenge's submission layout.

A day's folder holds client_ids.npy (int64) + embeddings.npy (float16, <= 2048 columns) exactly as the challenge
expects, the same rows as profiles.parquet (float32 lists, readable by DuckDB and pandas), and manifest.json (blocks,
column offsets, dims, coverage, model versions and training cutoffs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ubp_pipeline.core.common.atomic import atomic_dir

CLIENT_IDS_FILE = "client_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
TABLE_FILE = "profiles.parquet"
MANIFEST_FILE = "manifest.json"
SELECTION_FILE = "selection.json"  # written by the backtest of a day: the blocks its evidence chose
MAX_DIMS = 2048
FLOAT16_MAX = float(np.finfo(np.float16).max)


class ProfileError(ValueError):
    """The profile cannot be written as it is (too wide, not finite, overflowing float16)."""


@dataclass(frozen=True)
class BlockVectors:
    """One block of one day: transformed vectors of the users it covers, the fill for the others, provenance."""

    name: str
    client_ids: np.ndarray
    vectors: np.ndarray
    fill: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profiles:
    client_ids: np.ndarray
    embeddings: np.ndarray  # float16
    manifest: dict[str, Any]


def _block_columns(clients: np.ndarray, block: BlockVectors) -> tuple[np.ndarray, np.ndarray]:
    """The block's columns for ``clients`` (fill where the block has no row) and which clients it covers."""
    values = np.repeat(block.fill[None, :].astype(np.float32), len(clients), axis=0)
    if len(block.client_ids) == 0:
        return values, np.zeros(len(clients), dtype=bool)
    order = np.argsort(block.client_ids, kind="stable")
    sorted_ids = block.client_ids[order]
    position = np.minimum(np.searchsorted(sorted_ids, clients), len(sorted_ids) - 1)
    found = sorted_ids[position] == clients
    values[found] = block.vectors[order[position[found]]]
    return values, found


def assemble_profiles(blocks: list[BlockVectors], clients: np.ndarray) -> Profiles:
    """Concatenate blocks for ``clients`` (each exactly once, in the given order); absent users get the block's fill."""
    if len(np.unique(clients)) != len(clients):
        raise ProfileError("the client list holds duplicates")
    dims = sum(len(b.fill) for b in blocks)
    if dims > MAX_DIMS:
        raise ProfileError(f"{dims} dimensions exceed the limit of {MAX_DIMS}: drop a block or reduce PCA dims")
    matrix = np.empty((len(clients), dims), dtype=np.float32)
    manifest_blocks, offset = [], 0
    for block in blocks:
        width = len(block.fill)
        matrix[:, offset : offset + width], found = _block_columns(clients, block)
        manifest_blocks.append(
            {"name": block.name, "offset": offset, "dims": width, "coverage": float(found.mean()) if len(found) else 0.0, **block.provenance}
        )
        offset += width
    if not np.isfinite(matrix).all():
        bad = sorted({b["name"] for b in manifest_blocks if not np.isfinite(matrix[:, b["offset"] : b["offset"] + b["dims"]]).all()})
        raise ProfileError(f"non-finite values in blocks {bad}")
    peak = float(np.abs(matrix).max()) if matrix.size else 0.0
    if peak > FLOAT16_MAX:
        raise ProfileError(f"a value of magnitude {peak:.3g} overflows float16 (max {FLOAT16_MAX})")
    manifest = {"users": len(clients), "dims": dims, "dtype": "float16", "blocks": manifest_blocks}
    return Profiles(client_ids=clients.astype(np.int64), embeddings=matrix.astype(np.float16), manifest=manifest)


def write_profiles(profiles: Profiles, out_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path:
    """Write the four files into ``out_dir``, replacing a previous version of the day in one swap."""
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / CLIENT_IDS_FILE, profiles.client_ids)
        np.save(tmp / EMBEDDINGS_FILE, profiles.embeddings)
        dims = profiles.embeddings.shape[1]
        values = pa.array(profiles.embeddings.astype(np.float32).ravel())
        table = pa.table({"client_id": profiles.client_ids, "embedding": pa.FixedSizeListArray.from_arrays(values, dims)})
        pq.write_table(table, tmp / TABLE_FILE)
        (tmp / MANIFEST_FILE).write_text(json.dumps({**profiles.manifest, **(extra_manifest or {})}, indent=2, default=str))
    return Path(out_dir)


def validate_profiles(folder: str | Path, relevant_clients: np.ndarray | None = None) -> list[str]:
    """Problems that would make the challenge's validator (or a downstream model) reject the files; [] when valid."""
    folder = Path(folder)
    problems: list[str] = []
    try:
        client_ids = np.load(folder / CLIENT_IDS_FILE)
        embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
    except (OSError, ValueError) as error:
        return [f"cannot read the profile files in {folder}: {error}"]
    if client_ids.ndim != 1 or client_ids.dtype != np.int64:
        problems.append(f"{CLIENT_IDS_FILE}: expected 1-D int64, got {client_ids.ndim}-D {client_ids.dtype}")
    if embeddings.ndim != 2 or embeddings.dtype != np.float16:
        problems.append(f"{EMBEDDINGS_FILE}: expected 2-D float16, got {embeddings.ndim}-D {embeddings.dtype}")
    elif embeddings.shape[1] > MAX_DIMS:
        problems.append(f"{EMBEDDINGS_FILE}: {embeddings.shape[1]} columns exceed {MAX_DIMS}")
    if len(embeddings) != len(client_ids):
        problems.append(f"{len(client_ids)} client ids but {len(embeddings)} embedding rows")
    if len(np.unique(client_ids)) != len(client_ids):
        problems.append(f"{CLIENT_IDS_FILE}: {len(client_ids) - len(np.unique(client_ids))} duplicate ids")
    if embeddings.dtype.kind == "f" and not np.isfinite(embeddings).all():
        problems.append(f"{EMBEDDINGS_FILE}: {int((~np.isfinite(embeddings)).sum())} NaN or infinite values")
    if relevant_clients is not None:
        missing = np.setdiff1d(relevant_clients, client_ids)
        extra = np.setdiff1d(client_ids, relevant_clients)
        if len(missing):
            problems.append(f"{len(missing)} relevant clients are missing (e.g. {missing[:3].tolist()})")
        if len(extra):
            problems.append(f"{len(extra)} client ids are not relevant clients (e.g. {extra[:3].tolist()})")
    return problems


def latest_selection(backtest_root: str | Path, day: date) -> dict | None:
    """The newest block selection usable for a profile of ``day``: its evidence (purchases up to ``evidence_until``)
    must end on or before that day, so a selection never shapes a profile that its own backtest evaluates."""
    usable = []
    for path in Path(backtest_root).glob(f"*/{SELECTION_FILE}"):
        selection = json.loads(path.read_text())
        if selection["evidence_until"] <= day.isoformat():
            usable.append({**selection, "path": str(path)})
    return max(usable, key=lambda s: s["decided_on"], default=None)
