"""The probe MLP and protocol: size of the official net, real (small) trainings on planted signal, epoch selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.evaluation.probe import (
    OFFICIAL_PROBE,
    QUICK_PROBE,
    ProbeSettings,
    ProbeTask,
    best_epoch,
    run_probe,
    run_probes,
)
from ubp_pipeline.models.probe import ProbeNet, ProbeNetConfig

N_USERS, DIM = 3000, 32
SMALL = ProbeSettings(width=64)  # labelled "quick-w64": same recipe, narrower net


@pytest.fixture(scope="module")
def runtime():
    return make_runtime("cpu", seed=0, threads=1)  # tiny nets: one thread is fastest, and robust to a busy machine


@pytest.fixture(scope="module")
def planted():
    """float16 embeddings whose first 3 dimensions drive both windows' labels (with independent noise per window)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N_USERS, DIM)).astype(np.float16)
    signal = x[:, :3].astype(np.float64) @ np.array([2.0, -1.5, 1.0])
    windows = [(signal + rng.normal(scale=0.7, size=N_USERS)) > 0.5 for _ in range(2)]
    return x, windows


def churn_task(x_and_windows, users=None) -> ProbeTask:
    _, (window1, window2) = x_and_windows
    users = np.arange(N_USERS) if users is None else users
    return ProbeTask("churn", "binary", users, window1[users], window2[users])


