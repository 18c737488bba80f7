"""TopK sparse autoencoder (Gao et al. 2024) over a model's hidden states.

``z = TopK_k(ReLU(W_enc (x - b_pre) + b_lat))``, ``x_hat = W_dec z + b_pre``. Exactly ``k`` latents are selected per
token, so sparsity is set, not tuned through a penalty. Decoder columns are kept unit-norm (the activation alone
carries a feature's magnitude, and every column is a direction that steering can add); the encoder starts as the
decoder's transpose; ``b_pre`` starts at the data's geometric median. AuxK lets latents that have not fired for a
while (``dead``, decided by the training loop) fit the residual the live ones leave, which gives them gradient again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SAEConfig:
    d_in: int
    expansion: int = 8
    k: int = 16
    aux_k: int | None = None  # latents in the AuxK reconstruction; None = d_in // 2 (Gao et al., Appendix B.1)
    aux_coef: float = 1 / 32

    @property
    def n_latents(self) -> int:
        return self.d_in * self.expansion


def fraction_of_variance_unexplained(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the rows: 0 = perfect, 1 = no better than the mean."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


@torch.no_grad()
def geometric_median(x: torch.Tensor, iterations: int = 100, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distances, a centre that outliers cannot drag away."""
    median = x.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(eps)
        median = (weights[:, None] * x).sum(0) / weights.sum()
    return median


class TopKSAE(nn.Module):
    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        self.pre_bias = nn.Parameter(torch.zeros(config.d_in))
        self.encoder = nn.Linear(config.d_in, config.n_latents)
        self.decoder = nn.Parameter(torch.randn(config.d_in, config.n_latents))
        with torch.no_grad():
            self.normalize_decoder_()
            self.encoder.weight.copy_(self.decoder.T)
            self.encoder.bias.zero_()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.encoder(x - self.pre_bias))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense (..., n_latents) codes with exactly ``k`` selected latents per row (all others 0)."""
        return self._top_k(self.pre_activations(x), self.config.k)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.decoder.T + self.pre_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @staticmethod
    def _top_k(pre_activations: torch.Tensor, k: int) -> torch.Tensor:
        values, indices = pre_activations.topk(k, dim=-1)
        return torch.zeros_like(pre_activations).scatter(-1, indices, values)

    def loss(self, x: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """FVU of the reconstruction plus ``aux_coef`` x FVU of the AuxK fit to its residual; returns (loss, parts,
        latents). ``dead`` (n_latents,) bool marks latents the training loop has not seen fire over its window."""
        pre = self.pre_activations(x)
        latents = self._top_k(pre, self.config.k)
        reconstruction = self.decode(latents)
        fvu = fraction_of_variance_unexplained(x, reconstruction)
        aux = torch.zeros((), device=x.device)
        n_dead = int(dead.sum())
        if n_dead and self.config.aux_coef:
            aux_k = self.config.aux_k or self.config.d_in // 2
            residual = (x - reconstruction).detach()
            dead_latents = self._top_k(pre.masked_fill(~dead, 0.0), min(aux_k, n_dead))
            aux = fraction_of_variance_unexplained(residual, dead_latents @ self.decoder.T) * min(n_dead / aux_k, 1.0)
        loss = fvu + self.config.aux_coef * aux
        return loss, {"fvu": fvu.item(), "aux_fvu": aux.item()}, latents

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.decoder /= self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_gradient_(self) -> None:
        """Drop the part of each column's gradient along the column: with unit-norm columns that part only changes the
        norm, which ``normalize_decoder_`` undoes anyway, and it would skew Adam's step statistics."""
        if self.decoder.grad is not None:
            parallel = (self.decoder.grad * self.decoder).sum(0, keepdim=True)
            self.decoder.grad -= parallel * self.decoder

    @torch.no_grad()
    def initialize_pre_bias_(self, sample: torch.Tensor) -> None:
        self.pre_bias.copy_(geometric_median(sample))


@torch.no_grad()
def widen_to_coordinates(sae: TopKSAE, d_in: int, first: int, rest: torch.Tensor) -> TopKSAE:
    """``sae`` (trained on the coordinates ``first:`` of a ``d_in``-wide state) as a ``d_in``-wide SAE that reads and
    writes only those coordinates: encoder and decoder are zero on the others, whose reconstruction is ``rest`` (their
    mean, say). Steering (add, clamp) and annotation then apply to it as to an SAE of the whole state; measures of the
    whole reconstruction (``evaluate_sae``, splicing) do not, since it replaces the other coordinates by ``rest``."""
    width = sae.config.d_in
    if len(rest) != first:
        raise ValueError(f"rest holds {len(rest)} values for the {first} coordinates before the channel")
    if first + width != d_in or sae.config.n_latents % d_in:
        raise ValueError(
            f"an SAE of {width} coordinates with {sae.config.n_latents} latents does not widen to coordinates "
            f"{first}: of {d_in} (they must end the state, and the latents must be a multiple of {d_in})"
        )
    wide = TopKSAE(
        SAEConfig(
            d_in=d_in,
            expansion=sae.config.n_latents // d_in,
            k=sae.config.k,
            aux_k=sae.config.aux_k,
            aux_coef=sae.config.aux_coef,
        )
    ).to(sae.pre_bias.device)
    wide.encoder.weight.zero_()
    wide.encoder.weight[:, first:] = sae.encoder.weight
    wide.encoder.bias.copy_(sae.encoder.bias)
    wide.decoder.zero_()
    wide.decoder[first:] = sae.decoder
    wide.pre_bias.copy_(torch.cat([rest.to(sae.pre_bias.device), sae.pre_bias]))
    return wide.eval()
