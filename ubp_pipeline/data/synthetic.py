"""A synthetic data set in the RecSys Challenge 2025 layout, with behaviour planted so that models have something to find.

Planted, per user: a latent segment with category affinities and a price level, favourite skus, a browse -> cart ->
remove/buy funnel with user-specific rates, searches whose codes resemble the searched category's code signature,
activity that starts on a user-specific day and decays at a user-specific rate (churn), weekly seasonality, and a taste
for newly released items in some users. The catalogue has popular and long-tail items and releases new skus over time.
The planted truth is written to ``truth/`` beside the data; the pipeline never reads it (only the oracle row of the
evaluation does).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ubp_pipeline.core.common.atomic import atomic_dir
from ubp_pipeline.core.warehouse.events import PRODUCT_EVENT_TYPES, format_codes

WEEKDAY_FACTOR = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.35, 1.3])  # Monday .. Sunday
NEW_ITEM_WINDOW_DAYS = 21
N_FAVOURITES = 4
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 20_000
    days: int = 120
    seed: int = 0
    start: date = date(2022, 6, 23)
    categories: int = 0  # 0 = scale with users
    skus: int = 0  # 0 = scale with users
    segments: int = 8
    relevant_fraction: float = 0.8
    new_sku_fraction: float = 0.2
    chunk_users: int = 20_000
    activity: float = 1.0  # multiplies every session rate: 1.0 gives ~55 events a user over 120 days (the challenge ~175)

    @property
    def n_categories(self) -> int:
        return self.categories or int(np.clip(self.users // 200, 20, 2_000))

    @property
    def n_skus(self) -> int:
        return self.skus or int(np.clip(self.users // 4, 300, 200_000))


@dataclass
class Catalogue:
    category_ids: np.ndarray  # (C,) public category id
    category_signature: np.ndarray  # (C, 16) uint8 code signature of the category's text
    category_weight: np.ndarray  # (C,) how often a category is chosen, before user taste
    sku_ids: np.ndarray  # (S,) public sku id, grouped by category index
    sku_category: np.ndarray  # (S,) category index
    sku_price: np.ndarray  # (S,) price bucket 0..99 (quantiles of the planted price)
    sku_release_day: np.ndarray  # (S,) first day the sku can be seen
    sku_name: np.ndarray  # (S, 16) uint8 name codes
    sku_url: np.ndarray  # (S,) product-page url id
    category_url: np.ndarray  # (C,) category-page url id
    other_urls: np.ndarray  # home, help, account pages...
    popularity_cdf: np.ndarray  # (S,) category index + within-category cumulative popularity
    new_sku_key: np.ndarray  # sorted category index * 10^6 + release day of skus released after day 0
    new_sku_index: np.ndarray  # sku index for each entry of new_sku_key
    category_top_sku: np.ndarray  # (C,) most popular sku of each category, released on day 0


@dataclass
class Users:
    client_id: np.ndarray
    relevant: np.ndarray
    segment: np.ndarray
    categories: np.ndarray  # (U, K) category indices the user likes
    category_weight: np.ndarray  # (U, K) rows sum to 1
    favourite_skus: np.ndarray  # (U, F) sku indices
    price_level: np.ndarray  # price bucket the user prefers
    start_day: np.ndarray
    base_rate: np.ndarray  # sessions per day at the start
    decay_days: np.ndarray  # e-folding time of activity
    p_search: np.ndarray
    p_cart: np.ndarray
    p_buy: np.ndarray
    p_favourite: np.ndarray
    novelty_seeker: np.ndarray


@dataclass
class GenerationSummary:
    out: str
    users: int
    relevant_clients: int
    skus: int
    categories: int
    first_day: str
    last_day: str
    events: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights)


def _noisy_codes(rng: np.random.Generator, signature: np.ndarray, keep: float) -> np.ndarray:
    """Copies of ``signature`` rows where each code is replaced by a random one with probability 1 - keep."""
    noise = rng.integers(0, 256, size=signature.shape, dtype=np.uint8)
    return np.where(rng.random(signature.shape) < keep, signature, noise).astype(np.uint8)


def make_catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> Catalogue:
    n_cat, n_sku = cfg.n_categories, cfg.n_skus
    category_ids = np.sort(rng.choice(7_000, n_cat, replace=False)).astype(np.int64)
    category_weight = _zipf_weights(rng, n_cat, 0.8)
    category_weight /= category_weight.sum()
    # every category gets one sku, the rest follow category popularity; skus are stored grouped by category
    sku_category = np.sort(np.concatenate([np.arange(n_cat), rng.choice(n_cat, n_sku - n_cat, p=category_weight)]))
    sku_ids = rng.choice(1_600_000, n_sku, replace=False).astype(np.int64)

    category_price_level = rng.normal(0.0, 1.0, n_cat)
    log_price = category_price_level[sku_category] + rng.normal(0.0, 0.6, n_sku)
    sku_price = (np.argsort(np.argsort(log_price)) * 100 // n_sku).astype(np.uint8)

    # long tail inside each category: Zipf popularity, stored as "category index + cumulative share" for sampling
    within = np.empty(n_sku)
    category_top_sku = np.empty(n_cat, dtype=np.int64)
    bounds = np.searchsorted(sku_category, np.arange(n_cat + 1))
    for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        popularity = _zipf_weights(rng, hi - lo, 1.1)
        within[lo:hi] = np.cumsum(popularity) / popularity.sum()
        category_top_sku[c] = lo + int(np.argmax(popularity))
    popularity_cdf = sku_category + within

    release_day = np.where(rng.random(n_sku) < cfg.new_sku_fraction, rng.integers(1, max(cfg.days, 2), n_sku), 0)
    release_day[category_top_sku] = 0
    new = np.flatnonzero(release_day > 0)
    new_key = sku_category[new].astype(np.int64) * 1_000_000 + release_day[new]
    order = np.argsort(new_key, kind="stable")

    category_signature = rng.integers(0, 256, size=(n_cat, 16), dtype=np.uint8)
    urls = rng.choice(16_000_000, n_sku + n_cat + 50, replace=False).astype(np.int64) + 1
    return Catalogue(
        category_ids=category_ids,
        category_signature=category_signature,
        category_weight=category_weight,
        sku_ids=sku_ids,
        sku_category=sku_category,
        sku_price=sku_price,
        sku_release_day=release_day,
        sku_name=_noisy_codes(rng, category_signature[sku_category], keep=0.5),
        sku_url=urls[:n_sku],
        category_url=urls[n_sku : n_sku + n_cat],
        other_urls=urls[n_sku + n_cat :],
        popularity_cdf=popularity_cdf,
        new_sku_key=new_key[order],
        new_sku_index=new[order],
        category_top_sku=category_top_sku,
    )


def _sample_sku_in_category(cat: Catalogue, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Popularity-weighted sku of each given category, vectorised through the offset cumulative distribution."""
    index = np.searchsorted(cat.popularity_cdf, categories + rng.random(len(categories)))
    return np.minimum(index, len(cat.sku_ids) - 1)


