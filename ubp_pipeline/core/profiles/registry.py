"""The profile's blocks: which embedder, with which hyper-parameters, reduced and scaled how.

A block is configuration, not code: the GRU autoencoder variants of the method are entries over one class.
`version` is the block's Dagster code_version; bump it when its code or defaults change so models show as stale.
Embedders are named by import path and loaded on use, so reading this registry (as the Dagster webserver does)
never imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ubp_pipeline.core.profiles.embedders.base import Embedder

Scaling = Literal["l2", "none"]


@dataclass(frozen=True)
class BlockSpec:
    name: str
    embedder: str  # "module:Class" of an Embedder
    input_asset: str  # the daily asset whose partition folders the embedder reads
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the embedder's default config
    pca_dims: int | None = None
    scaling: Scaling = "l2"
    version: str = "1"
    description: str = ""
    distributable: bool = False  # its training loop can run data-parallel under torchrun

    def build(self, overrides: dict[str, Any] | None = None) -> Embedder:
        """The embedder with this block's params, further overridden field by field (e.g. from run config)."""
        module, cls_name = self.embedder.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        return cls(dataclasses.replace(cls.config_class(), **{**self.params, **(overrides or {})}))


BLOCKS: dict[str, BlockSpec] = {
    spec.name: spec
    for spec in (
        BlockSpec(
            "gru_day_event",
            "ubp_pipeline.core.profiles.embedders.gru_autoencoder:GRUAutoencoderEmbedder",
            input_asset="user_sequences",
            params={"fields": ("days_ago", "event_type"), "max_epochs": 4},
            description="GRU sequence autoencoder over (days before the cut, event type): when and what a user does.",
            distributable=True,
        ),
        BlockSpec(
            "gru_week_all",
            "ubp_pipeline.core.profiles.embedders.gru_autoencoder:GRUAutoencoderEmbedder",
            input_asset="user_sequences",
            params={"fields": ("weeks_ago", "event_type", "category", "price", "sku", "url")},
            pca_dims=64,
            description="GRU sequence autoencoder over week, event type, category, price, sku and url, PCA to 64.",
            distributable=True,
        ),
        BlockSpec(
            "next_event",
            "ubp_pipeline.core.profiles.embedders.next_event:NextEventEmbedder",
            input_asset="user_sequences",
            description="Causal transformer over product events predicting the next category, event type and price.",
            distributable=True,
        ),
        BlockSpec(
            "statistics",
            "ubp_pipeline.core.profiles.embedders.statistics:StatisticsEmbedder",
            input_asset="stat_features",
            scaling="none",
            description="Counts, recency, gaps, trends, popularity, prices and cart-to-buy conversion (SQL), quantile-scaled.",
        ),
        BlockSpec(
            "als_categories",
            "ubp_pipeline.core.profiles.embedders.als:ALSEmbedder",
            input_asset="user_sequences",
            params={"item_field": "category", "event_weights": {"product_buy": 3.0, "add_to_cart": 1.0}},
            description="ALS user factors over user x category (buy weight 3, cart weight 1).",
        ),
        BlockSpec(
            "als_urls",
            "ubp_pipeline.core.profiles.embedders.als:ALSEmbedder",
            input_asset="user_sequences",
            params={"item_field": "url", "event_weights": {"page_visit": 1.0}},
            description="ALS user factors over user x url (page visits).",
        ),
    )
}
