"""Find the input files of a source directory in the challenge layout and check their schemas before any row is read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ubp_pipeline.core.warehouse.events import EVENT_TYPES, PAYLOAD_COLUMN

PRODUCT_PROPERTIES = "product_properties"
RELEVANT_CLIENTS = Path("input") / "relevant_clients.npy"


class SourceError(ValueError):
    """The source files cannot be ingested as they are; the message names the file and column at fault."""


def _is_integer(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_time(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or _is_text(t)


_KIND_CHECKS = {"integer": _is_integer, "text": _is_text, "timestamp or text": _is_time}
_PAYLOAD_KIND = {"sku": "integer", "url": "integer", "query": "text"}

EXPECTED_COLUMNS: dict[str, dict[str, str]] = {
    **{
        event_type: {"client_id": "integer", "timestamp": "timestamp or text", column: _PAYLOAD_KIND[column]}
        for event_type, column in PAYLOAD_COLUMN.items()
    },
    PRODUCT_PROPERTIES: {"sku": "integer", "category": "integer", "price": "integer", "name": "text"},
}


@dataclass(frozen=True)
class SourceLayout:
    """A directory with one parquet file per table (``page_visit.parquet``) or a folder of them (``page_visit/``)."""

    directory: Path

    def files(self, table: str) -> list[Path]:
        single = self.directory / f"{table}.parquet"
        folder = self.directory / table
        if single.is_file():
            return [single]
        if folder.is_dir():
            found = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
            if not found:
                raise SourceError(f"{table}: folder {folder} holds no .parquet file")
            return found
        raise SourceError(f"{table}: neither {single} nor a folder {folder}/ exists in the source directory")

    def checked_files(self, table: str) -> list[Path]:
        """The table's files, each verified to have the expected columns with usable types."""
        files = self.files(table)
        for path in files:
            check_schema(path, table)
        return files

    @property
    def relevant_clients(self) -> Path | None:
        path = self.directory / RELEVANT_CLIENTS
        return path if path.is_file() else None

    def event_types_present(self) -> list[str]:
        return [t for t in EVENT_TYPES if (self.directory / f"{t}.parquet").exists() or (self.directory / t).is_dir()]


def check_schema(path: Path, table: str) -> None:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceError(f"{table}: file {path} is not a readable parquet file ({exc})") from exc
    for column, kind in EXPECTED_COLUMNS[table].items():
        index = schema.get_field_index(column)
        if index < 0:
            raise SourceError(
                f"{table}: file {path} has no column '{column}' (found: {', '.join(schema.names) or 'none'})"
            )
        found = schema.field(index).type
        if not (_KIND_CHECKS[kind](found) or pa.types.is_null(found)):  # an all-null column: rows get quarantined
            raise SourceError(f"{table}: file {path}, column '{column}' has type {found}, expected {kind}")


@contextmanager
def reading_source(table: str, files: list[Path]) -> Iterator[None]:
    """Turn DuckDB's failure to decode a source file into a SourceError naming the file and, where the parquet reader
    can tell, the row group and column: corrupt bytes are bad input, never a transient fault worth retrying."""
    try:
        yield
    except duckdb.InvalidInputException as error:
        named = re.search(r'file "([^"]+)"', str(error))  # DuckDB names the file it failed on: look there first
        suspects = sorted(files, key=lambda path: not named or str(path) != named.group(1))
        where = next((found for found in map(_corruption, suspects) if found), None)
        raise SourceError(f"{table}: {where or f'could not read {describe_files(files)} ({error})'}") from error


def _corruption(path: Path) -> str | None:
    """Where a parquet file fails to decode (first row group and column that do), or None if it reads whole."""
    reader = pq.ParquetFile(path)
    for group in range(reader.num_row_groups):
        for column in reader.schema_arrow.names:
            try:
                reader.read_row_group(group, columns=[column])
            except (OSError, pa.ArrowException) as exc:
                return (
                    f"file {path} is corrupt in row group {group} (of {reader.num_row_groups}), "
                    f"column '{column}' ({exc}); re-export or remove the file"
                )
    return None


def describe_files(files: list[Path], shown: int = 3) -> str:
    """A short list of file names for a message: the first few, then how many more."""
    names = ", ".join(map(str, files[:shown]))
    return names + (f" and {len(files) - shown} more" if len(files) > shown else "")


def load_relevant_clients(layout: SourceLayout, fallback: list[np.ndarray]) -> np.ndarray:
    """The users to profile: input/relevant_clients.npy when the source has it, else everyone in ``fallback``."""
    path = layout.relevant_clients
    if path is None:
        return np.unique(np.concatenate(fallback)).astype(np.int64) if fallback else np.zeros(0, np.int64)
    clients = np.load(path)
    if clients.ndim != 1 or not np.issubdtype(clients.dtype, np.integer):
        raise SourceError(f"{path}: expected a 1-D integer array of client ids, got {clients.ndim}-D {clients.dtype}")
    if len(np.unique(clients)) != len(clients):
        raise SourceError(f"{path}: {len(clients) - len(np.unique(clients))} client ids appear more than once")
    return clients.astype(np.int64)
