"""The code location loads as `dagster dev` would load it, with the graph, partitions and resources a user expects."""

from __future__ import annotations

import importlib
from datetime import date

import dagster as dg
import pytest

from ubp_pipeline.settings import Settings


def test_the_module_level_definitions_load_with_the_demo_defaults(monkeypatch):
    for name in ("UBP_SOURCE_DIR", "UBP_HOME", "UBP_FIRST_DAY", "UBP_LAST_DAY", "UBP_LOOKBACK_DAYS"):
        monkeypatch.delenv(name, raising=False)
    module = importlib.reload(importlib.import_module("ubp_pipeline.definitions"))
    defs: dg.Definitions = module.defs
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"product_properties", "raw_page_visit", "raw_product_buy", "user_sequences", "stat_features"} <= keys
    assert {"universal_profiles", "statistics_model", "statistics_embeddings", "als_urls_model"} <= keys
    daily = graph.get(dg.AssetKey("user_sequences")).partitions_def
    assert daily.get_first_partition_key() == "2022-06-23" and daily.get_last_partition_key() == "2022-10-20"
    upstream = {key.to_user_string() for key in graph.get(dg.AssetKey("user_sequences")).parent_keys}
    assert upstream == {"product_properties", "raw_add_to_cart", "raw_remove_from_cart", "raw_product_buy", "raw_page_visit", "raw_search_query"}
    assert defs.resolve_job_def("ingest_job") is not None
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {"rows_reconcile", "quarantine_share", "valid_submission", "learned_every_field", "sasrec_beats_baselines"}


def test_settings_follow_the_environment(tmp_path):
    settings = Settings.from_env(
        {"UBP_SOURCE_DIR": str(tmp_path / "ubc_data"), "UBP_FIRST_DAY": "2022-06-23", "UBP_LAST_DAY": "2022-12-31"}
    )
    assert settings.home.name == "ubc_data" and not settings.is_demo
    assert (settings.first_day, settings.last_day) == (date(2022, 6, 23), date(2022, 12, 31))
    assert settings.warehouse_path.parent == settings.home
    live = Settings.from_env({"UBP_LAST_DAY": "live"})
    assert live.is_live and live.last_day > date(2026, 1, 1)


def test_a_real_source_without_its_days_is_refused(tmp_path):
    """Its partitions would silently be the demo's 120 days (a deployment that set only UBP_SOURCE_DIR)."""
    with pytest.raises(ValueError, match="UBP_FIRST_DAY and UBP_LAST_DAY are not both set"):
        Settings.from_env({"UBP_SOURCE_DIR": str(tmp_path / "ubc_data"), "UBP_LAST_DAY": "live"})
