"""The profile's blocks: which embedder, with which hyper-parameters, reduced and scaled how.

A block is configuration, not code: the GRU autoencoder variants of the method are entries over one class, and this
registry is their one description. An embedder's config defaults are its CPU size (the largest that trains the demo
in about a minute or two on two cores); ``gpu_params`` lift a block to the method's size when it trains on CUDA.
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
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the embedder's default config, on any device
    gpu_params: dict[str, Any] = field(default_factory=dict)  # on top of ``params`` when training on CUDA
    pca_dims: int | None = None
    scaling: Scaling = "l2"
    version: str = "1"
    description: str = ""
    distributable: bool = False  # its training loop can run data-parallel under torchrun
    predicts_fields: bool = False  # its training reports held-out accuracy per field: checked against the majority
    in_default_profile: bool = True  # False: opt-in, trained only where UBP_OPT_IN_BLOCKS names it, then in a profile only when pinned or selected

    def build(self, overrides: dict[str, Any] | None = None, device_type: str = "cpu") -> Embedder:
        """The embedder with this block's params for ``device_type`` ("cuda" takes ``gpu_params`` too), further
        overridden setting by setting (e.g. from run config)."""
        module, cls_name = self.embedder.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        sized = self.gpu_params if device_type == "cuda" else {}
        return cls(configured(cls.config_class(), {**self.params, **sized, **(overrides or {})}))


def configured(config: Any, values: dict[str, Any]) -> Any:
    """``config`` with ``values`` replaced. A key that names a setting of a nested config (the training recipe's
    ``learning_rate``) reaches it, so overrides stay flat: ``{"learning_rate": 5e-4, "max_epochs": 3}``; the nested
    config's own name with a dict (``{"recipe": {...}}``) works too."""
    nested = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    nested = {name: value for name, value in nested.items() if dataclasses.is_dataclass(value)}
    own, inner = {}, {name: {} for name in nested}
    for key, value in values.items():
        if key in nested and isinstance(value, dict):
            inner[key] |= value
        elif key in {f.name for f in dataclasses.fields(config)}:
            own[key] = value
        else:
            owner = next((n for n, c in nested.items() if key in {f.name for f in dataclasses.fields(c)}), None)
            if owner is None:
                raise ValueError(f"{key!r} is not a setting of {type(config).__name__}")
            inner[owner][key] = value
    return dataclasses.replace(config, **own, **{n: dataclasses.replace(nested[n], **v) for n, v in inner.items() if v})


METHOD_RECIPE = {"learning_rate": 5e-4, "batch_size": 64, "warmup_steps": 200}
"""The sequence models' recipe on a GPU: measured on one H200 at the method's size, the multi-field GRU learned every
field with lr 5e-4 / batch 64 (and stayed at the majority token for 15 epochs with 2e-3 / 256)."""

BLOCKS: dict[str, BlockSpec] = {
    spec.name: spec
    for spec in (
        BlockSpec(
            "gru_day_event",
            "ubp_pipeline.core.profiles.embedders.gru_autoencoder:GRUAutoencoderEmbedder",
            input_asset="user_sequences",
            params={"fields": ("days_ago", "event_type"), "max_epochs": 4},  # two small heads: cheap epochs
            gpu_params={**METHOD_RECIPE, "layers": 2, "dropout": 0.5, "max_epochs": 30, "patience": 5},
            version="2",
            description="GRU sequence autoencoder over (days before the cut, event type): when and what a user does.",
            distributable=True,
            predicts_fields=True,
        ),
        BlockSpec(
            "gru_week_all",
            "ubp_pipeline.core.profiles.embedders.gru_autoencoder:GRUAutoencoderEmbedder",
            input_asset="user_sequences",
            params={"fields": ("weeks_ago", "event_type", "category", "price", "sku", "url")},
            gpu_params={
                **METHOD_RECIPE, "vocabulary_limit": 5_000, "embedding_dim": 512, "hidden_dim": 512, "layers": 3,
                "max_epochs": 20, "patience": 3,
            },
            pca_dims=64,
            version="2",
            description="GRU sequence autoencoder over weeks ago, event type, category, price, sku and url, PCA to 64.",
            distributable=True,
            predicts_fields=True,
        ),
        BlockSpec(
            "next_event",
            "ubp_pipeline.core.profiles.embedders.next_event:NextEventEmbedder",
            input_asset="user_sequences",
            params={"max_epochs": 6, "patience": 2},
            gpu_params={**METHOD_RECIPE, "n_layers": 4, "batch_size": 128, "max_epochs": 20, "patience": 3},
            version="2",
            description="Causal transformer over product events predicting the next category, event type and price.",
            distributable=True,
            predicts_fields=True,
        ),
        BlockSpec(
            "next_sku",
            "ubp_pipeline.core.profiles.embedders.next_event:NextEventEmbedder",
            input_asset="user_sequences",
            params={
                "input_fields": ("sku", "category", "event_type", "price", "days_ago"),
                "target_fields": ("sku", "category"),
                "vocabulary_limit": 1_000, "max_epochs": 6, "patience": 2,
            },
            gpu_params={**METHOD_RECIPE, "vocabulary_limit": 5_000, "n_layers": 4, "batch_size": 128, "max_epochs": 20,
                        "patience": 3},
            description="Causal transformer over product events predicting the next sku and category.",
            distributable=True,
            predicts_fields=True,
            in_default_profile=False,  # lowered the ensemble on generated data (bench/results/blocks_seed11_8000_next_sku.md)
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
        BlockSpec(
            "hybrid_items",
            "ubp_pipeline.core.profiles.embedders.hybrid_items:HybridItemsEmbedder",
            input_asset="user_sequences",
            description="LightFM-style hybrid factorisation: a user is the weighted mean of the (sku, category, price) "
            "vectors of the products they handled, trained to predict the fields of their newest product events.",
            predicts_fields=True,
            # within noise of the ensemble in total, below it on conversion and sku propensity beyond noise
            # (bench/results/blocks_seed11_8000_hybrid_items.md)
            in_default_profile=False,
        ),
        BlockSpec(
            "text_codes",
            "ubp_pipeline.core.profiles.embedders.text_codes:TextCodesEmbedder",
            input_asset="user_sequences",
            description="Latent topics (TF-IDF + truncated SVD) of the 16-code texts a user searched for and of the "
            "names of the products they bought, carted or removed.",
            in_default_profile=False,  # lowered the ensemble on generated data (bench/results/blocks_*.md)
        ),
    )
}


def default_blocks() -> list[str]:
    """The blocks of a profile that nothing pinned and no backtest selection chose."""
    return [name for name, spec in BLOCKS.items() if spec.in_default_profile]


def opt_in_blocks() -> list[str]:
    """The blocks that earned no default place in their ablation: in the graph only when a deployment asks."""
    return [name for name, spec in BLOCKS.items() if not spec.in_default_profile]


def active_blocks(opted_in: tuple[str, ...] = ()) -> list[str]:
    """The blocks a deployment trains and embeds, in registry order: the default ones and the opt-in ones it named
    (``"all"`` names every one). Training a block no profile uses costs hours at challenge scale, so opt-in blocks
    stay out of the graph unless asked for."""
    wanted = set(opt_in_blocks()) if "all" in opted_in else set(opted_in)
    unknown = sorted(wanted - set(opt_in_blocks()))
    if unknown:
        raise ValueError(f"UBP_OPT_IN_BLOCKS names {unknown}, which are not opt-in blocks; opt-in: {opt_in_blocks()}")
    return [name for name in BLOCKS if name in wanted or BLOCKS[name].in_default_profile]
