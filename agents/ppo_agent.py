"""PPO with a Transformer (default), LSTM or MLP actor-critic, CleanRL style: config, network, rollout, GAE, update.

``PPOConfig.encoder`` picks the network (``agents.ppo_encoders``); the action distribution, its
log-probability and everything below are the same for the three, so an encoder ablation holds PPO fixed.

Two ways to drive it:

- ``train(env, total_timesteps, callback=None)`` over a batched env (``reset(seed) -> (obs (M, obs_dim),
  infos)``, ``step(weights (M, N+1)) -> (obs, reward (M,), terminated (M,), truncated (M,), infos)`` with
  gymnasium SAME_STEP autoreset: ``infos["final_obs"]`` / ``infos["_final_obs"]`` hold the last observation
  of a finished portfolio) or a single ``gymnasium.Env`` (reset here when an episode ends).
- The quick-start loop, one transition at a time with gymnasium's five-value step::

      state, _ = env.reset(seed=0)
      for _ in range(steps):
          action = agent.get_action(state)
          next_state, reward, terminated, truncated, _ = env.step(action)
          agent.learn(state, action, reward, next_state, terminated, truncated)
          state = env.reset()[0] if terminated or truncated else next_state

Both collect ``n_steps`` decisions per env and then run the update: GAE(lambda) advantages, advantage
normalisation per minibatch, the clipped surrogate objective, a (optionally clipped) value loss, an entropy
bonus, ``n_epochs`` passes of shuffled minibatches, global-norm gradient clipping, linear learning-rate
annealing to 0 at ``total_timesteps`` and early stop of the epochs when the approximate KL exceeds
``target_kl``. Truncated episodes bootstrap: ``r += gamma * V(final_obs)``.

Units: rewards are whatever the env returns (a daily log return for ``log_return``); actions are
weights on the simplex (N+1, last = cash). Determinism: the network is initialised from ``seed``;
sampling uses the agent's own ``torch.Generator`` and minibatch order its own numpy ``Generator``, both
saved by ``save_checkpoint`` so that a resumed run continues bit-identically on the same env.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.checkpoint import atomic_torch_save, load_checkpoint
from agents.common import ObsLayout, alr_from_weights, as_batch, as_batched_env, resolve_config
from agents.ppo_encoders import ENCODERS, build_actor_critic, policy_module_of
from agents.replay_buffer import IndexReplayBuffer, index_source


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (defaults: the PPO paper's / stable-baselines3's) and the network's shape.

    ``n_steps`` decisions are collected per env before each update (rollout = n_steps x M);
    ``window``/``n_features`` describe the observation (``n_features`` 0 = infer from ``state_dim``).
    ``clip_range_vf`` 0 = unclipped value loss; ``target_kl`` 0 = no early stop.
    ``normalize_reward``: divide rewards by the running std of the discounted return (``RewardScaler``);
    daily log returns (~0.01) otherwise leave the critic's initial errors dominating the advantages.
    ``index_rollout``: with an env that exposes day indices (``agents.replay_buffer.index_source``), the
    rollout stores days + weights and rebuilds each minibatch's windows (n_steps*M*(N+2) numbers instead
    of n_steps*M*obs_dim).
    ``encoder``: ``"transformer"`` (``d_model``, ``n_heads``, ``day_layers``, ``asset_layers``,
    ``dim_feedforward``, ``dropout``), ``"lstm"`` (hidden ``d_model``, ``lstm_layers``) or ``"mlp"`` (width
    ``d_model``, ``mlp_layers``); see ``agents.ppo_encoders``. Configs without the key are Transformer runs.
    """

    learning_rate: float = 3e-4
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float = 0.0
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.02
    anneal_lr: bool = True
    norm_adv: bool = True
    normalize_reward: bool = True
    index_rollout: bool = True
    window: int = 1
    n_features: int = 0
    d_model: int = 64
    n_heads: int = 4
    day_layers: int = 2
    asset_layers: int = 1
    dim_feedforward: int = 128
    dropout: float = 0.0
    init_log_std: float = -0.5
    encoder: str = "transformer"
    lstm_layers: int = 3
    mlp_layers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"PPOConfig.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        positive = ("learning_rate", "n_steps", "batch_size", "n_epochs", "d_model", "n_heads", "window",
                    "lstm_layers", "mlp_layers")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"PPOConfig.{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError("PPOConfig.gamma must be in (0, 1] and gae_lambda in [0, 1]")