def make_users(cfg: SyntheticConfig, cat: Catalogue, rng: np.random.Generator) -> Users:
    n, n_cat, k_seg, k_own = cfg.users, len(cat.category_ids), 5, 3
    segment = rng.integers(0, cfg.segments, n)
    segment_categories = np.stack([rng.choice(n_cat, k_seg, replace=False, p=cat.category_weight) for _ in range(cfg.segments)])
    segment_weights = rng.dirichlet(np.ones(k_seg), cfg.segments)
    own_categories = rng.choice(n_cat, (n, k_own), p=cat.category_weight)
    categories = np.concatenate([segment_categories[segment], own_categories], axis=1)
    own_share = rng.uniform(0.1, 0.5, n)[:, None]
    weights = np.concatenate(
        [segment_weights[segment] * (1 - own_share), rng.dirichlet(np.ones(k_own), n) * own_share], axis=1
    )

    favourite_categories = categories[:, :N_FAVOURITES]
    favourite_skus = _sample_sku_in_category(cat, favourite_categories.ravel(), rng).reshape(n, N_FAVOURITES)
    favourite_skus = np.where(
        cat.sku_release_day[favourite_skus] > 0, cat.category_top_sku[favourite_categories], favourite_skus
    )

    segment_price = rng.uniform(15, 85, cfg.segments)
    segment_buy = rng.uniform(0.4, 1.0, cfg.segments)
    segment_decay = rng.uniform(0.5, 2.0, cfg.segments)
    client_id = rng.choice(25_000_000, n, replace=False).astype(np.int64)
    return Users(
        client_id=client_id,
        relevant=rng.random(n) < cfg.relevant_fraction,
        segment=segment,
        categories=categories,
        category_weight=weights,
        favourite_skus=favourite_skus,
        price_level=np.clip(segment_price[segment] + rng.normal(0, 10, n), 3, 96),
        start_day=np.where(rng.random(n) < 0.7, 0, rng.integers(0, cfg.days, n)),
        base_rate=rng.lognormal(np.log(0.18), 0.8, n) * cfg.activity,
        decay_days=np.exp(rng.uniform(np.log(15), np.log(300), n)) * segment_decay[segment],
        p_search=rng.beta(2, 5, n),
        p_cart=rng.beta(2, 6, n),
        p_buy=np.clip(rng.beta(2, 3, n) * segment_buy[segment], 0.01, 0.95),
        p_favourite=rng.beta(2, 6, n),
        novelty_seeker=rng.random(n) < 0.2,
    )


