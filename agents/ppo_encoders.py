"""PPO's choice of encoder: the Transformer, or an LSTM or MLP actor-critic with the same action distribution.

``PPOConfig.encoder`` picks the network; everything else in PPO (rollout, GAE, the clipped update, the
logistic-normal distribution and its log-probability) is shared, so an encoder ablation holds the
algorithm fixed. Every network maps obs float32 (B, obs_dim) to ``(logits (B, N+1), value (B,), mask1
(B, N+1))`` and carries a learned state-independent ``log_std`` (N,); the distribution methods
(``mean_latent``, ``log_prob_entropy``, ``sample_latent``, ``weights_from_latent``) are the very functions of
``agents.transformer_encoder.TransformerActorCritic``, built on ``agents.distributions`` (see the
Transformer's module docstring for the math). Every network also has ``forward_days(features (T, N, F),
days (B,), weights, mask)``, the same output for observations given as day indices, with the market-only
part computed once per distinct day.

- ``"transformer"``: ``TransformerActorCritic`` (day-then-asset attention; the first paper's policy).
- ``"lstm"``: ``LSTMActorCritic`` = the second paper's ``LSTMExtractor`` (FC + ``lstm_layers`` LSTM layers
  per asset window, hidden H = ``d_model``, cash zero embedding) -> per-asset latent (B, N+1, H).
- ``"mlp"``: ``MLPActorCritic`` = ``MLPExtractor``: each asset's window (W, F) is flattened to W*F and goes
  through ``mlp_layers`` dense layers (``Linear -> LeakyReLU(0.01)``, width H, weights shared across
  assets) -> (B, N, H); the cash row is a zero embedding -> (B, N+1, H).

Heads of the LSTM and MLP variants (H = latent width, both shared by the two encoders):

- Actor: ``agents.lstm_extractor.AssetScoreHead(H, 1)`` on ``[latent_i, w_i]`` -> logits (B, N+1), the
  DDPG actor's head; the ALR mean is ``mu = logits[:, :N] - logits[:, N:]`` as for the Transformer.
- Critic: ``Linear(N*H + N+1, H) -> Tanh -> Linear(H, 1)`` on ``cat([latent[:, :N].flatten(1), weights])``
  (orthogonal init, gains sqrt(2) and 1, as the Transformer's critic).

Deterministic policy: ``masked_softmax(logits, mask1)``. For LSTM/MLP it is
``agents.off_policy.LSTMPolicyModule(layout, encoder, actor, cash_reference=False)`` (state-dict keys
``encoder.*``, ``actor.fc1.*``, ``actor.fc2.*``), the module deployment already exports for DDPG.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from agents import distributions as D
from agents.common import ObsLayout, full_mask
from agents.lstm_extractor import LEAKY_SLOPE, AssetScoreHead, LSTMExtractor
from agents.off_policy import LSTMPolicyModule
from agents.transformer_encoder import ACTION_HEADS, PolicyModule, TransformerActorCritic

ENCODERS = ("transformer", "lstm", "mlp")


class MLPExtractor(nn.Module):
    """Per-asset dense layers over the flattened window: features (B, W, N, F) -> latent (B, N+1, H).

    ``layers`` x (``Linear`` -> ``LeakyReLU(0.01)``): W*F -> H -> ... -> H, the same weights for every asset;
    the cash row is zero (as in ``LSTMExtractor``).
    """

    def __init__(self, layout: ObsLayout, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"mlp_layers must be at least 1, got {layers}")
        self.layout, self.hidden = layout, hidden
        self.window, self.n_assets, self.n_features = layout.window, layout.n_assets, layout.n_features
        dims = [layout.window * layout.n_features] + [hidden] * layers
        mods: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(d_in, d_out), nn.LeakyReLU(LEAKY_SLOPE)]
        self.net = nn.Sequential(*mods)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        w, n, f = self.window, self.n_assets, self.n_features
        x = features.permute(0, 2, 1, 3).reshape(-1, n, w * f)
        latent = self.net(x)
        return torch.cat([latent, torch.zeros_like(latent[:, :1])], dim=1)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class AssetLatentActorCritic(nn.Module):
    """Per-asset encoder (``LSTMExtractor`` or ``MLPExtractor``) + asset-score actor + dense critic.

    ``forward(obs (B, obs_dim)) -> (logits (B, N+1), value (B,), mask1 (B, N+1))``; the action
    distribution is the Transformer's (methods reused below, not re-implemented).
    """

    mean_latent = staticmethod(TransformerActorCritic.mean_latent)
    weights_from_latent = staticmethod(TransformerActorCritic.weights_from_latent)
    log_prob_entropy = TransformerActorCritic.log_prob_entropy
    sample_latent = TransformerActorCritic.sample_latent

    def __init__(self, layout: ObsLayout, encoder: nn.Module, hidden: int, init_log_std: float = -0.5,
                 action_head: str = "assets") -> None:
        super().__init__()
        if action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {', '.join(ACTION_HEADS)}, got {action_head!r}")
        self.layout = layout
        self.exposure = action_head == "exposure"
        n = layout.n_assets
        self.encoder = encoder
        self.actor = AssetScoreHead(hidden, 1)
        self.critic = nn.Sequential(
            _orthogonal(nn.Linear(n * hidden + n + 1, hidden), math.sqrt(2)),
            nn.Tanh(),
            _orthogonal(nn.Linear(hidden, 1), 1.0),
        )
        self.log_std = nn.Parameter(torch.full((n,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, obs_dim) -> actor logits (B, N+1), state value (B,), mask1 (B, N+1)."""
        features, weights, mask = self.layout.split(obs)
        latent = self.encoder(features)
        return self._heads(latent, weights, mask)

    def _heads(self, latent: torch.Tensor, weights: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """latent (B, N+1, H), weights (B, N+1), mask (B, N) -> logits (B, N+1), value (B,), mask1 (B, N+1)."""
        mask1 = full_mask(mask)
        logits = self.actor(latent, weights)[..., 0]
        if self.exposure:
            logits = D.pooled_exposure_logits(logits, mask1)
        value = self.critic(torch.cat([latent[:, :-1].flatten(1), weights], dim=-1)).squeeze(-1)
        return logits, value, mask1

    def forward_days(self, features: torch.Tensor, days: torch.Tensor, weights: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` for decision days (B,) of the feature array (T, N, F): the encoder runs once per
        distinct day on its window (W days ending there), the heads per sample (see the Transformer's)."""
        ends, inverse = torch.unique(days, return_inverse=True)
        windows = features[ends[:, None] + torch.arange(1 - self.layout.window, 1, device=days.device)]
        return self._heads(self.encoder(windows)[inverse], weights, mask)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs)[1]


class LSTMActorCritic(AssetLatentActorCritic):
    """PPO actor-critic on the second paper's ``LSTMExtractor`` (hidden ``hidden``, ``lstm_layers`` layers)."""

    def __init__(self, layout: ObsLayout, hidden: int = 64, lstm_layers: int = 3, init_log_std: float = -0.5,
                 action_head: str = "assets") -> None:
        super().__init__(layout, LSTMExtractor(layout, hidden, lstm_layers), hidden, init_log_std, action_head)


class MLPActorCritic(AssetLatentActorCritic):
    """PPO actor-critic on ``MLPExtractor`` (width ``hidden``, ``mlp_layers`` dense layers per asset window)."""

    def __init__(self, layout: ObsLayout, hidden: int = 64, mlp_layers: int = 2, init_log_std: float = -0.5,
                 action_head: str = "assets") -> None:
        super().__init__(layout, MLPExtractor(layout, hidden, mlp_layers), hidden, init_log_std, action_head)


def build_actor_critic(layout: ObsLayout, config: Any) -> nn.Module:
    """The network ``config.encoder`` names (a ``PPOConfig``), initialised from the current torch RNG."""
    c = config
    if c.encoder == "transformer":
        return TransformerActorCritic(layout, c.d_model, c.n_heads, c.day_layers, c.asset_layers,
                                      c.dim_feedforward, c.dropout, c.init_log_std, c.action_head)
    if c.encoder == "lstm":
        return LSTMActorCritic(layout, c.d_model, c.lstm_layers, c.init_log_std, c.action_head)
    if c.encoder == "mlp":
        return MLPActorCritic(layout, c.d_model, c.mlp_layers, c.init_log_std, c.action_head)
    raise ValueError(f"unknown PPO encoder '{c.encoder}'; expected one of {', '.join(ENCODERS)}")


def policy_module_of(net: nn.Module) -> nn.Module:
    """A deep-copied deterministic policy obs (B, obs_dim) -> weights (B, N+1) of ``net``, in eval mode, on
    the CPU (what export, validation and serving use; move it for GPU inference)."""
    if isinstance(net, TransformerActorCritic):
        return PolicyModule(copy.deepcopy(net)).eval().cpu()
    if isinstance(net, AssetLatentActorCritic):
        return LSTMPolicyModule(net.layout, copy.deepcopy(net.encoder), copy.deepcopy(net.actor),
                                cash_reference=False, exposure=net.exposure).eval().cpu()
    raise TypeError(f"no policy module for {type(net).__name__}")


__all__ = ["ENCODERS", "AssetLatentActorCritic", "LSTMActorCritic", "MLPActorCritic", "MLPExtractor",
           "build_actor_critic", "policy_module_of"]
