"""Per-user item sequences with item attributes: the one input the sequential recommender needs, whatever the source.

Sequences are stored ragged (one flat item array plus offsets) so a million users cost two numpy arrays, and every
operation below is vectorised: no Python loop runs once per interaction. Items are re-indexed to 1..n_items so that
0 can mean padding everywhere (embeddings, batches, attribute tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

PADDING = 0


@dataclass(frozen=True)
class ItemAttribute:
    """A named item property as a boolean table: one row per item index (row 0 = padding, all False), one column per
    value. Categorical attributes are the one-hot special case, so every consumer handles a single shape."""

    name: str
    labels: tuple[str, ...]
    table: np.ndarray

    def key(self, value: int) -> str:
        """The human-readable address of one value, e.g. ``genre:Drama`` or ``category:12``."""
        return f"{self.name}:{self.labels[value]}"

    def describe(self, items: np.ndarray) -> list[str]:
        """The value labels of each item, joined by ``|`` (items can carry several values of a multi-hot attribute)."""
        labels = np.asarray(self.labels, dtype=object)
        return ["|".join(labels[row]) for row in self.table[items]]


@dataclass(frozen=True)
class ItemSequences:
    """Ordered item indices per user. Item index ``i`` (1..n_items) has raw id ``item_ids[i - 1]``; per-item arrays
    that are looked up with padded batches (``item_names``, attribute tables) have a padding row 0 instead."""

    items: np.ndarray
    offsets: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_names: np.ndarray
    attributes: dict[str, ItemAttribute] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def has_value(self, key: str) -> np.ndarray:
        """(n_items + 1,) bool: which items carry the attribute value addressed as ``name:label`` (``genre:Drama``)."""
        name, _, label = key.partition(":")
        if name not in self.attributes or label not in self.attributes[name].labels:
            raise KeyError(f"no item attribute value {key!r}; attributes: {sorted(self.attributes)}")
        attribute = self.attributes[name]
        return attribute.table[:, attribute.labels.index(label)]

    @property
    def n_attribute_values(self) -> int:
        return sum(len(attribute.labels) for attribute in self.attributes.values())

    def attribute_index(self) -> np.ndarray:
        """(n_items + 1, most values one item carries) int64: the values of every attribute each item carries,
        numbered 1.. across the attributes in order, then 0 in the unused slots (and everywhere in padding's row)."""
        rows, columns, offset = [], [], 0
        for attribute in self.attributes.values():
            item, value = np.nonzero(attribute.table)
            rows.append(item)
            columns.append(value + offset + 1)
            offset += len(attribute.labels)
        item, value = np.concatenate([np.zeros(0, np.int64), *rows]), np.concatenate([np.zeros(0, np.int64), *columns])
        order = np.argsort(item, kind="stable")
        item, value = item[order], value[order]
        carried = np.bincount(item, minlength=self.n_items + 1)
        slot = np.arange(len(item)) - np.repeat(np.cumsum(carried) - carried, carried)
        index = np.zeros((self.n_items + 1, int(carried.max(initial=0))), dtype=np.int64)
        index[item, slot] = value
        return index

    def item_counts(self) -> np.ndarray:
        """How often each item index occurs (length n_items + 1, padding count 0): the popularity baseline's scores."""
        return np.bincount(self.items, minlength=self.n_items + 1)

    def drop_last(self, n: int) -> ItemSequences:
        """The same users with each sequence's last ``n`` items removed (sequences never go below empty)."""
        lengths = self.lengths
        position = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], lengths)
        keep = position < np.repeat(lengths - n, lengths)
        offsets = np.concatenate([[0], np.cumsum(np.maximum(lengths - n, 0))])
        return replace(self, items=self.items[keep], offsets=offsets)

    def last_items(self, users: np.ndarray) -> np.ndarray:
        return self.items[self.offsets[users + 1] - 1]

    def padded(self, users: np.ndarray, width: int) -> np.ndarray:
        """The last ``width`` items of each user, left-padded with 0 so the newest item is always in the last column."""
        return self._gather(self.offsets[users], self.offsets[users + 1], width)

    def windows(self, width: int) -> np.ndarray:
        """Every sequence cut into left-padded windows of ``width`` items, consecutive windows sharing one item, so each
        (item, next item) pair of every user appears in exactly one window: one pass over them is one epoch."""
        owners, ends = self.window_bounds(width)
        return self._gather(self.offsets[owners], ends, width)

    def window_bounds(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, end offset into ``items``) of each window ``windows(width)`` returns, in the same order."""
        lengths = self.lengths
        n_windows = np.where(lengths >= 2, -(-(lengths - 1) // (width - 1)), 0)
        owners = np.repeat(np.arange(self.n_users), n_windows)
        back = np.arange(len(owners)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        return owners, self.offsets[owners + 1] - back * (width - 1)

    def _gather(self, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
        index = ends[:, None] - width + np.arange(width)[None, :]
        valid = index >= starts[:, None]
        return np.where(valid, self.items[np.clip(index, 0, None)], PADDING)

    def with_multi_hot(self, name: str, item_ids: np.ndarray, table: np.ndarray, labels: list[str]) -> ItemSequences:
        """Attach an attribute given as a boolean table over raw item ids; items without a row get no value."""
        row = pd.Index(item_ids).get_indexer(self.item_ids)
        aligned = np.zeros((self.n_items + 1, len(labels)), dtype=bool)
        known = row >= 0
        aligned[1:][known] = np.asarray(table, dtype=bool)[row[known]]
        attribute = ItemAttribute(name=name, labels=tuple(str(label) for label in labels), table=aligned)
        return replace(self, attributes={**self.attributes, name: attribute})

    def with_categorical(self, name: str, item_ids: np.ndarray, values: np.ndarray) -> ItemSequences:
        """Attach an attribute with one value per item (e.g. ``category`` or ``price_bucket`` of a sku); only values of
        items that occur in the sequences become columns."""
        present = np.isin(item_ids, self.item_ids)
        item_ids, values = np.asarray(item_ids)[present], np.asarray(values)[present]
        labels, codes = np.unique(values, return_inverse=True)
        one_hot = np.zeros((len(codes), len(labels)), dtype=bool)
        one_hot[np.arange(len(codes)), codes] = True
        return self.with_multi_hot(name, item_ids, one_hot, [str(label) for label in labels])


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Leave-one-out by position. Each split is "predict the last item of every sequence from the items before it":
    ``test`` is the full sequences, ``valid`` drops the last item, ``train`` drops the last two."""

    train: ItemSequences
    valid: ItemSequences
    test: ItemSequences


