"""MovieLens-100k from the copy the ``recbole`` wheel ships, so a public benchmark runs offline and nothing is vendored.

GroupLens does not allow redistributing the files; reading the installed package's copy avoids putting them in git.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pandas as pd

from ubp_pipeline.core.recommender.item_sequences import ItemSequences, build_item_sequences

PACKAGE = "recbole"
FOLDER = "recbole/dataset_example/ml-100k"


def movielens_100k_dir() -> Path:
    """Where the installed recbole package keeps the ml-100k atomic files."""
    try:
        folder = Path(distribution(PACKAGE).locate_file(FOLDER))
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"MovieLens-100k is read from the '{PACKAGE}' package's files, and {PACKAGE} is not installed: "
            f"pip install --no-deps {PACKAGE}==1.2.1"
        ) from None
    if not (folder / "ml-100k.inter").exists():
        raise FileNotFoundError(f"the installed '{PACKAGE}' package has no {FOLDER}/ml-100k.inter")
    return folder


def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic files are TSV with ``name:type`` headers; keep the names."""
    frame = pd.read_csv(path, sep="\t")
    return frame.rename(columns=lambda column: column.split(":")[0])


def load_movielens_100k_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings (user_id, item_id, rating, timestamp) and movies (item_id, movie_title, release_year, genres list)."""
    folder = movielens_100k_dir()
    ratings = _read_atomic(folder / "ml-100k.inter")
    movies = _read_atomic(folder / "ml-100k.item")
    movies["genres"] = movies.pop("class").str.split(" ")
    return ratings, movies


def load_movielens_100k(min_item_count: int = 1) -> ItemSequences:
    """Every rating as an interaction, ordered by timestamp with ties kept in the file's row order (half the rows
    share a timestamp with another rating of the same user), with ``genre`` as a multi-hot item attribute."""
    ratings, movies = load_movielens_100k_frames()
    sequences = build_item_sequences(
        ratings["user_id"].to_numpy(),
        ratings["item_id"].to_numpy(),
        ratings["timestamp"].to_numpy(),
        min_item_count=min_item_count,
        item_names=dict(zip(movies["item_id"], movies["movie_title"])),
    )
    genres = movies["genres"].explode()
    table = pd.crosstab(genres.index, genres.to_numpy()).reindex(index=movies.index, fill_value=0)
    return sequences.with_multi_hot("genre", movies["item_id"].to_numpy(), table.to_numpy() > 0, list(table.columns))