def activity_rate(users: Users, rows: np.ndarray | slice, day: np.ndarray | int) -> np.ndarray:
    """Expected sessions per day of users[rows] on ``day`` (before weekly seasonality): the planted churn curve.

    ``day`` broadcasts against the users, so a (days,) row against (n, 1) users gives an (n, days) matrix.
    """
    start, base, decay = users.start_day[rows], users.base_rate[rows], users.decay_days[rows]
    since_start = np.asarray(day) - start
    return np.where(since_start >= 0, base * np.exp(-np.maximum(since_start, 0) / decay), 0.0)


@dataclass
class _EventColumns:
    """Events of one chunk, one array per column, all event types together."""

    kind: list[np.ndarray] = field(default_factory=list)
    user: list[np.ndarray] = field(default_factory=list)
    seconds: list[np.ndarray] = field(default_factory=list)
    sku: list[np.ndarray] = field(default_factory=list)
    url: list[np.ndarray] = field(default_factory=list)
    query: list[np.ndarray] = field(default_factory=list)

    def add(self, kind: str, user, seconds, sku=None, url=None, query=None) -> None:
        n = len(user)
        self.kind.append(np.full(n, kind, dtype=object))
        self.user.append(user)
        self.seconds.append(seconds)
        self.sku.append(sku if sku is not None else np.full(n, -1))
        self.url.append(url if url is not None else np.full(n, -1))
        self.query.append(query if query is not None else np.zeros((n, 16), dtype=np.uint8))

    def concatenated(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(getattr(self, name)) for name in ("kind", "user", "seconds", "sku", "url", "query")}