def leave_one_out(sequences: ItemSequences) -> LeaveOneOutSplit:
    if sequences.n_users and sequences.lengths.min() < 3:
        raise ValueError("leave-one-out needs at least 3 items per user; build the sequences with min_length >= 3")
    return LeaveOneOutSplit(train=sequences.drop_last(2), valid=sequences.drop_last(1), test=sequences)


def build_item_sequences(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    order: np.ndarray,
    *,
    min_item_count: int = 1,
    min_length: int = 3,
    item_names: dict | None = None,
) -> ItemSequences:
    """Group flat interaction rows into ordered per-user sequences.

    Rows are ordered by ``order`` (e.g. a timestamp); the sort is stable, so rows with equal values keep their input
    order (the log's own order is the best tie-break a source has; pass a finer ``order`` to override it). Items
    seen fewer than ``min_item_count`` times are dropped first, then users left with fewer than ``min_length`` items.
    """
    user_ids, item_ids, order = np.asarray(user_ids), np.asarray(item_ids), np.asarray(order)
    rows = np.lexsort((order, user_ids))
    user_ids, item_ids = user_ids[rows], item_ids[rows]

    unique_items, item_counts = np.unique(item_ids, return_counts=True)
    frequent = np.isin(item_ids, unique_items[item_counts >= min_item_count])
    user_ids, item_ids = user_ids[frequent], item_ids[frequent]

    unique_users, user_lengths = np.unique(user_ids, return_counts=True)  # rows are grouped by user, in this order
    kept_users = user_lengths >= min_length
    item_ids = item_ids[np.repeat(kept_users, user_lengths)]
    unique_users, user_lengths = unique_users[kept_users], user_lengths[kept_users]

    kept_items, item_index = np.unique(item_ids, return_inverse=True)
    names = ["<padding>"] + [str((item_names or {}).get(item, item)) for item in kept_items.tolist()]
    return ItemSequences(
        items=(item_index + 1).astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(user_lengths)]).astype(np.int64),
        user_ids=unique_users,
        item_ids=kept_items,
        item_names=np.asarray(names, dtype=object),
    )
