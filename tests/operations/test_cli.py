"""The `ubp` command as a user runs it: generate a data set, then the main job on it, end to end."""

from __future__ import annotations

import numpy as np

from ubp_pipeline.cli import main
from ubp_pipeline.core.warehouse.database import connect_warehouse


def test_generate_then_run_the_main_job_on_a_source_directory(tmp_path, monkeypatch, capsys):
    for name in ("UBP_SOURCE_DIR", "UBP_FIRST_DAY", "UBP_LAST_DAY", "UBP_LOOKBACK_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UBP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UBP_TORCH_THREADS", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    source = tmp_path / "ubc_data"

    main(["generate", "--users", "150", "--days", "35", "--seed", "5", "--start", "2022-08-01", "--out", str(source)])
    main(["run", "--source", str(source)])
    main(["export", "--source", str(source), "--day", "2022-08-07", "--out", str(tmp_path / "submission")])

    printed = capsys.readouterr().out
    assert "events from 2022-08-01 to 2022-09-04" in printed
    assert "user_sequences (as of the end of the day)" in printed
    for day in ("2022-08-07", "2022-09-04"):  # the backtest day (28 days before the end) and the newest day
        assert (tmp_path / "home" / "artifacts" / "user_sequences" / day / "sequences.parquet").exists()
        assert day in printed
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb", read_only=True) as con:
        first, last, n = con.execute("SELECT min(event_date), max(event_date), count(*) FROM events").fetchone()
    assert (str(first), str(last)) == ("2022-08-01", "2022-09-04") and n > 1_000
    assert (tmp_path / "dagster_home" / "storage").is_dir()  # runs were recorded in the user's Dagster instance
    home = tmp_path / "home" / "artifacts"
    assert (home / "profile_evaluation" / "2022-08-07" / "scores.md").read_text().startswith("row | churn")
    assert "valid: int64 ids, float16 embeddings" in printed
    relevant = np.load(source / "input" / "relevant_clients.npy")
    assert np.array_equal(np.sort(np.load(tmp_path / "submission" / "client_ids.npy")), np.sort(relevant))
