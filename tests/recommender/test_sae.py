"""TopK SAE: exact sparsity, unit-norm dictionary, learning, AuxK for dead latents, and faithfulness inside SASRec."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.recommender_fixtures import planted_sae, tiny_runtime, trained_planted_sasrec
from ubp_pipeline.core.recommender.sae_training import (
    SAETrainingConfig,
    evaluate_sae,
    splice_fidelity,
    train_channel_sae,
    train_sae,
)
from ubp_pipeline.models.sae import SAEConfig, TopKSAE, geometric_median, widen_to_coordinates


def sparse_atom_data(n: int = 4000, d: int = 16, atoms: int = 32, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Each row is a non-negative mix of ``active`` random unit atoms plus an offset: what a TopK SAE should recover."""
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(d, atoms, generator=generator)
    dictionary /= dictionary.norm(dim=0)
    chosen = torch.rand(n, atoms, generator=generator).argsort(dim=1)[:, :active]
    codes = torch.zeros(n, atoms).scatter_(1, chosen, torch.rand(n, active, generator=generator) + 0.5)
    return codes @ dictionary.T + 0.5


def test_exactly_k_latents_are_active():
    sae = TopKSAE(SAEConfig(d_in=16, expansion=8, k=5))
    latents = sae.encode(sparse_atom_data(n=256))
    assert ((latents != 0).sum(dim=1) == 5).all()
    assert (latents >= 0).all()


def test_training_keeps_decoder_unit_norm_and_improves_reconstruction():
    x = sparse_atom_data()
    config = SAEConfig(d_in=16, expansion=4, k=4)
    untrained = TopKSAE(config)
    untrained.initialize_pre_bias_(x)
    before = evaluate_sae(untrained, x)["explained_variance"]

    trained = train_sae(x, config, SAETrainingConfig(epochs=6, batch_size=128, learning_rate=1e-2), tiny_runtime())
    after = evaluate_sae(trained.sae, x)

    assert torch.allclose(trained.sae.decoder.norm(dim=0), torch.ones(config.n_latents), atol=1e-5)
    assert after["explained_variance"] > 0.85 > 0.5 > before
    assert after["l0"] == 4
    fvu = trained.history.series("fvu")
    assert fvu[-1] < fvu[0]


def test_a_channel_sae_reads_and_writes_only_its_coordinates():
    """Trained on the last 16 of 48 coordinates and widened to all 48: the same codes as on the channel alone, a
    dictionary that is zero outside it, so adding a feature leaves the other coordinates as they were."""
    channel = sparse_atom_data(n=2000)
    noise = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1)) * 3 + 1
    states = torch.cat([noise, channel], dim=1)
    config = SAEConfig(d_in=16, expansion=6, k=4)  # 96 latents: a multiple of the 48 coordinates
    training = SAETrainingConfig(epochs=6, batch_size=128, learning_rate=1e-2)

    wide = train_channel_sae(states, 32, config, training, tiny_runtime()).sae
    alone = train_sae(channel, config, training, tiny_runtime()).sae

    assert wide.config.d_in == 48 and wide.config.n_latents == 96
    assert torch.allclose(wide.encode(states), alone.encode(channel), atol=1e-6)
    assert wide.decoder[:32].abs().max() == 0 and torch.allclose(wide.decoder[32:], alone.decoder)
    reconstruction = wide(states)
    assert torch.allclose(reconstruction[:, :32], noise.mean(0).expand(2000, 32))
    assert evaluate_sae(alone, channel)["explained_variance"] > 0.8  # it learned the channel
    assert torch.allclose(reconstruction[:, 32:], alone(channel), atol=1e-6)


@pytest.mark.parametrize(
    ("d_in", "first", "rest", "message"),
    [
        (48, 16, 16, "must end the state"),  # a gap after the channel
        (40, 24, 24, "must end the state"),  # 96 latents are not a multiple of 40
        (48, 32, 31, "rest holds 31 values"),
    ],
)
def test_an_sae_widens_only_to_coordinates_that_end_the_state(d_in, first, rest, message):
    sae = TopKSAE(SAEConfig(d_in=16, expansion=6, k=4))
    with pytest.raises(ValueError, match=message):
        widen_to_coordinates(sae, d_in, first, torch.zeros(rest))


def test_gradient_parallel_to_each_decoder_column_is_removed():
    sae = TopKSAE(SAEConfig(d_in=16, expansion=4, k=3))
    loss, _, _ = sae.loss(sparse_atom_data(n=128), dead=torch.zeros(64, dtype=torch.bool))
    loss.backward()
    assert (sae.decoder.grad * sae.decoder).sum(0).abs().max() > 1e-6
    sae.remove_parallel_gradient_()
    assert (sae.decoder.grad * sae.decoder).sum(0).abs().max() < 1e-6


