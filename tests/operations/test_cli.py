"""The `ubp` command as a user runs it: generate a data set, then the main job on it, end to end; errors as one line;
the UI from the console script with no virtual environment activated."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.factories import stop_process_group, write_source, write_table
from tests.warehouse.test_bad_input import visits_at
from ubp_pipeline.cli import INIT_LOCK, _choose_dagster_home, _ensure_dagster_home, main
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.settings import Settings
from ubp_pipeline.summary import _reach_again

BIN = Path(sys.executable).parent  # the environment's bin folder, where the `ubp` console script lives


@pytest.fixture(autouse=True)
def _environment_restored():
    """`ubp` exports UBP_* settings into its own process; a test that calls main() must not leak them to later tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def plain_shell() -> dict[str, str]:
    """A new terminal where the venv was never activated: no VIRTUAL_ENV, its bin folder not on PATH, no project
    variables, and no PYTHONUNBUFFERED (a CI runner's setting), so output sent to a file is block-buffered."""
    dropped = ("VIRTUAL_ENV", "DAGSTER_HOME", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("UBP_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN) or "/usr/bin:/bin"
    return env


def _without_venv(root: Path, **extra: str) -> dict[str, str]:
    """``plain_shell`` with the Dagster home and the data under ``root``."""
    return {**plain_shell(), "DAGSTER_HOME": str(root / "dagster_home"), "UBP_HOME": str(root / "home"), **extra}


def _ubp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ubp"), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(1_200)  # the whole main job on 2,000 users: minutes on two busy cores
def test_generate_then_run_the_main_job_on_a_source_directory(tmp_path, monkeypatch, capsys):
    """Enough users for every stage, the recommender and its summary included: 2,000 generated users over 75 days
    give about 520 users with 3+ product events on the training day (the recommender needs 200) and enough held-out
    tokens to annotate the SAE's features; the quick probe keeps the backtest short."""
    for name in ("UBP_SOURCE_DIR", "UBP_FIRST_DAY", "UBP_LAST_DAY", "UBP_LOOKBACK_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UBP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UBP_TORCH_THREADS", "1")
    monkeypatch.setenv("UBP_PROBE", "quick")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    source = tmp_path / "ubc_data"

    main(["generate", "--users", "2000", "--days", "75", "--seed", "5", "--start", "2022-08-01", "--out", str(source)])
    main(["run", "--source", str(source)])
    main(["export", "--source", str(source), "--day", "2022-09-16", "--out", str(tmp_path / "submission")])

    printed = capsys.readouterr().out
    assert "events from 2022-08-01 to 2022-10-14" in printed
    assert "user_sequences (as of the end of the day)" in printed
    for day in ("2022-09-16", "2022-10-14"):  # the backtest day (28 days before the end) and the newest day
        assert (tmp_path / "home" / "artifacts" / "user_sequences" / day / "sequences.parquet").exists()
        assert day in printed
    with connect_warehouse(tmp_path / "home" / "warehouse.duckdb", read_only=True) as con:
        first, last, n = con.execute("SELECT min(event_date), max(event_date), count(*) FROM events").fetchone()
    assert (str(first), str(last)) == ("2022-08-01", "2022-10-14") and n > 10_000
    assert (tmp_path / "dagster_home" / "storage").is_dir()  # runs were recorded in the user's Dagster instance
    home = tmp_path / "home" / "artifacts"
    assert (home / "profile_evaluation" / "2022-09-16" / "scores.md").read_text().startswith("row | churn")
    recommender = printed[printed.index("sasrec_model (trained on 2022-09-16: "):].splitlines()
    assert re.fullmatch(
        r"  leave-one-out test NDCG@10: SASRec 0\.\d{4}, popularity 0\.\d{4}, item-to-item 0\.\d{4}, blend 0\.\d{4}; "
        r"`ubp recommend` serves (SASRec|popularity|item-to-item|SASRec \+ item-to-item) \(best on validation\)",
        recommender[1],
    )
    assert recommender[2].startswith("  sae_dictionary (layer ") and "explained variance" in recommender[2]
    assert recommender[3].startswith("  monosemanticity, median over reliable features: SAE ")
    assert re.match(r"  steering \S+ by feature \d+ |  steering: no feature fired often enough", recommender[4])
    assert "valid: int64 ids, float16 embeddings" in printed
    relevant = np.load(source / "input" / "relevant_clients.npy")
    assert np.array_equal(np.sort(np.load(tmp_path / "submission" / "client_ids.npy")), np.sort(relevant))


def test_a_missing_source_folder_is_one_line_with_the_fix_and_a_traceback_only_with_debug(tmp_path):
    missing = tmp_path / "no_such_data"
    plain = _ubp("run", "--source", str(missing), env=_without_venv(tmp_path))
    assert plain.returncode != 0
    assert plain.stderr.strip().splitlines() == [
        f"ubp: error: no such folder: {missing} (give --source the folder that holds product_buy.parquet etc.)"
        " (--debug shows the traceback)"
    ]
    debug = _ubp("run", "--source", str(missing), "--debug", env=_without_venv(tmp_path))
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr


def test_a_source_whose_days_cannot_be_planned_is_refused_in_one_line(tmp_path):
    source = write_source(tmp_path / "src")
    write_table(source, "page_visit", visits_at([f"{2000 + i // 100}-01-01 00:00:00" for i in range(2_000)]))
    refused = _ubp("run", "--source", str(source), env=_without_venv(tmp_path))
    (line,) = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and line.startswith("ubp: error: the events of")
    assert "page_visit.parquet row 1999: 2019-01-01 00:00:00" in line and "set UBP_FIRST_DAY and UBP_LAST_DAY" in line
    assert not (tmp_path / "dagster_home").exists()  # refused before any run was planned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ubp_ui_serves_the_ui_from_the_console_script_without_an_activated_venv(tmp_path):
    source = write_source(tmp_path / "src", {"page_visit": [(1, "2022-07-01 10:00:00", 5), (2, "2022-07-02 10:00:00", 6)]})
    port = _free_port()
    log = open(tmp_path / "ui.log", "w")
    server = subprocess.Popen(
        [str(BIN / "ubp"), "ui", "--port", str(port), "--source", str(source)],
        env=_without_venv(tmp_path), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.monotonic() < deadline, "the UI did not answer within 240 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(1)
    finally:
        stop_process_group(server)
        log.close()
    assert "source " + str(source) + ": events from 2022-07-01 to 2022-07-02" in (tmp_path / "ui.log").read_text()


def test_the_dagster_home_is_initialised_once_under_a_lock(tmp_path, monkeypatch):
    """Concurrent first runs on a fresh home must not race to create its SQLite tables: the second one waits."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with open(home / INIT_LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another `ubp` is initialising right now
        waiter = threading.Thread(target=_ensure_dagster_home)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not (home / "history").exists()
    waiter.join(timeout=60)
    assert not waiter.is_alive() and (home / "history" / "runs.db").is_file()


def test_a_real_source_gets_a_dagster_instance_of_its_own(tmp_path, monkeypatch):
    """Without DAGSTER_HOME the demo's instance is dagster_home/ in the working directory (the project's), and a real
    source's runs go beside its data (with the project's instance settings); a DAGSTER_HOME that is set is used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", "")  # unset, and restored after the test
    for name in ("UBP_SOURCE_DIR", "UBP_HOME", "UBP_FIRST_DAY", "UBP_LAST_DAY"):
        monkeypatch.delenv(name, raising=False)
    assert _choose_dagster_home() == tmp_path / "dagster_home"  # the demo

    monkeypatch.setenv("DAGSTER_HOME", "")
    monkeypatch.setenv("UBP_SOURCE_DIR", str(tmp_path / "ubc_data"))  # with its days, as `ubp run --source` sets them
    monkeypatch.setenv("UBP_FIRST_DAY", "2022-07-01")
    monkeypatch.setenv("UBP_LAST_DAY", "2022-07-02")
    own = tmp_path / "data" / "ubc_data" / "dagster_home"
    assert _choose_dagster_home() == own and os.environ["DAGSTER_HOME"] == str(own)
    assert (own / "dagster.yaml").read_text() == (tmp_path / "dagster_home" / "dagster.yaml").read_text()

    monkeypatch.setenv("DAGSTER_HOME", "")
    monkeypatch.setenv("UBP_HOME", str(tmp_path / "big_disk"))
    assert _choose_dagster_home() == tmp_path / "big_disk" / "dagster_home"

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "team_instance"))
    assert _choose_dagster_home() == tmp_path / "team_instance"


def test_the_summary_names_commands_that_reach_the_same_data_again(tmp_path):
    """A source with a space in its path and a home of its own: the printed commands carry both, quoted."""
    days = {"UBP_FIRST_DAY": "2022-07-01", "UBP_LAST_DAY": "2022-07-02"}
    source = tmp_path / "ubc data"
    settings = Settings.from_env({"UBP_SOURCE_DIR": str(source), "UBP_HOME": str(tmp_path / "disk"), **days})
    assert _reach_again(settings, "ubp export --day D") == (
        f"UBP_HOME={tmp_path / 'disk'} ubp export --day D --source '{source}'"
    )
    assert _reach_again(settings, "make ui", source_flag="SOURCE=").endswith(f"make ui SOURCE='{source}'")
    assert _reach_again(Settings.from_env({}), "make ui", source_flag="SOURCE=") == "make ui"  # the demo
