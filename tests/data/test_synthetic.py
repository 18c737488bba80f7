"""The synthetic generator writes the challenge layout and plants behaviour that can be measured in its output."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ubp_pipeline.core.warehouse.events import EVENT_TYPES, parse_codes
from ubp_pipeline.data.synthetic import SyntheticConfig, generate

CONFIG = SyntheticConfig(users=2_000, days=70, seed=3, start=date(2022, 6, 23), chunk_users=700)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "source"
    summary = generate(CONFIG, out)
    frames = {t: pd.read_parquet(out / f"{t}.parquet") for t in (*EVENT_TYPES, "product_properties")}
    truth = pd.read_parquet(out / "truth" / "users.parquet")
    skus = pd.read_parquet(out / "truth" / "skus.parquet")
    return out, summary, frames, truth, skus


def test_layout_and_types_match_the_challenge(data):
    out, summary, frames, truth, _ = data
    ts = pa.timestamp("ns")
    expected = {
        "product_buy": {"client_id": pa.int64(), "timestamp": ts, "sku": pa.int64()},
        "add_to_cart": {"client_id": pa.int64(), "timestamp": ts, "sku": pa.int64()},
        "remove_from_cart": {"client_id": pa.int64(), "timestamp": ts, "sku": pa.int64()},
        "page_visit": {"client_id": pa.int64(), "timestamp": ts, "url": pa.int64()},
        "search_query": {"client_id": pa.int64(), "timestamp": ts, "query": pa.string()},
        "product_properties": {"sku": pa.int64(), "category": pa.int64(), "price": pa.int64(), "name": pa.string()},
    }
    for table, columns in expected.items():
        schema = pq.read_schema(out / f"{table}.parquet")
        assert {name: schema.field(name).type for name in schema.names} == columns, table
    assert parse_codes(pa.array(frames["search_query"]["query"])).shape == (len(frames["search_query"]), 16)
    assert parse_codes(pa.array(frames["product_properties"]["name"])).shape[1] == 16
    assert frames["product_properties"]["price"].between(0, 99).all()
    assert frames["product_properties"]["sku"].is_unique
    relevant = np.load(out / "input" / "relevant_clients.npy")
    assert relevant.dtype == np.int64 and np.all(np.diff(relevant) > 0)
    assert set(relevant) <= set(truth["client_id"]) and 0.7 < len(relevant) / CONFIG.users < 0.9
    assert summary.events == {t: len(frames[t]) for t in EVENT_TYPES}
    times = pd.concat([frames[t]["timestamp"] for t in EVENT_TYPES])
    assert times.min().date() >= CONFIG.start and (times.max() - times.min()).days < CONFIG.days
    assert (times.dt.second % 5 == 0).all()


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    small = SyntheticConfig(users=300, days=20, seed=11, chunk_users=100)
    generate(small, tmp_path / "a")
    generate(small, tmp_path / "b")
    generate(SyntheticConfig(users=300, days=20, seed=12, chunk_users=100), tmp_path / "c")
    a, b, c = (pq.read_table(tmp_path / name / "page_visit.parquet") for name in "abc")
    assert a.equals(b) and not a.equals(c)


def test_activity_multiplies_the_events_of_the_same_users(tmp_path):
    """Challenge-like volumes (~175 events a user) come from a higher activity, not from more users."""
    counts = {}
    for activity in (1.0, 2.0):
        config = SyntheticConfig(users=1_000, days=40, seed=5, activity=activity)
        counts[activity] = sum(generate(config, tmp_path / str(activity)).events.values())
    clients = [np.load(tmp_path / str(a) / "input" / "relevant_clients.npy") for a in counts]
    assert np.array_equal(*clients)
    assert 1.8 < counts[2.0] / counts[1.0] < 2.2


def _buys_with_truth(frames, truth):
    catalogue = frames["product_properties"].set_index("sku")
    buys = frames["product_buy"].join(catalogue, on="sku")
    return buys.merge(truth, on="client_id")


def test_users_buy_in_their_planted_categories_and_price_range(data):
    _, _, frames, truth, _ = data
    buys = _buys_with_truth(frames, truth)
    in_taste = [cat in set(cats) for cat, cats in zip(buys["category"], buys["categories"], strict=True)]
    assert np.mean(in_taste) > 0.99
    per_user = buys.groupby("client_id").agg(price=("price", "mean"), level=("price_level", "first"))
    per_user = per_user[buys.groupby("client_id").size() >= 3]
    assert per_user["price"].corr(per_user["level"], method="spearman") > 0.3


def test_activity_decays_at_the_planted_rate_and_follows_the_week(data):
    _, _, frames, truth, _ = data
    visits = frames["page_visit"].merge(truth[["client_id", "decay_days", "start_day"]], on="client_id")
    day = (visits["timestamp"] - pd.Timestamp(CONFIG.start)).dt.days
    fast = (visits["decay_days"] < 25) & (visits["start_day"] == 0)
    slow = (visits["decay_days"] > 150) & (visits["start_day"] == 0)
    late_share = lambda mask: (day[mask] >= CONFIG.days // 2).mean()  # noqa: E731
    assert late_share(fast) < 0.2 < late_share(slow)
    weekday = visits["timestamp"].dt.day_of_week
    per_weekday = visits.groupby(weekday).size() / pd.Series(pd.date_range(CONFIG.start, periods=CONFIG.days).day_of_week).value_counts().sort_index()
    assert per_weekday[[5, 6]].mean() / per_weekday[[0, 1, 2, 3]].mean() > 1.15


def test_the_funnel_runs_from_cart_to_buy_or_remove(data):
    _, _, frames, _, _ = data
    carts = frames["add_to_cart"].groupby(["client_id", "sku"])["timestamp"].min()
    for table in ("product_buy", "remove_from_cart"):
        events = frames[table].join(carts.rename("carted"), on=["client_id", "sku"])
        assert (events["carted"] <= events["timestamp"]).mean() > 0.99, table
    assert 0.05 < len(frames["product_buy"]) / len(frames["add_to_cart"]) < 0.8


def test_searches_resemble_the_category_that_is_then_browsed(data):
    _, _, frames, _, _ = data
    names = dict(zip(frames["product_properties"]["sku"], parse_codes(pa.array(frames["product_properties"]["name"])), strict=True))
    searches = frames["search_query"].sort_values("timestamp")
    carts = frames["add_to_cart"].sort_values("timestamp")
    paired = pd.merge_asof(searches, carts, on="timestamp", by="client_id", direction="forward", tolerance=pd.Timedelta("20min")).dropna()
    query = parse_codes(pa.array(paired["query"]))
    name = np.stack([names[int(s)] for s in paired["sku"]])
    shuffled = name[np.random.default_rng(0).permutation(len(name))]
    assert len(paired) > 100
    assert (query == name).sum(axis=1).mean() > 3 * (query == shuffled).sum(axis=1).mean()


def test_new_skus_appear_over_time_and_popularity_has_a_long_tail(data):
    _, _, frames, _, skus = data
    views = frames["add_to_cart"].merge(skus[["sku", "release_day"]], on="sku")
    day = (views["timestamp"] - pd.Timestamp(CONFIG.start)).dt.days
    assert (day >= views["release_day"]).all()
    first_seen = views.assign(day=day).groupby("sku")["day"].min()
    assert (first_seen > 20).sum() >= 20
    counts = frames["add_to_cart"]["sku"].value_counts()
    top_decile = counts.iloc[: max(1, len(counts) // 10)].sum()
    assert top_decile / counts.sum() > 0.3
