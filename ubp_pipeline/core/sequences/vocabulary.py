"""Token ids for high-cardinality fields: the most frequent values get their own id, the rest share one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

PAD, ABSENT, OOV = 0, 1, 2  # padding; the field does not apply to this event type; a value outside the vocabulary
FIRST_VALUE = 3


@dataclass(frozen=True)
class Vocabulary:
    """Values in rank order (most frequent first); value ``values[i]`` has token ``FIRST_VALUE + i``."""

    field: str
    values: np.ndarray

    @property
    def size(self) -> int:
        """Number of token ids, special ones included: the embedding table size."""
        return FIRST_VALUE + len(self.values)

    def encode(self, raw: np.ndarray, absent: np.ndarray | None = None) -> np.ndarray:
        """Token ids of raw values; ``absent`` marks events the field does not apply to (raw value ignored)."""
        order = np.argsort(self.values, kind="stable")
        sorted_values = self.values[order]
        position = np.minimum(np.searchsorted(sorted_values, raw), max(len(sorted_values) - 1, 0))
        found = (sorted_values[position] == raw) if len(sorted_values) else np.zeros(len(raw), dtype=bool)
        tokens = np.where(found, FIRST_VALUE + order[position], OOV).astype(np.int64)
        if absent is not None:
            tokens[absent] = ABSENT
        return tokens

    def fingerprint(self) -> str:
        return hashlib.sha256(
            self.field.encode() + np.ascontiguousarray(self.values, dtype=np.int64).tobytes()
        ).hexdigest()[:12]


def load_vocabularies(path: str | Path) -> dict[str, Vocabulary]:
    """All vocabularies of a ``vocabulary.parquet`` written by sql/sequences/sequence_vocabulary.sql."""
    table = pq.read_table(path)
    vocabularies = {}
    for field in pc.unique(table["field"]).to_pylist():
        rows = table.filter(pc.equal(table["field"], field)).sort_by("rank")
        vocabularies[field] = Vocabulary(field, rows["value"].to_numpy().astype(np.int64))
    return vocabularies


def vocabulary_version(vocabularies: dict[str, Vocabulary]) -> str:
    digest = hashlib.sha256("".join(v.fingerprint() for _, v in sorted(vocabularies.items())).encode())
    return digest.hexdigest()[:12]