class RewardScaler:
    """Running std of the per-env discounted return G_t = gamma * G_{t-1} + r_t; rewards -> r / std(G).

    As in stable-baselines3's VecNormalize / CleanRL's NormalizeReward (no mean subtraction, so the
    sign of a reward is kept). State: count, mean, var of G, and G per env.
    """

    def __init__(self, gamma: float) -> None:
        self.gamma, self.count, self.mean, self.var = gamma, 1e-4, 0.0, 1.0
        self.ret: np.ndarray | None = None

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        if self.ret is None or self.ret.shape != rewards.shape:
            self.ret = np.zeros_like(rewards, dtype=np.float64)
        self.ret = self.ret * self.gamma + rewards
        b_mean, b_var, b_n = float(self.ret.mean()), float(self.ret.var()), self.ret.shape[0]
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean += delta * b_n / tot
        self.var = (self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot) / tot
        self.count = tot
        self.ret[dones] = 0.0
        return rewards / np.sqrt(self.var + 1e-8)

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var,
                "ret": None if self.ret is None else torch.as_tensor(self.ret)}

    def load(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.var = float(state["count"]), float(state["mean"]), float(state["var"])
        self.ret = None if state["ret"] is None else state["ret"].numpy().copy()


def _rebuild_obs(builder: IndexReplayBuffer, days: np.ndarray, weights: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Observations (len(rows), obs_dim) of rollout rows stored as day indices + weights."""
    return torch.as_tensor(builder.observations(days[rows], weights[rows]))


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


class PPOAgent:
    """PPO over portfolio weights with the actor-critic ``config.encoder`` names (see the module docstring)."""

    algo = "ppo"

    def __init__(self, state_dim: int, action_dim: int, layout: ObsLayout | None = None,
                 config: PPOConfig | None = None, **overrides: Any) -> None:
        self.config = resolve_config(PPOConfig, config, overrides)
        c = self.config
        self.layout = layout or ObsLayout.infer(state_dim, action_dim, c.window)
        self.layout.check_obs_dim(state_dim)
        if self.layout.action_dim != action_dim:
            raise ValueError(f"action_dim {action_dim} does not match the layout's N+1 = {self.layout.action_dim}")
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.net = build_actor_critic(self.layout, c)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.learning_rate, eps=1e-5)
        self.gen = torch.Generator().manual_seed(c.seed)
        self.np_rng = np.random.default_rng(c.seed)
        self.global_step = 0
        self.reward_scaler = RewardScaler(c.gamma)
        self._env_obs: np.ndarray | None = None  # train(): the env's current observations (M, obs_dim)
        self._ep_return: np.ndarray | None = None
        self._recent_returns: list[float] = []
        self._pending: list[tuple] = []  # learn(): transitions of the quick-start loop

    # -- acting ------------------------------------------------------------------------------------
    def policy_module(self) -> nn.Module:
        """A snapshot of the deterministic policy obs (B, obs_dim) -> weights (B, N+1), in eval mode."""
        return policy_module_of(self.net)

    @torch.no_grad()
    def get_action(self, state: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Weights (N+1,) for one observation (obs_dim,), or (B, N+1) for (B, obs_dim); float32."""
        obs = as_batch(state, self.layout.obs_dim)
        logits, _, mask1 = self.net(obs)
        if deterministic:
            z = self.net.mean_latent(logits)
        else:
            z = self.net.sample_latent(logits, self.gen)
        w = self.net.weights_from_latent(z, mask1).numpy().astype(np.float32)
        return w[0] if np.ndim(state) == 1 else w

    # -- the update ----------------------------------------------------------------------------------
    def _update(self, obs: torch.Tensor | Callable[[np.ndarray], torch.Tensor], z: torch.Tensor,
                logp: torch.Tensor, adv: np.ndarray, ret: np.ndarray, values: np.ndarray) -> dict[str, float]:
        """PPO epochs over a rollout of n samples; ``obs`` (n, obs_dim) or a function rows -> observations."""
        c = self.config
        b_adv = torch.as_tensor(adv.reshape(-1), dtype=torch.float32)
        b_ret = torch.as_tensor(ret.reshape(-1), dtype=torch.float32)
        b_val = torch.as_tensor(values.reshape(-1), dtype=torch.float32)
        n = z.shape[0]
        obs_of = obs if callable(obs) else (lambda rows: obs[torch.as_tensor(rows)])
        mb = min(c.batch_size, n)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
        self.net.train()
        for _epoch in range(c.n_epochs):
            order = self.np_rng.permutation(n)
            for start in range(0, n, mb):
                idx = torch.as_tensor(order[start : start + mb])
                logits, new_v, mask1 = self.net(obs_of(order[start : start + mb]))
                new_logp, ent = self.net.log_prob_entropy(logits, mask1, z[idx])
                log_ratio = new_logp - logp[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > c.clip_range).float().mean()
                a = b_adv[idx]
                if c.norm_adv and len(idx) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - c.clip_range, 1 + c.clip_range)).mean()
                if c.clip_range_vf > 0:
                    v_clip = b_val[idx] + (new_v - b_val[idx]).clamp(-c.clip_range_vf, c.clip_range_vf)
                    v_loss = 0.5 * torch.max((new_v - b_ret[idx]) ** 2, (v_clip - b_ret[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_v - b_ret[idx]) ** 2).mean()
                entropy = ent.mean()
                loss = pg_loss - c.ent_coef * entropy + c.vf_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm)
                self.optimizer.step()
                for key, val in zip(stats, (pg_loss, v_loss, entropy, approx_kl, clipfrac)):
                    stats[key].append(float(val.detach()))
            if c.target_kl > 0 and stats["approx_kl"][-1] > c.target_kl:
                break
        var_y = float(np.var(ret))
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["explained_variance"] = float("nan") if var_y == 0 else 1.0 - float(np.var(ret - values)) / var_y
        out["epochs"] = _epoch + 1
        out["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    def _anneal(self, total_timesteps: int) -> None:
        if self.config.anneal_lr:
            frac = max(1.0 - self.global_step / max(total_timesteps, 1), 0.0)
            self.optimizer.param_groups[0]["lr"] = frac * self.config.learning_rate

    # -- batched training ----------------------------------------------------------------------------
    def train(self, env: Any, total_timesteps: int,
              callback: Callable[[int, dict[str, float]], Any] | None = None) -> dict[str, float]:
        """Train until ``global_step`` (env decisions, summed over the batch) reaches ``total_timesteps``.

        ``total_timesteps`` is also the learning-rate annealing horizon. ``callback(global_step, metrics)``
        runs after every update; returning ``False`` stops training after that update. A later call
        continues with the same env (its observations are kept), so a ``train(env, 2k)`` stopped at 1k
        and resumed with ``train(env, 2k)`` (or via ``save_checkpoint``/``load_checkpoint``) equals one
        uninterrupted ``train(env, 2k)``. Metrics: policy_loss, value_loss, entropy, approx_kl, clipfrac,
        explained_variance, epochs, learning_rate, ``episode_return`` (mean raw return of recently finished
        episodes) and ``samples_per_s``. Returns the last metrics.
        """
        c, venv = self.config, as_batched_env(env)
        m = venv.num_envs
        src = index_source(venv) if c.index_rollout else None
        builder = None if src is None else IndexReplayBuffer(src[0], src[1], self.layout, capacity=1)
        if self._env_obs is None or self._env_obs.shape[0] != m:
            self._env_obs, _ = venv.reset(seed=c.seed)
            self._env_obs = np.asarray(self._env_obs, np.float32)
            self._ep_return = np.zeros(m)
        if self._ep_return is None or self._ep_return.shape != (m,):
            self._ep_return = np.zeros(m)
        metrics: dict[str, float] = {}
        while self.global_step < total_timesteps:
            t0 = time.perf_counter()
            self._anneal(total_timesteps)
            if builder is None:
                buf_obs = torch.zeros((c.n_steps, m, self.layout.obs_dim))
            else:  # day indices + weights; windows are rebuilt per minibatch
                buf_days = np.zeros((c.n_steps, m), np.int64)
                buf_w = np.zeros((c.n_steps, m, self.layout.action_dim), np.float32)
            buf_z = torch.zeros((c.n_steps, m, self.layout.n_assets))
            buf_logp = torch.zeros((c.n_steps, m))
            rewards, values, dones = (np.zeros((c.n_steps, m)) for _ in range(3))
            self.net.eval()
            for step in range(c.n_steps):
                obs_t = torch.as_tensor(self._env_obs)
                with torch.no_grad():
                    logits, v, mask1 = self.net(obs_t)
                    z = self.net.sample_latent(logits, self.gen)
                    logp, _ = self.net.log_prob_entropy(logits, mask1, z)
                    w = self.net.weights_from_latent(z, mask1)
                if builder is None:
                    buf_obs[step] = obs_t
                else:
                    buf_days[step], buf_w[step] = venv.days, self.layout.split_numpy(self._env_obs)[1]
                next_obs, rew, term, trunc, infos = venv.step(w.numpy())
                rew = np.asarray(rew, np.float64).copy()
                self._ep_return += rew
                done = np.logical_or(term, trunc)
                if c.normalize_reward:
                    rew = self.reward_scaler(rew, done)
                rew += self._bootstrap_truncated(np.asarray(trunc) & ~np.asarray(term), infos)
                buf_z[step], buf_logp[step] = z, logp
                rewards[step], values[step], dones[step] = rew, v.numpy(), done
                for i in np.flatnonzero(done):
                    self._recent_returns = (self._recent_returns + [float(self._ep_return[i])])[-100:]
                    self._ep_return[i] = 0.0
                self._env_obs = np.asarray(next_obs, np.float32)
                self.global_step += m
            with torch.no_grad():
                last_v = self.net.value(torch.as_tensor(self._env_obs)).numpy()
            adv, ret = gae(rewards, values, dones, last_v, c.gamma, c.gae_lambda)
            if builder is None:
                obs_src: Any = buf_obs.reshape(-1, self.layout.obs_dim)
            else:
                flat_days, flat_w = buf_days.reshape(-1), buf_w.reshape(-1, self.layout.action_dim)
                obs_src = functools.partial(_rebuild_obs, builder, flat_days, flat_w)
            metrics = self._update(obs_src, buf_z.reshape(-1, self.layout.n_assets), buf_logp.reshape(-1),
                                   adv, ret, values)
            metrics["episode_return"] = float(np.mean(self._recent_returns)) if self._recent_returns else float("nan")
            metrics["samples_per_s"] = c.n_steps * m / (time.perf_counter() - t0)
            if callback is not None and callback(self.global_step, metrics) is False:
                break
        return metrics

    def _bootstrap_truncated(self, trunc: np.ndarray, infos: dict) -> np.ndarray:
        """gamma * V(final_obs) for portfolios cut off by a time limit (0 elsewhere), shape (M,)."""
        extra = np.zeros(trunc.shape[0])
        have = np.asarray(infos.get("_final_obs", np.zeros_like(trunc)), bool) & trunc
        if have.any():
            idx = np.flatnonzero(have)
            final = np.stack([np.asarray(infos["final_obs"][i], np.float32) for i in idx])
            with torch.no_grad():
                extra[idx] = self.config.gamma * self.net.value(torch.as_tensor(final)).numpy()
        return extra

    # -- the quick-start loop ------------------------------------------------------------------------
    def learn(self, state: np.ndarray, action: np.ndarray, reward: float, next_state: np.ndarray,
              terminated: bool, truncated: bool = False, total_timesteps: int = 0) -> dict[str, float] | None:
        """Record one transition; every ``n_steps`` transitions run a PPO update and return its metrics.

        ``action`` are the weights the env received (N+1); they are mapped back to the latent exactly.
        ``total_timesteps`` > 0 anneals the learning rate towards that horizon.
        """
        obs = as_batch(state, self.layout.obs_dim)
        act = torch.as_tensor(np.asarray(action, np.float32).reshape(1, -1))
        with torch.no_grad():
            logits, v, mask1 = self.net(obs)
            z = alr_from_weights(act / act.sum(-1, keepdim=True).clamp_min(1e-12))
            z = torch.where(mask1[:, :-1] > 0.5, z, self.net.mean_latent(logits))
            logp, _ = self.net.log_prob_entropy(logits, mask1, z)
            r = float(reward)
            if self.config.normalize_reward:
                r = float(self.reward_scaler(np.array([r]), np.array([terminated or truncated]))[0])
            if truncated and not terminated:
                r += self.config.gamma * float(self.net.value(as_batch(next_state, self.layout.obs_dim))[0])
        self._pending.append((obs[0], z[0], float(logp[0]), r, float(v[0]), float(terminated or truncated)))
        self.global_step += 1
        if len(self._pending) < self.config.n_steps:
            return None
        if total_timesteps > 0:
            self._anneal(total_timesteps)
        obs_b, z_b, logp_b, rew, val, done = zip(*self._pending)
        self._pending = []
        with torch.no_grad():
            last_v = self.net.value(as_batch(next_state, self.layout.obs_dim)).numpy()
        values = np.array(val)[:, None]
        adv, ret = gae(np.array(rew)[:, None], values, np.array(done)[:, None], last_v,
                       self.config.gamma, self.config.gae_lambda)
        return self._update(torch.stack(obs_b), torch.stack(z_b), torch.tensor(logp_b), adv, ret, values)

    # -- persistence (agents.io) ---------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        """The network's state dict (what ``policy.pth`` holds)."""
        return self.net.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    # -- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Model, optimizer, RNG states, global step and the env-side rollout state (tensors/plain types)."""
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_generator": self.gen.get_state(),
            "numpy_rng": self.np_rng.bit_generator.state,
            "global_step": self.global_step,
            "env_obs": None if self._env_obs is None else torch.as_tensor(self._env_obs),
            "ep_return": None if self._ep_return is None else torch.as_tensor(self._ep_return),
            "recent_returns": list(self._recent_returns),
            "reward_scaler": self.reward_scaler.state(),
            "config": dataclasses.asdict(self.config),
            "obs_layout": self.layout.to_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any], env: Any | None = None) -> None:
        """Restore ``checkpoint_state()`` output in place (``env`` is unused: PPO keeps no replay buffer)."""
        if state["obs_layout"] != self.layout.to_dict():
            raise ValueError("the checkpoint was made for a different observation layout")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["torch_generator"])
        self.np_rng.bit_generator.state = state["numpy_rng"]
        self.global_step = int(state["global_step"])
        self._env_obs = None if state["env_obs"] is None else state["env_obs"].numpy()
        self._ep_return = None if state["ep_return"] is None else state["ep_return"].numpy().copy()
        self._recent_returns = list(state["recent_returns"])
        self.reward_scaler.load(state["reward_scaler"])

    def save_checkpoint(self, path: str) -> None:
        """Write the full training state to ``path`` (torch.save of tensors and plain types; no objects)."""
        atomic_torch_save(self.checkpoint_state(), path)

    @classmethod
    def load_checkpoint(cls, path: str, env: Any | None = None) -> PPOAgent:
        """Rebuild an agent from ``save_checkpoint`` output (``agents.checkpoint.load_checkpoint``)."""
        return load_checkpoint(cls, path, env)

    def restart_episodes(self, obs: np.ndarray) -> None:
        """Continue ``train`` from fresh episodes whose first observations are ``obs`` (M, obs_dim)."""
        self._env_obs = np.asarray(obs, np.float32)
        self._ep_return = np.zeros(self._env_obs.shape[0])


__all__ = ["PPOAgent", "PPOConfig", "gae", "as_batched_env"]
