"""Item sequences over skus, read from a `user_sequences` partition: what the sequential recommender trains on.

Only product events (add to cart, remove from cart, buy) name a sku, so only they become items, in the partition's
time order. A cart followed by the buy of the same sku is one interest, not two: consecutive repeats of a sku are
collapsed by default (otherwise "the sku you just carted" would be the easiest next item to predict, and the
evaluation, which never counts an item already in the history as a hit, could not reward it anyway).

Items carry two attributes for the annotations: ``category`` (the category id, ``category:12``) and ``price``, the
price bucket (0-99, a percentile of the catalogue) banded into ``price_bands`` bands (``price:90-99`` with deciles).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ubp_pipeline.core.recommender.item_sequences import ItemSequences, build_item_sequences
from ubp_pipeline.core.sequences.schema import PRICE_BUCKETS
from ubp_pipeline.core.sequences.user_sequences import load_sequences
from ubp_pipeline.core.warehouse.events import EVENT_CODE, PRODUCT_EVENT_TYPES


@dataclass(frozen=True)
class SkuSequenceOptions:
    min_item_count: int = 5  # skus with fewer (collapsed) product events are dropped: too rare to learn from
    min_length: int = 3  # users with fewer items are dropped (leave-one-out needs 3)
    buys_and_carts_only: bool = False  # leave out remove_from_cart
    collapse_repeats: bool = True  # consecutive events on the same sku count once
    price_bands: int = 10  # price buckets 0-99 banded into this many equal ranges


@dataclass(frozen=True)
class SkuEvents:
    """The product events kept as interactions, in time order per user (``order`` = position in the partition)."""

    client_id: np.ndarray
    sku: np.ndarray
    category: np.ndarray
    price: np.ndarray
    order: np.ndarray

    def select(self, rows: np.ndarray) -> SkuEvents:
        return SkuEvents(self.client_id[rows], self.sku[rows], self.category[rows], self.price[rows], self.order[rows])


def read_sku_events(folder: str | Path, options: SkuSequenceOptions) -> SkuEvents:
    """The partition's product events with a sku, optionally without removals and with consecutive repeats collapsed."""
    sequences = load_sequences(folder)
    kinds = [kind for kind in PRODUCT_EVENT_TYPES if not (options.buys_and_carts_only and kind == "remove_from_cart")]
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    rows = np.flatnonzero(np.isin(sequences.event_type, [EVENT_CODE[kind] for kind in kinds]) & (sequences.sku >= 0))
    if options.collapse_repeats and len(rows):
        repeat = (owner[rows][1:] == owner[rows][:-1]) & (sequences.sku[rows][1:] == sequences.sku[rows][:-1])
        rows = rows[np.concatenate([[True], ~repeat])]
    return SkuEvents(
        client_id=sequences.client_ids[owner[rows]],
        sku=sequences.sku[rows],
        category=sequences.category[rows],
        price=sequences.price[rows],
        order=rows,
    )


def price_band_labels(price: np.ndarray, bands: int) -> np.ndarray:
    """Each price bucket's band as ``lo-hi`` (inclusive bucket bounds): 95 -> ``90-99`` with 10 bands."""
    lows = -(-np.arange(bands + 1) * PRICE_BUCKETS // bands)  # ceil(b * 100 / bands): the first bucket of band b
    labels = np.asarray([f"{lows[b]}-{lows[b + 1] - 1}" for b in range(bands)], dtype=object)
    return labels[np.asarray(price) * bands // PRICE_BUCKETS]


def build_sku_sequences(folder: str | Path, options: SkuSequenceOptions = SkuSequenceOptions()) -> ItemSequences:
    """Sequences with their own item vocabulary (the frequent skus), named ``sku <id> (category <c>, price <p>)``
    and carrying the ``category`` and ``price`` attributes."""
    events = read_sku_events(folder, options)
    skus, first = np.unique(events.sku, return_index=True)
    category, price = events.category[first], events.price[first]
    names = {int(s): f"sku {s} (category {c}, price {p})" for s, c, p in zip(skus, category, price)}
    sequences = build_item_sequences(
        events.client_id,
        events.sku,
        events.order,
        min_item_count=options.min_item_count,
        min_length=options.min_length,
        item_names=names,
    )
    return sequences.with_categorical("category", skus, category).with_categorical(
        "price", skus, price_band_labels(price, options.price_bands)
    )


def sku_sequences_over(
    folder: str | Path, vocabulary: ItemSequences, options: SkuSequenceOptions = SkuSequenceOptions()
) -> ItemSequences:
    """The partition's sequences over a trained recommender's items: skus it does not know are dropped, item indices,
    names and attributes are the vocabulary's (``options.min_item_count`` is not applied: the vocabulary decides)."""
    events = read_sku_events(folder, options)
    events = events.select(np.flatnonzero(np.isin(events.sku, vocabulary.item_ids)))
    local = build_item_sequences(events.client_id, events.sku, events.order, min_length=options.min_length)
    index = np.searchsorted(vocabulary.item_ids, local.item_ids) + 1  # vocabulary.item_ids is sorted (np.unique)
    return replace(vocabulary, items=index[local.items - 1], offsets=local.offsets, user_ids=local.user_ids)