def _simulate_chunk(cfg: SyntheticConfig, cat: Catalogue, users: Users, rows: slice, rng: np.random.Generator) -> dict:
    """All events of users[rows] over the whole period, as flat arrays (seconds counted from the first day)."""
    ids = np.arange(rows.start, rows.stop)
    days = np.arange(cfg.days)
    weekday = (cfg.start.weekday() + days) % 7
    rate = activity_rate(users, ids[:, None], days[None, :]) * WEEKDAY_FACTOR[weekday]
    sessions = rng.poisson(rate)
    s_user_local, s_day = np.nonzero(sessions)
    repeat = sessions[s_user_local, s_day]
    s_user = ids[np.repeat(s_user_local, repeat)]
    s_day = np.repeat(s_day, repeat)
    n_s = len(s_user)
    start_second = np.clip(
        np.where(rng.random(n_s) < 0.55, rng.normal(13 * 3600, 3 * 3600, n_s), rng.normal(20.5 * 3600, 2 * 3600, n_s)),
        0,
        SECONDS_PER_DAY - 3600,
    )
    s_start = s_day * SECONDS_PER_DAY + start_second

    # session topic: one of the user's categories, by taste
    cum = np.cumsum(users.category_weight[s_user], axis=1)
    pick = np.minimum((rng.random(n_s)[:, None] > cum).sum(axis=1), cum.shape[1] - 1)
    s_cat = users.categories[s_user, pick]

    out = _EventColumns()
    searched = rng.random(n_s) < users.p_search[s_user]
    out.add(
        "search_query",
        s_user[searched],
        s_start[searched],
        query=_noisy_codes(rng, cat.category_signature[s_cat[searched]], keep=0.7),
    )
    cat_page = rng.random(n_s) < 0.3
    out.add("page_visit", s_user[cat_page], s_start[cat_page] + 5, url=cat.category_url[s_cat[cat_page]])
    other_page = rng.random(n_s) < 0.15
    out.add(
        "page_visit", s_user[other_page], s_start[other_page] + 2, url=rng.choice(cat.other_urls, int(other_page.sum()))
    )

    # product views: popular skus of the topic, favourites, and (for novelty seekers) freshly released skus
    n_views = 1 + rng.poisson(1.6, n_s)
    v_sess = np.repeat(np.arange(n_s), n_views)
    v_user, v_day, v_cat = s_user[v_sess], s_day[v_sess], s_cat[v_sess]
    v_sku = _sample_sku_in_category(cat, v_cat, rng)
    favourite = rng.random(len(v_sess)) < users.p_favourite[v_user]
    v_sku = np.where(favourite, users.favourite_skus[v_user, rng.integers(0, N_FAVOURITES, len(v_sess))], v_sku)
    v_sku = _prefer_new_skus(cat, v_sku, v_cat, v_day, users.novelty_seeker[v_user], rng)
    v_sku = np.where(cat.sku_release_day[v_sku] > v_day, cat.category_top_sku[v_cat], v_sku)
    first_view = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    v_rank = np.arange(len(v_sess)) - first_view[v_sess]
    v_time = s_start[v_sess] + 20 + v_rank * 90 + rng.exponential(40, len(v_sess))
    out.add("page_visit", v_user, v_time, url=cat.sku_url[v_sku])

    # funnel: cart (more likely near the user's price level) -> buy at session end, or remove
    price_match = np.exp(-np.abs(cat.sku_price[v_sku] - users.price_level[v_user]) / 20.0)
    carted = rng.random(len(v_sess)) < users.p_cart[v_user] * (0.3 + 0.7 * price_match)
    c_user, c_sku, c_time, c_sess = v_user[carted], v_sku[carted], v_time[carted] + 30, v_sess[carted]
    out.add("add_to_cart", c_user, c_time, sku=cat.sku_ids[c_sku])
    bought = rng.random(len(c_user)) < users.p_buy[c_user]
    session_end = s_start[c_sess] + 60 + n_views[c_sess] * 120
    out.add("product_buy", c_user[bought], session_end[bought] + rng.exponential(60, int(bought.sum())), sku=cat.sku_ids[c_sku[bought]])
    removed = ~bought & (rng.random(len(c_user)) < 0.5)
    out.add("remove_from_cart", c_user[removed], c_time[removed] + rng.exponential(120, int(removed.sum())), sku=cat.sku_ids[c_sku[removed]])
    return out.concatenated()


