"""Downstream targets on a hand-made event set, against labels computed by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from tests.factories import write_source
from ubp_pipeline.core.evaluation.targets import IncompleteFutureError, build_targets, load_targets, make_tasks
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceLayout

D = date(2022, 7, 1)
LAST = date(2022, 7, 29)  # D + 28: the last day the windows need


@pytest.fixture
def targets(tmp_path):
    # catalogue: sku 10 (category 1), 11 (category 1), 12 (category 2), 13 (category 3)
    source = write_source(
        tmp_path / "src",
        {
            "product_buy": [
                (1, "2022-06-30 10:00:00", 10),  # client 1 bought before D
                (1, "2022-07-05 10:00:00", 11),  # ... and in window 1
                (2, "2022-07-03 10:00:00", 13),  # client 2: a sku never seen before D, in window 1
                (2, "2022-07-20 10:00:00", 12),  # ... and sku 12 in window 2
                (3, "2022-06-25 10:00:00", 10),  # client 3 bought before D only
                (3, "2022-07-30 10:00:00", 10),  # after window 2: ignored
            ],
            # skus 11 and 12 were seen before D, so they are not new; sku 13 is
            "add_to_cart": [(3, "2022-06-20 10:00:00", 12), (4, "2022-06-15 10:00:00", 11)],
        },
    )
    layout = SourceLayout(source)
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        ingest_product_properties(con, layout)
        ingest_event_tables(con, layout, EVENT_TYPES, date(2022, 6, 1), date(2022, 7, 31))
        build_targets(con, D, LAST, tmp_path / "targets")
        with pytest.raises(IncompleteFutureError, match="2022-07-02 has no complete 28-day future.*newest day that can be evaluated is 2022-07-01"):
            build_targets(con, date(2022, 7, 2), LAST, tmp_path / "too_late")
    assert not (tmp_path / "too_late").exists()
    return load_targets(tmp_path / "targets")


def test_labels_match_the_hand_computed_ones(targets):
    clients = np.array([1, 2, 3, 4])
    tasks = {task.name: task for task in make_tasks(targets, clients)}
    churn = tasks["churn"]
    assert churn.users.tolist() == [0, 2]  # clients 1 and 3 had bought by D
    assert churn.train_labels.tolist() == [0, 1] and churn.score_labels.tolist() == [1, 1]
    conversion = tasks["conversion"]
    assert conversion.train_labels.tolist() == [0, 0, 1, 1] and conversion.score_labels.tolist() == [1, 0, 1, 1]

    category = tasks["propensity_category"]  # window-1 buys: category 1 (client 1) and 3 (client 2)
    assert category.popularity.tolist() == [1.0, 1.0]
    assert category.train_labels.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]
    assert category.score_labels.sum() == 0  # window 2 holds category 2, not a target

    sku = tasks["propensity_sku"]
    assert sku.train_labels.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]

    new_sku = tasks["propensity_new_sku"]
    assert new_sku.train_labels.tolist() == [[0], [1], [0], [0]] and new_sku.popularity.tolist() == [1.0]
    assert set(tasks) == {"churn", "conversion", "propensity_category", "propensity_sku", "propensity_price", "propensity_new_sku"}


def test_targets_never_read_the_as_of_day_or_earlier(targets):
    assert set(targets.purchases["target_window"]) == {1, 2}
    assert len(targets.purchases) == 3 and targets.past_buyers.tolist() == [1, 3]
    assert targets.purchases.loc[targets.purchases["sku"] == 13, "new_sku"].tolist() == [True]
    assert not targets.purchases.loc[targets.purchases["sku"] != 13, "new_sku"].any()
