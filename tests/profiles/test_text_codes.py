"""The text_codes block reads what the codes say: names and searches place a user near their categories."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from ubp_pipeline.core.profiles.embedders.text_codes import TERMS, TEXT_SOURCES, term_counts, tfidf, users_with_text
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.core.sequences.user_sequences import load_sequences


def _modal_categories(sequences, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of client_ids with product events, the most frequent category among each one's product events)."""
    row_of = {client: row for row, client in enumerate(sequences.client_ids)}
    kept, modal = [], []
    for i, client in enumerate(client_ids):
        row = row_of[client]
        categories = sequences.category[sequences.offsets[row] : sequences.offsets[row + 1]]
        categories = categories[categories >= 0]
        if len(categories):
            values, counts = np.unique(categories, return_counts=True)
            kept.append(i)
            modal.append(values[counts.argmax()])
    return np.array(kept), np.array(modal)


def test_a_later_day_embedded_by_the_training_day_topics_predicts_each_users_main_category(tiny_sequences, runtime):
    embedder = BLOCKS["text_codes"].build()
    fitted = embedder.fit(tiny_sequences["train"], runtime)
    later = embedder.embed(fitted, tiny_sequences["later"], runtime)
    rows, category = _modal_categories(load_sequences(tiny_sequences["later"]), later.client_ids)
    majority = np.unique(category, return_counts=True)[1].max() / len(category)
    accuracy = cross_val_score(LogisticRegression(max_iter=2_000), later.vectors[rows], category, cv=3).mean()
    assert accuracy >= 3 * majority, (accuracy, majority)


def test_each_code_is_one_term_of_its_source_and_position_weighted_as_scikit_learn_would(tiny_sequences):
    sequences = load_sequences(tiny_sequences["later"], text_fields=TEXT_SOURCES)
    counts = term_counts(sequences)
    assert counts.shape == (len(sequences), TERMS)
    searches, query = sequences.text_codes("query")
    products, names = sequences.text_codes("name")
    half = TERMS // 2
    assert counts[:, :half].sum() == 16 * len(searches) and counts[:, half:].sum() == 16 * len(products)
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    user, position = owner[products[0]], 5
    assert counts[user, half + position * 256 + int(names[0, position])] >= 1
    user, position = owner[searches[0]], 15
    assert counts[user, position * 256 + int(query[0, position])] >= 1

    rows = users_with_text(sequences)
    assert rows.tolist() == np.flatnonzero(np.diff(counts.indptr) > 0).tolist()
    reference = TfidfTransformer(sublinear_tf=True).fit(counts[rows])
    ours = tfidf(counts[rows], reference.idf_)
    assert np.allclose(ours.toarray(), reference.transform(counts[rows]).toarray())