def _prefer_new_skus(cat: Catalogue, sku, category, day, seeker, rng) -> np.ndarray:
    """Half the views of novelty seekers go to a sku of the same category released in the last three weeks."""
    if len(cat.new_sku_index) == 0:
        return sku
    lo = np.searchsorted(cat.new_sku_key, category * 1_000_000 + day - NEW_ITEM_WINDOW_DAYS)
    hi = np.searchsorted(cat.new_sku_key, category * 1_000_000 + day, side="right")
    use = seeker & (hi > lo) & (rng.random(len(sku)) < 0.5)
    chosen = np.minimum(lo + (rng.random(len(sku)) * (hi - lo)).astype(np.int64), len(cat.new_sku_index) - 1)
    return np.where(use, cat.new_sku_index[chosen], sku)


_EVENT_SCHEMAS = {
    **{t: pa.schema([("client_id", pa.int64()), ("timestamp", pa.timestamp("ns")), ("sku", pa.int64())]) for t in PRODUCT_EVENT_TYPES},
    "page_visit": pa.schema([("client_id", pa.int64()), ("timestamp", pa.timestamp("ns")), ("url", pa.int64())]),
    "search_query": pa.schema([("client_id", pa.int64()), ("timestamp", pa.timestamp("ns")), ("query", pa.string())]),
}


def _event_table(kind: str, events: dict, mask: np.ndarray, users: Users, start: np.datetime64) -> pa.Table:
    seconds = np.round(events["seconds"][mask] / 5.0) * 5.0  # the challenge's timestamps are multiples of 5 s
    order = np.lexsort((seconds, events["user"][mask]))
    columns = {
        "client_id": users.client_id[events["user"][mask]][order],
        "timestamp": start + (seconds[order] * 1e9).astype("timedelta64[ns]"),
    }
    if kind in PRODUCT_EVENT_TYPES:
        columns["sku"] = events["sku"][mask][order]
    elif kind == "page_visit":
        columns["url"] = events["url"][mask][order]
    else:
        columns["query"] = format_codes(events["query"][mask][order])
    return pa.table(columns, schema=_EVENT_SCHEMAS[kind])


def _write_truth(directory: Path, cfg: SyntheticConfig, cat: Catalogue, users: Users) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "client_id": users.client_id,
                "relevant": users.relevant,
                "segment": users.segment,
                "categories": list(cat.category_ids[users.categories]),
                "category_weight": list(users.category_weight),
                "favourite_skus": list(cat.sku_ids[users.favourite_skus]),
                "price_level": users.price_level,
                "start_day": users.start_day,
                "base_rate": users.base_rate,
                "decay_days": users.decay_days,
                "p_search": users.p_search,
                "p_cart": users.p_cart,
                "p_buy": users.p_buy,
                "p_favourite": users.p_favourite,
                "novelty_seeker": users.novelty_seeker,
            }
        ),
        directory / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "sku": cat.sku_ids,
                "category": cat.category_ids[cat.sku_category],
                "release_day": cat.sku_release_day,
                "price": cat.sku_price,
            }
        ),
        directory / "skus.parquet",
    )
    (directory / "config.json").write_text(json.dumps(asdict(cfg), default=str, indent=2))