def _outcompeted_sae(x: torch.Tensor, aux_coef: float) -> tuple[TopKSAE, torch.Tensor]:
    """An SAE whose second half of latents has positive pre-activations too weak ever to make the top k."""
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=16, expansion=4, k=3, aux_coef=aux_coef))
    sae.initialize_pre_bias_(x)
    dead = torch.arange(64) >= 32
    with torch.no_grad():
        sae.encoder.weight[dead] *= 0.01
        sae.encoder.bias[dead] = 1e-3
    assert not (sae.encode(x)[:, dead] > 0).any()
    return sae, dead


def test_auxk_sends_gradient_to_dead_latents_only_when_enabled():
    x = sparse_atom_data(n=256)
    for aux_coef, expect_gradient in ((1 / 32, True), (0.0, False)):
        sae, dead = _outcompeted_sae(x, aux_coef)
        loss, parts, _ = sae.loss(x, dead)
        loss.backward()
        dead_gradient = sae.encoder.weight.grad[dead].abs().sum()
        assert (dead_gradient > 0) == expect_gradient
        assert (parts["aux_fvu"] > 0) == expect_gradient


def test_auxk_revives_dead_latents():
    x = sparse_atom_data(n=1024)
    fired = {}
    for aux_coef in (0.0, 1.0):
        sae, dead = _outcompeted_sae(x, aux_coef)
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
        for _ in range(150):
            loss, _, _ = sae.loss(x, dead)
            optimizer.zero_grad()
            loss.backward()
            sae.remove_parallel_gradient_()
            optimizer.step()
            sae.normalize_decoder_()
        fired[aux_coef] = int((sae.encode(x)[:, dead] > 0).any(0).sum())
    assert fired[0.0] == 0
    assert fired[1.0] >= 4


def test_geometric_median_ignores_outliers_that_move_the_mean():
    points = torch.cat([torch.randn(200, 4) * 0.1, torch.full((20, 4), 100.0)])
    assert points.mean(0).norm() > 10
    assert geometric_median(points).norm() < 1


def test_sae_spliced_into_sasrec_keeps_most_of_its_ranking_quality():
    split, trained = trained_planted_sasrec()
    states, sae = planted_sae()
    assert len(states) == sum(max(len(split.train.sequence(u)) - 1, 0) for u in range(split.train.n_users))
    fidelity = splice_fidelity(trained.model, sae, states, split.test, torch.device("cpu"))
    assert fidelity["ndcg@10_mean_ablated"] < fidelity["ndcg@10_original"] / 2
    assert fidelity["ndcg_recovered"] > 0.8


def test_ndcg_recovered_is_undefined_when_mean_ablation_costs_nothing():
    split, trained = trained_planted_sasrec()
    states, sae = planted_sae()
    blind = copy.deepcopy(trained.model)
    with torch.no_grad():
        blind.final_norm.weight.zero_()  # every history now gets the same scores: the layer cannot matter
    fidelity = splice_fidelity(blind, sae, states, split.test, torch.device("cpu"))
    assert fidelity["ndcg@10_original"] == fidelity["ndcg@10_mean_ablated"]
    assert math.isnan(fidelity["ndcg_recovered"])


def test_latents_silent_on_few_held_out_tokens_are_weighed_against_their_training_rates():
    """On few held-out tokens many live but rare latents are silent: the yardstick predicts how many from their rates
    on the training tokens, and on independent tokens of the same distribution the silent share comes out within a
    few standard deviations of it."""
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=16, expansion=16, k=2))  # 256 latents, 2 per token: 0.8 % of tokens on average
    tokens = sparse_atom_data(n=20_500, seed=1)
    training, held_out = tokens[:20_000], tokens[20_000:]
    measured = evaluate_sae(sae, held_out, training_states=training)
    rates = (sae.encode(training) != 0).double().mean(0)
    silent = (1 - rates).pow(len(held_out))  # each latent's chance to be silent on all held-out tokens
    assert measured["dead_on_training_tokens"] == pytest.approx((rates == 0).double().mean().item())
    assert measured["silent_fraction_expected"] == pytest.approx(silent.mean().item())
    assert measured["dead_fraction"] > measured["dead_on_training_tokens"] + 0.1  # silent here, alive in training
    spread = (silent * (1 - silent)).sum().sqrt().item() / len(silent)  # of the silent share, latents independent
    assert measured["dead_fraction"] == pytest.approx(measured["silent_fraction_expected"], abs=4 * spread + 0.01)
    assert "silent_fraction_expected" not in evaluate_sae(sae, held_out)
    without_training = evaluate_sae(sae, held_out, training_states=training[:0])
    assert math.isnan(without_training["silent_fraction_expected"])
    assert math.isnan(without_training["dead_on_training_tokens"])
