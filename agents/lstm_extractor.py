"""The second paper's feature extractor and the dense heads of its SAC/DDPG actors and critics.

``LSTMExtractor`` -- exact forward pass for features (B, W, N, F) (H = ``hidden``):

1. ``x = features.permute(0, 2, 1, 3).reshape(B*N, W, F)``: one sequence per asset window.
2. ``x = leaky_relu(fc(x), 0.01)`` with ``fc = nn.Linear(F, H)`` (the fully connected layer).
3. ``out, _ = lstm(x)`` with ``lstm = nn.LSTM(H, H, num_layers=3, batch_first=True)`` (zero initial
   state); the latent of each asset is ``out[:, -1]`` (the last day), reshaped to (B, N, H).
4. The cash asset contributes a zero embedding: ``latent = cat([latent, zeros(B, 1, H)], 1)`` (B, N+1, H).

The same weights process every asset (no asset identity), so a policy generalises across assets.

Heads (all per-asset heads share weights across assets, input ``[latent_i, w_i]`` with w_i the current
weight of asset i, cash included):

- ``AssetScoreHead``: ``Linear(H+1, H) -> LeakyReLU(0.01) -> Linear(H, k)`` -> (B, N+1, k). DDPG's actor
  uses k = 1 (a logit; deterministic softmax over tradable assets); SAC's uses k = 2 (mean and log-std
  of the asset's Gaussian latent; the cash row is ignored because cash is the reference, z_cash = 0).
- ``QHead``: ``Q(s, a) = MLP(cat([latent.flatten(1), weights, action]))`` with
  ``Linear((N+1)*H + 2(N+1), hidden) -> LeakyReLU -> Linear(hidden, hidden) -> LeakyReLU -> Linear(hidden, 1)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from agents.common import ObsLayout

LEAKY_SLOPE = 0.01


class LSTMExtractor(nn.Module):
    """Per-asset FC + 3-layer LSTM; features (B, W, N, F) -> latent (B, N+1, H), cash row zero."""

    def __init__(self, layout: ObsLayout, hidden: int = 64, lstm_layers: int = 3) -> None:
        super().__init__()
        self.layout, self.hidden = layout, hidden
        self.window, self.n_assets, self.n_features = layout.window, layout.n_assets, layout.n_features
        self.negative_slope = LEAKY_SLOPE  # an attribute, not a global, so that TorchScript compiles forward
        self.fc = nn.Linear(layout.n_features, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=lstm_layers, batch_first=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        w, n, f = self.window, self.n_assets, self.n_features
        x = features.permute(0, 2, 1, 3).reshape(-1, w, f)
        x = F.leaky_relu(self.fc(x), self.negative_slope)
        out, _ = self.lstm(x)
        latent = out[:, -1].reshape(-1, n, self.hidden)
        return torch.cat([latent, torch.zeros_like(latent[:, :1])], dim=1)


class AssetScoreHead(nn.Module):
    """Shared per-asset MLP on [latent_i, w_i]: (B, N+1, H), (B, N+1) -> (B, N+1, k)."""

    def __init__(self, hidden: int, k: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden + 1, hidden)
        self.fc2 = nn.Linear(hidden, k)
        self.negative_slope = LEAKY_SLOPE
        nn.init.uniform_(self.fc2.weight, -3e-3, 3e-3)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, latent: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x = torch.cat([latent, weights.unsqueeze(-1)], dim=-1)
        return self.fc2(F.leaky_relu(self.fc1(x), self.negative_slope))


class QHead(nn.Module):
    """Dense critic with Leaky ReLU: latent (B, N+1, H), weights (B, N+1), action (B, N+1) -> Q (B,)."""

    def __init__(self, layout: ObsLayout, hidden: int) -> None:
        super().__init__()
        a = layout.action_dim
        self.net = nn.Sequential(
            nn.Linear(a * hidden + 2 * a, hidden), nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, hidden), nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, 1),
        )

    def forward(self, latent: torch.Tensor, weights: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([latent.flatten(1), weights, action], dim=-1)).squeeze(-1)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- target + tau * (source - target)`` over the parameters (one fused call)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
