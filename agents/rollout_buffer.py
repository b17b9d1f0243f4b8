"""PPO's rollout storage: fixed tensors per step and env, GAE, and shuffled named-tuple minibatches.

As stable-baselines3's ``RolloutBuffer`` (``add`` per step, ``compute_returns_and_advantage``, ``get``
yielding ``RolloutBufferSamples``), with one difference for large observations: with a day-indexed env the
buffer stores the decision day, the weights held and the tradable mask per sample (n_steps*M*(2N+2)
numbers) instead of whole observations (n_steps*M*obs_dim), and the network rebuilds what it needs from
the env's one feature array (``TransformerActorCritic.forward_days``); no window is ever copied into the
buffer or into a minibatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from agents.common import ObsLayout


class RolloutBatch(NamedTuple):
    """One minibatch (B samples). Day-indexed storage fills ``days``/``weights``/``masks`` and leaves
    ``observations`` None; observation storage fills ``observations`` (B, obs_dim) and leaves the others None.

    days (B,) int64 decision days; weights (B, N+1) held before the decision; masks (B, N) tradable;
    latents (B, N) the sampled ALR latent z (the action); old_log_prob, old_values, advantages, returns (B,).
    """

    observations: torch.Tensor | None
    days: torch.Tensor | None
    weights: torch.Tensor | None
    masks: torch.Tensor | None
    latents: torch.Tensor
    old_log_prob: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_value: np.ndarray,
        gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over a rollout.

    rewards, values, dones: (T, M) with ``dones[t]`` = the episode ended at step t (no bootstrap past it);
    last_value (M,) = V(obs after step T-1). Returns advantages and returns (= advantages + values), (T, M).
    """
    t_len = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float64)
    last = np.zeros(rewards.shape[1])
    for t in reversed(range(t_len)):
        next_v = last_value if t == t_len - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_v * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


class RolloutBuffer:
    """``n_steps`` x ``n_envs`` samples of a PPO rollout.

    Args:
        n_steps: decisions per env per rollout; n_envs: M.
        layout: the observation layout.
        indexed: store days + weights + masks (True) or whole observations (False).
        device: where the minibatch tensors are built.
    """

    def __init__(self, n_steps: int, n_envs: int, layout: ObsLayout, indexed: bool,
                 device: torch.device | str = "cpu") -> None:
        self.n_steps, self.n_envs, self.layout, self.indexed = int(n_steps), int(n_envs), layout, indexed
        self.device = torch.device(device)
        t, m, n = self.n_steps, self.n_envs, layout.n_assets
        if indexed:
            self.days = np.zeros((t, m), np.int64)
            self.weights = np.zeros((t, m, n + 1), np.float32)
            self.masks = np.zeros((t, m, n), np.float32)
        else:
            self.observations = np.zeros((t, m, layout.obs_dim), np.float32)
        self.latents = np.zeros((t, m, n), np.float32)
        self.log_probs, self.values = np.zeros((t, m), np.float32), np.zeros((t, m))
        self.rewards, self.dones = np.zeros((t, m)), np.zeros((t, m))
        self.advantages, self.returns = np.zeros((t, m)), np.zeros((t, m))
        self.pos = 0

    def add(self, obs: np.ndarray, days: np.ndarray | None, latents: np.ndarray, log_probs: np.ndarray,
            values: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Store one step of M samples: obs (M, obs_dim) (only its weights and mask are kept when indexed),
        days (M,) decision days (indexed storage), latents (M, N), log_probs/values/rewards/dones (M,)."""
        if self.pos >= self.n_steps:
            raise RuntimeError("the rollout buffer is full: call reset() after the update")
        t = self.pos
        if self.indexed:
            _, weights, masks = self.layout.split_numpy(obs)
            self.days[t], self.weights[t], self.masks[t] = days, weights, masks
        else:
            self.observations[t] = obs
        self.latents[t], self.log_probs[t], self.values[t] = latents, log_probs, values
        self.rewards[t], self.dones[t] = rewards, dones
        self.pos += 1

    def reset(self) -> None:
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def compute_returns_and_advantage(self, last_values: np.ndarray, gamma: float, lam: float) -> None:
        """GAE(lambda) advantages and returns (``gae``) from V(obs after the last step) (M,)."""
        self.advantages, self.returns = gae(self.rewards, self.values, self.dones, last_values, gamma, lam)

    def get(self, batch_size: int, rng: np.random.Generator) -> Iterator[RolloutBatch]:
        """One epoch: a permutation of the n_steps*M samples from ``rng``, in minibatches of ``batch_size``."""
        n = self.n_steps * self.n_envs
        order = rng.permutation(n)
        dev = self.device

        def flat(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(a.reshape(n, *a.shape[2:]), dtype=dtype).to(dev)

        lat, logp = flat(self.latents), flat(self.log_probs)
        val, adv, ret = flat(self.values), flat(self.advantages), flat(self.returns)
        if self.indexed:
            days, wts, msk = flat(self.days, torch.int64), flat(self.weights), flat(self.masks)
        else:
            obs = flat(self.observations)
        for start in range(0, n, batch_size):
            idx = torch.as_tensor(order[start : start + batch_size]).to(dev)
            if self.indexed:
                head = (None, days[idx], wts[idx], msk[idx])
            else:
                head = (obs[idx], None, None, None)
            yield RolloutBatch(*head, lat[idx], logp[idx], val[idx], adv[idx], ret[idx])

    def explained_variance(self) -> float:
        """1 - Var(returns - values) / Var(returns) over the rollout (NaN when the returns are constant)."""
        var_y = float(np.var(self.returns))
        return float("nan") if var_y == 0 else 1.0 - float(np.var(self.returns - self.values)) / var_y


__all__ = ["RolloutBatch", "RolloutBuffer", "gae"]
