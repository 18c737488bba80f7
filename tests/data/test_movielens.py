"""MovieLens-100k is read from the recbole wheel's packaged files, complete and in time order."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pytest

from ubp_pipeline.core.recommender.item_sequences import leave_one_out
from ubp_pipeline.data import movielens as movielens_module
from ubp_pipeline.data.movielens import load_movielens_100k, load_movielens_100k_frames

try:
    distribution("recbole")
except PackageNotFoundError:
    pytest.skip(
        "MovieLens-100k ships inside the recbole wheel: pip install --no-deps recbole==1.2.1", allow_module_level=True
    )


@pytest.fixture(scope="module")
def movielens():
    return load_movielens_100k()


def test_the_packaged_file_is_complete():
    ratings, movies = load_movielens_100k_frames()
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == 943
    assert ratings["item_id"].nunique() == 1682 == len(movies)


def test_sequences_hold_every_rating_with_19_genres(movielens):
    assert (movielens.n_users, movielens.n_items, len(movielens.items)) == (943, 1682, 100_000)
    genre = movielens.attributes["genre"]
    assert len(genre.labels) == 19 and {"Drama", "Comedy", "Film-Noir", "unknown"} <= set(genre.labels)
    assert not genre.table[0].any() and genre.table[1:].any(axis=1).all()
    assert genre.table[:, genre.labels.index("Drama")].sum() == 725
    toy_story = np.flatnonzero(movielens.item_names == "Toy Story")[0]
    assert genre.describe(np.array([toy_story])) == ["Animation|Children's|Comedy"]


def test_sequences_are_in_timestamp_order_with_file_order_breaking_ties(movielens):
    ratings, _ = load_movielens_100k_frames()
    user = movielens.user_ids[0]
    expected = ratings[ratings["user_id"] == user].sort_values("timestamp", kind="stable")["item_id"].to_numpy()
    assert (movielens.item_ids[movielens.sequence(0) - 1] == expected).all()
    timestamps = ratings.set_index(["user_id", "item_id"])["timestamp"]
    for u in (0, 100, 942):
        items = movielens.item_ids[movielens.sequence(u) - 1]
        assert np.all(np.diff(timestamps.loc[[(movielens.user_ids[u], i) for i in items]].to_numpy()) >= 0)


def test_leave_one_out_holds_out_the_last_two_items_of_every_user(movielens):
    split = leave_one_out(movielens)
    assert len(split.train.items) == 100_000 - 2 * 943
    assert (split.valid.lengths == movielens.lengths - 1).all()
    assert (split.train.last_items(np.arange(943)) == movielens.items[movielens.offsets[1:] - 3]).all()


def test_a_missing_package_is_named_in_the_error(monkeypatch):
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(movielens_module, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps recbole"):
        load_movielens_100k()
