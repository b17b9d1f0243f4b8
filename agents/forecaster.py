"""The second paper's return forecaster: the actor's LSTM extractor without weights input and softmax.

Forward pass for features (B, W, N, F): ``latent = LSTMExtractor(features)[:, :N]`` (B, N, H) (the cash row
is dropped), then ``forecast = head(latent)[..., 0]`` with ``head = nn.Linear(H, 1)`` shared across
assets: the predicted next-day log return of every asset, (B, N), in daily log-return units.

Loss: the mean across assets of each asset's RMSE over the batch,
``mean_i sqrt(mean_b (forecast - target)^2 + 1e-12)``; with a validity mask (B, N) only valid entries
count (an asset not yet listed has no return). ``fit`` takes numpy batches as the tf.data TFRecord
pipeline yields them; ``evaluate`` reports RMSE and directional accuracy on a held-out span next to the
naive zero-return forecast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.common import ObsLayout, resolve_config
from agents.lstm_extractor import LSTMExtractor

Batch = tuple[np.ndarray, ...]  # (features (B,W,N,F), targets (B,N)[, valid (B,N)]) or a tf_pipeline dict


@dataclass(frozen=True)
class ForecasterConfig:
    """Optimiser and network settings; ``epochs`` passes over the batches per ``fit`` call."""

    learning_rate: float = 1e-3
    hidden: int = 64
    lstm_layers: int = 3
    epochs: int = 10
    max_grad_norm: float = 1.0
    window: int = 1
    n_features: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("learning_rate", "hidden", "lstm_layers", "epochs", "window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ForecasterConfig.{name} must be positive, got {getattr(self, name)!r}")


class ForecastNet(nn.Module):
    """features (B, W, N, F) -> forecast next-day log returns (B, N) (module docstring)."""

    def __init__(self, layout: ObsLayout, hidden: int, lstm_layers: int) -> None:
        super().__init__()
        self.layout = layout
        self.encoder = LSTMExtractor(layout, hidden, lstm_layers)
        self.head = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        latent = self.encoder(features)[:, : self.layout.n_assets]
        return self.head(latent)[..., 0]


def mean_asset_rmse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over assets of the per-asset RMSE over the batch; (B, N) inputs, scalar output."""
    v = torch.ones_like(target) if valid is None else valid.to(target.dtype)
    count = v.sum(0)
    mse = ((pred - target) ** 2 * v).sum(0) / count.clamp_min(1.0)
    present = count > 0
    return torch.sqrt(mse[present] + 1e-12).mean()


def _unpack(batch: Batch | dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(features, targets[, valid]) tuples, or ``data.tf_pipeline.window_dataset`` dicts with keys
    ``features``, ``target`` and optionally ``mask`` (used as validity; ``day`` is ignored)."""
    if isinstance(batch, dict):
        if "features" not in batch or "target" not in batch:
            raise ValueError("a forecaster batch dict needs the keys 'features' and 'target'")
        batch = (batch["features"], batch["target"]) + ((batch["mask"],) if "mask" in batch else ())
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError("a forecaster batch must be (features, targets) or (features, targets, valid)")
    feats = torch.as_tensor(np.asarray(batch[0], np.float32))
    targets = torch.as_tensor(np.asarray(batch[1], np.float32))
    valid = torch.as_tensor(np.asarray(batch[2], np.float32)) if len(batch) == 3 else None
    if feats.ndim != 4 or targets.shape != feats.shape[:1] + feats.shape[2:3]:
        raise ValueError(f"features must be (B, W, N, F) and targets (B, N), got {tuple(feats.shape)} "
                         f"and {tuple(targets.shape)}")
    return feats, targets, valid


class Forecaster:
    """Fits ``ForecastNet`` on numpy batches; ``Forecaster(state_dim, action_dim, layout=...)`` like the agents."""

    algo = "forecaster"

    def __init__(self, state_dim: int, action_dim: int, layout: ObsLayout | None = None,
                 config: ForecasterConfig | None = None, **overrides: Any) -> None:
        self.config = resolve_config(ForecasterConfig, config, overrides)
        c = self.config
        self.layout = layout or ObsLayout.infer(state_dim, action_dim, c.window)
        self.layout.check_obs_dim(state_dim)
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.net = ForecastNet(self.layout, c.hidden, c.lstm_layers)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.learning_rate)
        self.history_: list[float] = []

    @classmethod
    def for_layout(cls, layout: ObsLayout, **config: Any) -> Forecaster:
        return cls(layout.obs_dim, layout.action_dim, layout=layout, **config)

    def fit(self, batches: Iterable[Batch] | Callable[[], Iterable[Batch]], epochs: int | None = None,
            callback: Callable[[int, float], Any] | None = None) -> Forecaster:
        """Train for ``epochs`` (default ``config.epochs``) passes; returns self (``history_`` = epoch losses).

        ``batches``: a re-iterable of numpy batches (a list, a tf.data dataset's ``as_numpy_iterator``
        factory), or a zero-argument callable returning a fresh iterable per epoch. A one-shot iterator
        works for one epoch only. ``callback(epoch, mean_loss)`` runs after each epoch.
        """
        n_epochs = self.config.epochs if epochs is None else int(epochs)
        one_shot = not callable(batches) and iter(batches) is batches
        if one_shot and n_epochs > 1:
            raise ValueError("a one-shot batch iterator can feed one epoch only; pass a list or a callable")
        self.net.train()
        for epoch in range(n_epochs):
            losses = []
            for batch in (batches() if callable(batches) else batches):
                feats, targets, valid = _unpack(batch)
                loss = mean_asset_rmse(self.net(feats), targets, valid)
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
            if not losses:
                raise ValueError("the forecaster got no batches to train on")
            self.history_.append(float(np.mean(losses)))
            if callback is not None:
                callback(epoch, self.history_[-1])
        return self

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Forecast next-day log returns (B, N) float32 for windows (B, W, N, F)."""
        self.net.eval()
        return self.net(torch.as_tensor(np.asarray(features, np.float32))).numpy()

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Held-out scores against the zero-return forecast.

        ``rmse`` / ``rmse_zero``: mean across assets of per-asset RMSE (daily log-return units) of the
        model and of the all-zero forecast; ``rmse_ratio`` = rmse / rmse_zero (< 1 beats zero);
        ``directional_accuracy``: share of valid entries with a non-zero target whose sign the model
        gets right; ``up_fraction``: share of those targets that are positive (what "always up" scores);
        ``n``: valid entries.
        """
        preds, targets, valids = [], [], []
        for batch in batches:
            feats, tgt, valid = _unpack(batch)
            preds.append(self.predict(feats.numpy()))
            targets.append(tgt.numpy())
            valids.append(np.ones_like(tgt.numpy()) if valid is None else valid.numpy())
        if not preds:
            raise ValueError("the forecaster got no batches to evaluate")
        p, t, v = (torch.as_tensor(np.concatenate(x)) for x in (preds, targets, valids))
        rmse = float(mean_asset_rmse(p, t, v))
        rmse_zero = float(mean_asset_rmse(torch.zeros_like(t), t, v))
        moved = (v > 0) & (t != 0)
        hits = (torch.sign(p) == torch.sign(t)) & moved
        n_moved = max(int(moved.sum()), 1)
        return {
            "rmse": rmse, "rmse_zero": rmse_zero, "rmse_ratio": rmse / rmse_zero if rmse_zero > 0 else float("nan"),
            "directional_accuracy": float(hits.sum()) / n_moved,
            "up_fraction": float(((t > 0) & moved).sum()) / n_moved, "n": int((v > 0).sum()),
        }

    # -- persistence (agents.io) ---------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