def generate(cfg: SyntheticConfig, out: str | Path) -> GenerationSummary:
    """Write the data set into ``out`` (replacing it as a whole) and return what was written."""
    rng = np.random.default_rng(cfg.seed)
    cat = make_catalogue(cfg, rng)
    users = make_users(cfg, cat, rng)
    start = np.datetime64(datetime(cfg.start.year, cfg.start.month, cfg.start.day), "ns")
    counts = dict.fromkeys(_EVENT_SCHEMAS, 0)
    with atomic_dir(out) as tmp:
        writers = {kind: pq.ParquetWriter(tmp / f"{kind}.parquet", schema) for kind, schema in _EVENT_SCHEMAS.items()}
        try:
            for chunk, lo in enumerate(range(0, cfg.users, cfg.chunk_users)):
                rows = slice(lo, min(lo + cfg.chunk_users, cfg.users))
                events = _simulate_chunk(cfg, cat, users, rows, np.random.default_rng([cfg.seed, chunk]))
                for kind, writer in writers.items():
                    table = _event_table(kind, events, events["kind"] == kind, users, start)
                    writer.write_table(table)
                    counts[kind] += table.num_rows
        finally:
            for writer in writers.values():
                writer.close()
        pq.write_table(
            pa.table(
                {
                    "sku": cat.sku_ids,
                    "category": cat.category_ids[cat.sku_category],
                    "price": cat.sku_price.astype(np.int64),
                    "name": format_codes(cat.sku_name),
                }
            ),
            tmp / "product_properties.parquet",
        )
        (tmp / "input").mkdir()
        np.save(tmp / "input" / "relevant_clients.npy", np.sort(users.client_id[users.relevant]))
        _write_truth(tmp / "truth", cfg, cat, users)
    last_day = start + np.timedelta64(cfg.days - 1, "D")
    return GenerationSummary(
        out=str(out),
        users=cfg.users,
        relevant_clients=int(users.relevant.sum()),
        skus=len(cat.sku_ids),
        categories=len(cat.category_ids),
        first_day=cfg.start.isoformat(),
        last_day=str(last_day.astype("datetime64[D]")),
        events=counts,
    )


TRUTH_DIR = "truth"
ORACLE_FAVOURITE_SKUS = 1_024


def planted_features(source_dir: str | Path, as_of: date, clients: np.ndarray) -> np.ndarray | None:
    """The oracle: each user's planted parameters as of a day, standardised; None when the source has no truth.

    Segment, category tastes, the most common favourite skus, price level, funnel rates, taste for new items and the
    activity expected in the two target windows (from the planted churn curve): everything the generator draws
    future behaviour from, so a probe on these features shows the ceiling of the evaluation.
    """
    truth_dir = Path(source_dir) / TRUTH_DIR
    if not (truth_dir / "users.parquet").exists():
        return None
    cfg = json.loads((truth_dir / "config.json").read_text())
    truth = pd.read_parquet(truth_dir / "users.parquet")
    categories = np.sort(pd.read_parquet(truth_dir / "skus.parquet")["category"].unique())
    day = (as_of - date.fromisoformat(cfg["start"])).days

    category_taste = np.zeros((len(truth), len(categories)), dtype=np.float32)
    for row, (cats, weights) in enumerate(zip(truth["categories"], truth["category_weight"], strict=True)):
        np.add.at(category_taste[row], np.searchsorted(categories, cats), weights)
    favourites = pd.Series(np.concatenate(truth["favourite_skus"].to_numpy())).value_counts().index[:ORACLE_FAVOURITE_SKUS]
    favourite_hot = np.stack([np.isin(favourites, skus) for skus in truth["favourite_skus"]]).astype(np.float32)

    def expected_rate(offset: int) -> np.ndarray:
        since = day + offset - truth["start_day"].to_numpy()
        rate = truth["base_rate"].to_numpy() * np.exp(-np.maximum(since, 0) / truth["decay_days"].to_numpy())
        return np.log1p(np.where(since >= 0, rate, 0.0))

    numeric = np.column_stack(
        [expected_rate(7), expected_rate(21), truth["price_level"], truth["p_search"], truth["p_cart"], truth["p_buy"],
         truth["p_favourite"], truth["novelty_seeker"].astype(float), np.exp(expected_rate(7)) * truth["p_cart"] * truth["p_buy"]]
    )
    numeric = (numeric - numeric.mean(axis=0)) / (numeric.std(axis=0) + 1e-9)
    segment = np.eye(int(cfg["segments"]), dtype=np.float32)[truth["segment"].to_numpy()]
    features = np.hstack([segment, category_taste, favourite_hot, numeric]).astype(np.float32)
    rows = pd.Index(truth["client_id"]).get_indexer(clients)
    return np.where(rows[:, None] >= 0, features[np.maximum(rows, 0)], 0.0).astype(np.float32)