def propensity_task(seed: int = 11, k: int = 15) -> tuple[np.ndarray, ProbeTask]:
    """Each target is bought by users whose embedding points its way (a random direction in 4 planted dimensions)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_USERS, DIM)).astype(np.float16)
    directions = rng.normal(size=(4, k))
    affinity = x[:, :4].astype(np.float64) @ directions
    window1, window2 = ((affinity + rng.normal(scale=0.8, size=affinity.shape)) > 2.0 for _ in range(2))
    popularity = window1.sum(axis=0).astype(float)
    return x, ProbeTask("propensity_category", "propensity", np.arange(N_USERS), window1, window2, popularity)


def official_parameter_count(d: int, out: int, w: int = 2048) -> int:
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731
    layer_norm = 2 * w
    block = layer_norm + linear(w, 2 * w) + linear(2 * w, w)
    return linear(d, w) + layer_norm + 3 * block + layer_norm + linear(w, out)


@pytest.mark.parametrize(
    "input_dim, output_dim, millions",
    [(320, 1, 51.03), (2048, 1, 54.57), (2048, 100, 54.77)],  # 320 = the aggregated-features baseline's width
)
def test_official_probe_parameter_count(input_dim, output_dim, millions):
    with torch.device("meta"):  # shapes only: no 200 MB allocation, no initialisation
        net = ProbeNet(ProbeNetConfig(input_dim=input_dim, output_dim=output_dim))
    count = sum(p.numel() for p in net.parameters())
    assert count == official_parameter_count(input_dim, output_dim)
    assert count / 1e6 == pytest.approx(millions, abs=0.005)


def test_probe_labels():
    assert OFFICIAL_PROBE.label == "official-w2048"
    assert QUICK_PROBE.label == "quick-w256"
    assert ProbeSettings(width=256, epochs=1).label == "custom-w256"
    assert ProbeSettings(inference_batch_size=100).label == "official-w2048"  # batching for inference changes nothing


def test_quick_probe_finds_planted_signal(planted, runtime):
    result = run_probe(planted[0], churn_task(planted), runtime, SMALL)
    assert result.probe == "quick-w64"
    assert result.n_users == N_USERS and len(result.history.epochs) == 3
    assert result.best["auroc"] > 0.85
    losses = result.history.series("train_loss")
    assert losses[-1] < losses[0]


def test_probe_on_noise_is_near_chance(planted, runtime):
    noise = np.random.default_rng(8).normal(size=(N_USERS, DIM)).astype(np.float16)
    result = run_probe(noise, churn_task(planted), runtime, SMALL)
    assert abs(result.history.series("auroc")[0] - 0.5) < 0.06


def test_propensity_probe_reports_all_metrics(runtime):
    x, task = propensity_task()
    result = run_probe(x, task, runtime, SMALL)
    best = result.best
    assert best["auroc"] > 0.8
    assert 0.0 <= best["novelty"] <= 1.0 and 0.0 < best["diversity"] < 1.0
    assert best["score"] == pytest.approx(0.8 * best["auroc"] + 0.1 * best["novelty"] + 0.1 * best["diversity"])


def test_best_epoch_rule():
    assert best_epoch([0.61, 0.74, 0.70]) == 2
    assert best_epoch([0.70, 0.65, 0.70]) == 1  # ties go to the earliest epoch
    assert best_epoch([math.nan, 0.5, 0.4]) == 2  # NaN never wins
    assert best_epoch([math.nan, math.nan, math.nan]) == 1


def test_task_score_is_the_best_epochs_score(runtime):
    x, task = propensity_task(seed=12)
    result = run_probe(x, task, runtime, SMALL)
    scores = result.history.series("score")
    assert result.score == max(scores)
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert "best epoch" in result.score_rule


def test_same_seed_same_result_and_seed_matters(planted, runtime):
    task = churn_task(planted)
    first = run_probe(planted[0], task, runtime, SMALL)
    second = run_probe(planted[0], task, runtime, SMALL)
    reseeded = run_probe(planted[0], task, runtime, ProbeSettings(width=64, seed=1))
    for name in ("train_loss", "auroc"):
        assert first.history.series(name) == second.history.series(name)
    assert first.history.series("train_loss") != reseeded.history.series("train_loss")


def test_only_the_task_users_are_read(planted, runtime):
    x = planted[0].copy()
    active = np.arange(0, N_USERS, 2)
    x[1::2] = np.nan  # users outside the task (e.g. inactive ones for churn) may lack an embedding entirely
    result = run_probe(x, churn_task(planted, active), runtime, SMALL)
    assert result.n_users == len(active) and result.best["auroc"] > 0.8
    with pytest.raises(ValueError, match="NaN"):
        run_probe(x, churn_task(planted, np.arange(N_USERS)), runtime, SMALL)


def test_run_probes_table(planted, runtime):
    x, propensity = propensity_task()
    churn = churn_task((x, planted[1]))
    table = run_probes(x, [churn, propensity], runtime, SMALL)
    assert list(table["task"]) == ["churn", "propensity_category"]
    assert {"auroc", "novelty", "diversity", "score", "best_epoch", "probe"} <= set(table.columns)
    assert set(table["probe"]) == {"quick-w64"}
    assert math.isnan(table.loc[0, "novelty"]) and table.loc[0, "score"] == table.loc[0, "auroc"]


def test_task_validation():
    users = np.arange(4)
    labels = np.array([0, 1, 1, 0], dtype=np.uint8)
    with pytest.raises(ValueError, match="popularity"):
        ProbeTask("sku", "propensity", users, labels.reshape(4, 1).repeat(3, 1), labels.reshape(4, 1).repeat(3, 1))
    with pytest.raises(ValueError, match="does not match"):
        ProbeTask("churn", "binary", users, labels[:3], labels[:3])
    with pytest.raises(ValueError, match="0/1"):
        ProbeTask("churn", "binary", users, labels * 2, labels)


def test_the_backtest_uses_the_official_probe_on_every_user_of_a_gpu_and_a_seeded_sample_on_a_cpu():
    from ubp_pipeline.core.evaluation.backtest import CPU_SAMPLE_USERS, probe_plan

    assert probe_plan("auto", "cuda", 50_000, None) == (OFFICIAL_PROBE, None)
    settings, rows = probe_plan("auto", "cpu", 50_000, None, seed=3)
    assert settings == OFFICIAL_PROBE and len(rows) == len(set(rows)) == CPU_SAMPLE_USERS
    assert np.all(np.diff(rows) > 0)  # the profile's row order is kept (the official evaluator does not shuffle)
    assert np.array_equal(rows, probe_plan("auto", "cpu", 50_000, None, seed=3)[1])
    assert probe_plan("auto", "cpu", 1_000, None)[1] is None  # fewer users than the sample: all of them
    assert probe_plan("official", "cpu", 50_000, 0)[1] is None  # 0: every user, whatever the device
    assert probe_plan("quick", "cpu", 50_000, None) == (QUICK_PROBE, None)
    with pytest.raises(ValueError, match="choose auto, official or quick"):
        probe_plan("fast", "cpu", 10, None)
