"""The text_codes block: what a user searched for and the names of the products they handled, as latent topics.

In the challenge format a search query and a product name are 16 quantised text codes (0-255). The method embedded
them with a language model; offline, the codes themselves are the text. Each (source, position, code) is a term
(source: a search, or the name of a product bought, carted or removed), a user is the bag of their terms, and latent
semantic analysis gives the vector: TF-IDF weights (sublinear counts) and a truncated SVD, both fitted on the training
day's users with any text (a sample of them on large data). Users without text are left to the profile's fill.
Nothing else in the profile reads the searches' content.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.preprocessing import normalize

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback, TrainingHistory
from ubp_pipeline.core.profiles.embedders.base import Embedder, Embeddings, FittedEmbedder
from ubp_pipeline.core.sequences.user_sequences import UserSequences, load_sequences
from ubp_pipeline.core.warehouse.events import N_CODES

CODE_VALUES = 256
TEXT_SOURCES = ("query", "name")  # the text fields of a sequence, in term order
TERMS = len(TEXT_SOURCES) * N_CODES * CODE_VALUES


@dataclass(frozen=True)
class TextCodesConfig:
    dims: int = 64
    fit_users: int = 200_000  # the SVD is fitted on at most this many users (sampled): topics need no more
    embed_batch_users: int = 100_000  # users whose term matrix is built at once when embedding
    seed: int = 0


def term_counts(sequences: UserSequences) -> csr_matrix:
    """(users x TERMS) counts of (source, position, code) over each user's searches and product names."""
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    rows, terms = [], []
    for source, field in enumerate(TEXT_SOURCES):
        events, codes = sequences.text_codes(field)
        rows.append(np.repeat(owner[events], N_CODES))
        term_offset = source * N_CODES * CODE_VALUES + np.arange(N_CODES) * CODE_VALUES
        terms.append((codes.astype(np.int64) + term_offset).ravel())
    rows, terms = np.concatenate(rows), np.concatenate(terms)
    return csr_matrix((np.ones(len(rows)), (rows, terms)), shape=(len(sequences), TERMS))


def users_with_text(sequences: UserSequences) -> np.ndarray:
    """Rows of the users with at least one search or product name, found without parsing any codes."""
    has_text = sum(~np.asarray(getattr(sequences, f).is_null().to_numpy(zero_copy_only=False)) for f in TEXT_SOURCES)
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    return np.flatnonzero(np.bincount(owner, weights=has_text, minlength=len(sequences)) > 0)


def tfidf(counts: csr_matrix, idf: np.ndarray) -> csr_matrix:
    """Sublinear term frequency times idf, rows L2-normalised: scikit-learn's TfidfTransformer(sublinear_tf=True)
    with a stored idf, so a later day is weighted exactly as the training day was."""
    weighted = counts.copy()
    weighted.data = 1.0 + np.log(weighted.data)
    return normalize(weighted.multiply(idf[None, :]).tocsr())


class TextCodesEmbedder(Embedder):
    config_class = TextCodesConfig

    def fit(self, folder: Path, runtime: TorchRuntime, on_epoch: EpochCallback | None = None) -> FittedEmbedder:
        sequences = load_sequences(folder, text_fields=TEXT_SOURCES)
        with_text = users_with_text(sequences)
        if len(with_text) < 2:
            raise ValueError(f"{folder}: {len(with_text)} users searched or handled a product; text_codes needs 2+")
        if len(with_text) > self.config.fit_users:
            rng = np.random.default_rng(self.config.seed)
            with_text = np.sort(rng.choice(with_text, self.config.fit_users, replace=False))
        counts = term_counts(sequences.select(with_text))
        idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
        dims = min(self.config.dims, len(with_text) - 1)
        svd = TruncatedSVD(n_components=dims, random_state=self.config.seed).fit(tfidf(counts, idf))
        history = TrainingHistory()
        history.record(
            1,
            {
                "users": float(len(sequences)),
                "fitted_users": float(len(with_text)),
                "explained_variance": float(svd.explained_variance_ratio_.sum()),
            },
            on_epoch,
        )
        return FittedEmbedder(
            state={"idf": torch.from_numpy(idf), "components": torch.from_numpy(svd.components_.astype(np.float32))},
            config=asdict(self.config),
            history=history,
        )

    def embed(self, fitted: FittedEmbedder, folder: Path, runtime: TorchRuntime) -> Embeddings:
        """Users with at least one search or product name; the profile fills the others like any absent user."""
        sequences = load_sequences(folder, text_fields=TEXT_SOURCES)
        idf, components = fitted.state["idf"].numpy(), fitted.state["components"].numpy()
        batch = self.config.embed_batch_users
        users, vectors = [], []
        for start in range(0, len(sequences), batch):
            rows = np.arange(start, min(start + batch, len(sequences)))
            counts = term_counts(sequences.select(rows))
            with_text = np.diff(counts.indptr) > 0
            users.append(rows[with_text])
            vectors.append((tfidf(counts[with_text], idf) @ components.T).astype(np.float32))
        if not users:
            return Embeddings(sequences.client_ids[:0], np.zeros((0, len(components)), np.float32))
        return Embeddings(sequences.client_ids[np.concatenate(users)], np.concatenate(vectors))
