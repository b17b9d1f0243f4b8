"""The logistic-normal policy distribution over portfolio weights, shared by PPO and SAC.

Additive-log-ratio coordinates with cash as the reference: a latent ``z`` (B, N) maps to weights
``masked_softmax([z, 0], mask1)`` (B, N+1), a bijection between R^K and the open simplex over the K
tradable assets plus cash (``agents.common.alr_from_weights`` is the inverse). The policy is a diagonal
Gaussian on z, ``z ~ Normal(mu, exp(log_std))``; densities and entropies are taken in z coordinates over
the tradable assets only (``mask`` (B, N), 1 = tradable): the softmax's Jacobian cancels in PPO's ratio
and is deliberately left out of SAC's entropy (see ``agents.sac_agent``). Masked assets get exactly 0 weight.

Exposure policies (``PPOConfig.action_head = "exposure"``): the mean is the same value s on every tradable
asset (``exposure_logits`` for the Transformer, ``pooled_exposure_logits`` for the per-asset encoders) and the noise is one draw per sample shared by every coordinate, ``z = mu +
exp(log_std_0) * eps * 1`` with eps (B, 1): a one-dimensional Gaussian along the all-ones direction, which
moves NAV between the equally weighted tradable assets and cash only (``shared_*`` below).

Pure functions of tensors, shapes in brackets; ``mask`` broadcasts against ``mu``.
"""

from __future__ import annotations

import math

import torch

from agents.common import masked_softmax

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def mean_latent(logits: torch.Tensor) -> torch.Tensor:
    """ALR mean mu (B, N) from per-asset logits (B, N+1): logits of the assets minus the cash logit."""
    return logits[:, :-1] - logits[:, -1:]


def noise_log_prob(eps: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-density (B,) of ``z = mu + exp(log_std) * eps`` given the standard-normal noise eps (B, N)."""
    return ((-0.5 * eps**2 - log_std - LOG_SQRT_2PI) * mask).sum(-1)


def latent_log_prob(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_i mask_i * log Normal(z_i; mu_i, exp(log_std_i))``, (B,), for z, mu (B, N) and log_std (B|1, N)."""
    return noise_log_prob((z - mu) / log_std.exp(), log_std, mask)


def latent_entropy(log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy (B,) of the Gaussian on the tradable coordinates: ``sum_i mask_i (0.5 + log sqrt(2 pi) + log_std_i)``."""
    return ((0.5 + LOG_SQRT_2PI + log_std) * mask).sum(-1)


def sample_noise(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard-normal noise of ``shape`` with ``like``'s dtype and device, drawn from ``generator``.

    The generator lives on the CPU (runs stay bit-identical for a seed on any device); the draw is moved.
    """
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def exposure_logits(token_logits: torch.Tensor) -> torch.Tensor:
    """Per-token head outputs (B, N+1) -> logits (B, N+1) of an exposure policy: the cash token's output s
    on every asset, 0 for cash; ``masked_softmax`` of them is ``1/(K + exp(-s))`` on each of the K tradable
    assets and the rest in cash (a scalar risky exposure ``K / (K + exp(-s))`` over an equal-weight sleeve)."""
    s = token_logits[:, -1:]
    return torch.cat([s.expand(-1, token_logits.shape[1] - 1), torch.zeros_like(s)], dim=1)


def pooled_exposure_logits(token_logits: torch.Tensor, mask1: torch.Tensor) -> torch.Tensor:
    """Per-asset head outputs (B, N+1) -> exposure logits (B, N+1) for the per-asset encoders (LSTM, MLP):
    ``s`` = the mean output over the tradable assets (``mask1`` (B, N+1)) minus the cash row's, on every asset,
    and 0 for cash. Invariant to the order of the assets; no tradable asset gives s = -cash output."""
    m = (mask1[:, :-1] > 0.5).to(token_logits.dtype)
    mean = (token_logits[:, :-1] * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)
    s = mean - token_logits[:, -1:]
    return torch.cat([s.expand(-1, token_logits.shape[1] - 1), torch.zeros_like(s)], dim=1)


def shared_noise(z: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The one draw (B,) ``z_i - mu_i`` of an exposure latent: its mean over the tradable coordinates
    (every tradable coordinate carries the same draw; 0 where no asset is tradable)."""
    m = mask.to(z.dtype).expand_as(z)
    return ((z - mu) * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def shared_log_prob(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-density (B,) of an exposure latent z (B, N): ``log Normal(shared_noise; 0, exp(log_std))`` for the
    scalar log_std (1,) (one dimension however many assets are tradable)."""
    e = shared_noise(z, mu, mask) / log_std.exp()
    return -0.5 * e**2 - log_std - LOG_SQRT_2PI


def shared_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """Entropy (B,) of the one-dimensional exposure Gaussian: ``0.5 + log sqrt(2 pi) + log_std`` per sample."""
    return (0.5 + LOG_SQRT_2PI + log_std).expand(batch)


def weights_from_latent(z: torch.Tensor, mask1: torch.Tensor) -> torch.Tensor:
    """Simplex weights (B, N+1) = ``masked_softmax([z, 0], mask1)`` for the latent z (B, N)."""
    return masked_softmax(torch.cat([z, torch.zeros_like(z[:, :1])], dim=1), mask1)


__all__ = ["exposure_logits", "pooled_exposure_logits", "latent_entropy", "latent_log_prob", "mean_latent", "noise_log_prob", "sample_noise",
           "shared_entropy", "shared_log_prob", "shared_noise", "weights_from_latent"]
