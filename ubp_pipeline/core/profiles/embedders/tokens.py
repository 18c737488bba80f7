"""Per-field token ids for every event of a sequences partition: the input of the sequence models.

Each field has its own id space with the shared specials PAD=0, ABSENT=1 (the field does not apply to this event
type) and OOV=2 (a value outside the vocabulary). Time enters as days/weeks *before the as-of day*, not as a calendar
index: a model trained with one cutoff then reads the same behaviour the same way on any later day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubp_pipeline.core.sequences.schema import PRICE_BUCKETS
from ubp_pipeline.core.sequences.user_sequences import VOCABULARY_FILE, UserSequences, load_sequences, read_manifest
from ubp_pipeline.core.sequences.vocabulary import ABSENT, FIRST_VALUE, Vocabulary, load_vocabularies
from ubp_pipeline.core.warehouse.events import EVENT_CODE, EVENT_TYPES, PRODUCT_EVENT_TYPES

FIELDS = ("event_type", "category", "sku", "price", "url", "days_ago", "weeks_ago")
_PRODUCT_CODES = np.array([EVENT_CODE[t] for t in PRODUCT_EVENT_TYPES])


@dataclass(frozen=True)
class TokenSpace:
    """Everything needed to tokenize any day the same way: the vocabularies of the training day and the lookback."""

    vocabularies: dict[str, Vocabulary]
    lookback_days: int

    def size(self, field: str) -> int:
        """Number of ids of a field, specials included (the embedding table size)."""
        if field in self.vocabularies:
            return self.vocabularies[field].size
        return FIRST_VALUE + {
            "event_type": len(EVENT_TYPES),
            "price": PRICE_BUCKETS,
            "days_ago": self.lookback_days,
            "weeks_ago": self.lookback_days // 7 + 1,
        }[field]

    def most_frequent(self, limit: int | None) -> TokenSpace:
        """The same space with every vocabulary cut to its ``limit`` most frequent values (None: uncut). Output heads
        cost width x vocabulary per event, the bulk of a step on CPU."""
        if limit is None:
            return self
        vocabularies = {name: Vocabulary(name, v.values[:limit]) for name, v in self.vocabularies.items()}
        return TokenSpace(vocabularies, self.lookback_days)

    def tokenize(self, sequences: UserSequences, as_of_day: int, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
        """Flat int64 ids per field, aligned with the events of ``sequences`` (``as_of_day`` = day index of the cut)."""
        is_product = np.isin(sequences.event_type, _PRODUCT_CODES)
        is_visit = sequences.event_type == EVENT_CODE["page_visit"]
        days_ago = np.clip(as_of_day - sequences.day, 0, self.lookback_days - 1)
        builders = {
            "event_type": lambda: FIRST_VALUE + sequences.event_type,
            "category": lambda: self.vocabularies["category"].encode(sequences.category, absent=~is_product),
            "sku": lambda: self.vocabularies["sku"].encode(sequences.sku, absent=~is_product),
            "url": lambda: self.vocabularies["url"].encode(sequences.url, absent=~is_visit),
            "price": lambda: np.where(is_product, FIRST_VALUE + np.clip(sequences.price, 0, PRICE_BUCKETS - 1), ABSENT),
            "days_ago": lambda: FIRST_VALUE + days_ago,
            "weeks_ago": lambda: FIRST_VALUE + days_ago // 7,
        }
        return {field: builders[field]().astype(np.int64) for field in fields}

    def to_state(self) -> dict[str, np.ndarray]:
        """The vocabularies as arrays, to be stored with a model's weights."""
        return {f"vocabulary.{name}": v.values for name, v in self.vocabularies.items()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], lookback_days: int) -> TokenSpace:
        prefix = "vocabulary."
        vocabularies = {k[len(prefix) :]: Vocabulary(k[len(prefix) :], np.asarray(v)) for k, v in state.items() if k.startswith(prefix)}
        return cls(vocabularies=vocabularies, lookback_days=lookback_days)


@dataclass(frozen=True)
class SequenceInput:
    """A sequences partition loaded for a model: the sequences, the cut's day index and the partition's settings."""

    sequences: UserSequences
    as_of_day: int
    lookback_days: int
    vocabularies: dict[str, Vocabulary]

    @classmethod
    def load(cls, folder: str | Path) -> SequenceInput:
        folder = Path(folder)
        spec = read_manifest(folder)["spec"]
        as_of_day = (np.datetime64(spec["as_of"]) - np.datetime64(spec["first_day"])).astype(int)
        return cls(
            sequences=load_sequences(folder),
            as_of_day=int(as_of_day),
            lookback_days=int(spec["lookback_days"]),
            vocabularies=load_vocabularies(folder / VOCABULARY_FILE),
        )

    def token_space(self) -> TokenSpace:
        return TokenSpace(self.vocabularies, self.lookback_days)
