"""Replay buffers for SAC/DDPG: one that stores day indices, one that stores plain observations.

A stored 60 x 21 x 50 window is 250 kB, so a million-transition buffer of windows would need hundreds of
GB. ``IndexReplayBuffer`` keeps, per transition, the decision day and the portfolio state (weights,
action, reward, next day, next weights, done: about 2(N+1)+(N+1) floats) and rebuilds both windows from
the one feature array at sampling time; ``ObsReplayBuffer`` stores whole observations for small, generic
envs. Both are circular, add (M,) transitions at a time and sample with the caller's numpy Generator; the
sampled batch is built on ``device`` (the index buffer gathers its windows there from a device copy of the
feature array).

Day convention (as in the env): the observation of decision day t holds ``features[t-window+1 : t+1]``
(oldest first), the weights held going into day t's decision, and the tradable mask ``tradable[t]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from agents.common import ObsLayout


class ReplayBatch(NamedTuple):
    """A sampled batch: obs/next_obs float32 (B, obs_dim), actions (B, N+1), rewards (B,), dones (B,)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor


class ObsReplayBuffer:
    """Circular buffer of whole observations, float32 (capacity, obs_dim)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        self.device = torch.device(device)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, action_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.dones = np.zeros(self.capacity, np.float32)

    def _slots(self, m: int) -> np.ndarray:
        idx = (self.pos + np.arange(m)) % self.capacity
        self.pos = int((self.pos + m) % self.capacity)
        self.size = min(self.size + m, self.capacity)
        return idx

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            dones: np.ndarray) -> None:
        """Add M transitions: obs/next_obs (M, obs_dim), actions (M, N+1), rewards (M,), dones (M,).

        ``dones`` = 1 only where the episode truly terminated (no bootstrap); time-limit ends are 0.
        """
        idx = self._slots(len(rewards))
        self.obs[idx], self.next_obs[idx], self.actions[idx] = obs, next_obs, actions
        self.rewards[idx], self.dones[idx] = rewards, dones

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        idx = rng.integers(0, self.size, size=batch_size)
        return ReplayBatch(*(torch.as_tensor(a[idx]).to(self.device) for a in
                             (self.obs, self.actions, self.rewards, self.next_obs, self.dones)))

    def __len__(self) -> int:
        return self.size


class IndexReplayBuffer(ObsReplayBuffer):
    """Circular buffer of (day, weights) pairs that rebuilds observations from ``features``.

    Args:
        features: (T, N, F) float32, the env's one feature array (kept by reference, not copied).
        tradable: (T, N) the tradable mask per day (1 = tradable), used for the mask part of the obs.
        layout: the observation layout (``window`` must match the env's).
        capacity: transitions kept.
        device: where sampled batches (and the feature array's copy they are gathered from) live.
    """

    def __init__(self, features: np.ndarray, tradable: np.ndarray, layout: ObsLayout, capacity: int,
                 device: torch.device | str = "cpu") -> None:
        if features.shape[1:] != (layout.n_assets, layout.n_features):
            raise ValueError(f"features of shape {features.shape} do not match the layout {layout.to_dict()}")
        self.layout = layout
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        self.features = np.ascontiguousarray(features, np.float32)
        # windows[d] = features[d : d + window] as (window, N, F); a view, no copy
        self.windows = np.moveaxis(sliding_window_view(self.features, layout.window, axis=0), -1, 1)
        self.tradable = np.asarray(tradable, np.float32)
        self.device = torch.device(device)
        self._features_t = torch.as_tensor(self.features).to(self.device)
        self._tradable_t = torch.as_tensor(self.tradable).to(self.device)
        self._offsets = torch.arange(1 - layout.window, 1, device=self.device)
        a = layout.action_dim
        self.days = np.zeros(self.capacity, np.int64)
        self.next_days = np.zeros(self.capacity, np.int64)
        self.weights = np.zeros((self.capacity, a), np.float32)
        self.next_weights = np.zeros((self.capacity, a), np.float32)
        self.actions = np.zeros((self.capacity, a), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.dones = np.zeros(self.capacity, np.float32)

    def observations(self, days: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Rebuild float32 observations (B, obs_dim) for decision days (B,) and weights (B, N+1)."""
        win = self.windows[np.asarray(days) - self.layout.window + 1]
        return self.layout.join_numpy(win, weights, self.tradable[days])

    def add_days(self, days: np.ndarray, weights: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 next_days: np.ndarray, next_weights: np.ndarray, dones: np.ndarray) -> None:
        """Add M transitions by day index: days/next_days (M,), weights/next_weights/actions (M, N+1)."""
        if np.any(np.asarray(days) < self.layout.window - 1) or np.any(np.asarray(next_days) >= len(self.features)):
            raise ValueError("a day index falls outside the feature array's window range")
        idx = self._slots(len(rewards))
        self.days[idx], self.next_days[idx] = days, next_days
        self.weights[idx], self.next_weights[idx], self.actions[idx] = weights, next_weights, actions
        self.rewards[idx], self.dones[idx] = rewards, dones

    def add(self, obs, actions, rewards, next_obs, dones):  # noqa: D401 - documented refusal
        raise TypeError("IndexReplayBuffer stores day indices: use add_days")

    def observations_t(self, days: np.ndarray, weights: np.ndarray) -> torch.Tensor:
        """``observations`` as a float32 tensor (B, obs_dim) gathered on ``device``."""
        d = torch.as_tensor(days).to(self.device)
        win = self._features_t[d[:, None] + self._offsets]  # [B,W,N,F]
        w = torch.as_tensor(weights).to(self.device)
        return torch.cat([win.reshape(d.shape[0], -1), w, self._tradable_t[d]], dim=1)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        idx = rng.integers(0, self.size, size=batch_size)
        obs = self.observations_t(self.days[idx], self.weights[idx])
        nxt = self.observations_t(self.next_days[idx], self.next_weights[idx])
        dev = self.device
        return ReplayBatch(obs, torch.as_tensor(self.actions[idx]).to(dev), torch.as_tensor(self.rewards[idx]).to(dev),
                           nxt, torch.as_tensor(self.dones[idx]).to(dev))

    @property
    def nbytes(self) -> int:
        """Bytes held per stored transition arrays (the feature array is shared, not counted)."""
        arrays = (self.days, self.next_days, self.weights, self.next_weights, self.actions, self.rewards, self.dones)
        return int(sum(a.nbytes for a in arrays))


def index_source(env: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(features (T,N,F), tradable (T,N)) if ``env`` exposes day indices (``days`` and ``core``), else None.

    Duck-typed so agents never import ``environments``: a batched env with ``env.days`` (M,) next decision
    days, ``env.core.features`` and ``env.core.tradable_f32``, and ``infos["t"]`` / ``infos["weights"]``
    after a step (the next day and the weights before any autoreset).
    """
    core = getattr(env, "core", None)
    if core is None or not hasattr(env, "days"):
        return None
    feats, trad = getattr(core, "features", None), getattr(core, "tradable_f32", None)
    if feats is None or trad is None:
        return None
    return feats, trad
