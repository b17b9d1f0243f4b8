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

Storage and cost: ``agents.rollout_buffer.RolloutBuffer`` keeps, with a day-indexed env, the decision day,
weights and mask of each sample (no windows) and yields named-tuple minibatches; the network then computes
its market-only part once per distinct day of a minibatch (``per_day_market``; see
``TransformerActorCritic.forward_days``) and only the portfolio part per sample. Same function, same
objective, same minibatches as the straightforward per-window forward (``per_day_market=False``).

Units: rewards are whatever the env returns (a daily log return for ``log_return``); actions are
weights on the simplex (N+1, last = cash). Determinism: the network is initialised from ``seed``;
sampling uses the agent's own ``torch.Generator`` and minibatch order its own numpy ``Generator``, both
saved by ``save_checkpoint`` so that a resumed run continues bit-identically on the same env.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.checkpoint import atomic_torch_save, load_checkpoint
from agents.common import (
    ObsLayout,
    alr_from_weights,
    as_batch,
    as_batched_env,
    resolve_config,
    resolve_device,
)
from agents.ppo_encoders import ENCODERS, build_actor_critic, policy_module_of
from agents.replay_buffer import index_source
from agents.rollout_buffer import RolloutBatch, RolloutBuffer, gae
from agents.transformer_encoder import ACTION_HEADS


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (defaults: the PPO paper's / stable-baselines3's) and the network's shape.

    ``n_steps`` decisions are collected per env before each update (rollout = n_steps x M);
    ``window``/``n_features`` describe the observation (``n_features`` 0 = infer from ``state_dim``).
    ``clip_range_vf`` 0 = unclipped value loss; ``target_kl`` 0 = no early stop.
    ``normalize_reward``: divide rewards by the running std of the discounted return (``RewardScaler``);
    daily log returns (~0.01) otherwise leave the critic's initial errors dominating the advantages.
    ``index_rollout``: with an env that exposes day indices (``agents.replay_buffer.index_source``), the
    rollout stores days + weights + masks (``agents.rollout_buffer.RolloutBuffer``; n_steps*M*(2N+2)
    numbers instead of n_steps*M*obs_dim) and the network reads the env's one feature array.
    ``per_day_market``: compute the market-only part of the network once per distinct day of a minibatch
    and gather it (``forward_days``), and the last day-encoder layer for the latest day only; False runs
    the straightforward per-window forward on rebuilt observations (``forward_reference``; same function,
    kept as the benchmarks' "before" and the tests' reference).
    ``encoder``: ``"transformer"`` (``d_model``, ``n_heads``, ``day_layers``, ``asset_layers``,
    ``dim_feedforward``, ``dropout``), ``"lstm"`` (hidden ``d_model``, ``lstm_layers``) or ``"mlp"`` (width
    ``d_model``, ``mlp_layers``); see ``agents.ppo_encoders``. Configs without the key are Transformer runs.
    ``action_head``: ``"assets"`` (a logit per asset: the whole simplex) or ``"exposure"`` (one logit per day,
    an equal-weight sleeve over the tradable assets against cash, explored with one shared draw of scale
    ``exp(init_log_std)`` at first; the Transformer reads it from the cash token, the LSTM and MLP encoders
    pool it over the assets: ``agents.distributions.exposure_logits`` / ``pooled_exposure_logits``).
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
    per_day_market: bool = True
    window: int = 1
    n_features: int = 0
    d_model: int = 64
    n_heads: int = 4
    day_layers: int = 2
    asset_layers: int = 1
    dim_feedforward: int = 128
    dropout: float = 0.0
    init_log_std: float = -0.5
    action_head: str = "assets"
    encoder: str = "transformer"
    lstm_layers: int = 3
    mlp_layers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"PPOConfig.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"PPOConfig.action_head must be one of {', '.join(ACTION_HEADS)}, got {self.action_head!r}")
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


class PPOAgent:
    """PPO over portfolio weights with the actor-critic ``config.encoder`` names (see the module docstring)."""

    algo = "ppo"

    def __init__(self, state_dim: int, action_dim: int, layout: ObsLayout | None = None,
                 config: PPOConfig | None = None, device: str = "cpu", **overrides: Any) -> None:
        self.config = resolve_config(PPOConfig, config, overrides)
        self.device = resolve_device(device)
        c = self.config
        self.layout = layout or ObsLayout.infer(state_dim, action_dim, c.window)
        self.layout.check_obs_dim(state_dim)
        if self.layout.action_dim != action_dim:
            raise ValueError(f"action_dim {action_dim} does not match the layout's N+1 = {self.layout.action_dim}")
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.net = build_actor_critic(self.layout, c).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.learning_rate, eps=1e-5)
        self.gen = torch.Generator().manual_seed(c.seed)
        self.np_rng = np.random.default_rng(c.seed)
        self.global_step = 0
        self.reward_scaler = RewardScaler(c.gamma)
        self._env_obs: np.ndarray | None = None  # train(): the env's current observations (M, obs_dim)
        self._ep_return: np.ndarray | None = None
        self._recent_returns: list[float] = []
        self._pending: RolloutBuffer | None = None  # learn(): transitions of the quick-start loop

    # -- acting ------------------------------------------------------------------------------------
    def policy_module(self) -> nn.Module:
        """A snapshot of the deterministic policy obs (B, obs_dim) -> weights (B, N+1), in eval mode."""
        return policy_module_of(self.net)

    @torch.no_grad()
    def get_action(self, state: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Weights (N+1,) for one observation (obs_dim,), or (B, N+1) for (B, obs_dim); float32."""
        obs = as_batch(state, self.layout.obs_dim).to(self.device)
        logits, _, mask1 = self._forward(obs)
        if deterministic:
            z = self.net.mean_latent(logits)
        else:
            z = self.net.sample_latent(logits, self.gen)
        w = self.net.weights_from_latent(z, mask1).cpu().numpy().astype(np.float32)
        return w[0] if np.ndim(state) == 1 else w

    # -- the network on observations or on day indices ----------------------------------------------
    def _forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, obs_dim) -> logits (B, N+1), values (B,), mask1 (B, N+1) (reference path if configured)."""
        if not self.config.per_day_market and hasattr(self.net, "forward_reference"):
            return self.net.forward_reference(obs)
        return self.net(obs)

    def _evaluate(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network on a minibatch: logits (B, N+1), values (B,), mask1 (B, N+1)."""
        if batch.observations is not None:
            return self._forward(batch.observations)
        if self.config.per_day_market and hasattr(self.net, "forward_days"):
            return self.net.forward_days(self._features, batch.days, batch.weights, batch.masks)
        # the straightforward path: rebuild every window of the minibatch, then the per-window forward
        days = batch.days[:, None] + torch.arange(1 - self.layout.window, 1, device=batch.days.device)
        windows = self._features[days].reshape(days.shape[0], -1)
        return self._forward(torch.cat([windows, batch.weights, batch.masks], dim=1))

    # -- the update ----------------------------------------------------------------------------------
    def _update(self, rollout: RolloutBuffer) -> dict[str, float]:
        """PPO epochs over a full rollout buffer (advantages and returns computed)."""
        c = self.config
        mb = min(c.batch_size, rollout.n_steps * rollout.n_envs)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
        self.net.train()
        for _epoch in range(c.n_epochs):
            for batch in rollout.get(mb, self.np_rng):
                logits, new_v, mask1 = self._evaluate(batch)
                new_logp, ent = self.net.log_prob_entropy(logits, mask1, batch.latents)
                log_ratio = new_logp - batch.old_log_prob
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > c.clip_range).float().mean()
                a = batch.advantages
                if c.norm_adv and len(a) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - c.clip_range, 1 + c.clip_range)).mean()
                if c.clip_range_vf > 0:
                    v_clip = batch.old_values + (new_v - batch.old_values).clamp(-c.clip_range_vf, c.clip_range_vf)
                    v_loss = 0.5 * torch.max((new_v - batch.returns) ** 2, (v_clip - batch.returns) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_v - batch.returns) ** 2).mean()
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
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["explained_variance"] = rollout.explained_variance()
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
        m, dev = venv.num_envs, self.device
        src = index_source(venv) if c.index_rollout else None
        self._features = None if src is None else torch.as_tensor(src[0], dtype=torch.float32).to(dev)
        fast_days = src is not None and c.per_day_market and hasattr(self.net, "day_rows")
        if self._env_obs is None or self._env_obs.shape[0] != m:
            self._env_obs, _ = venv.reset(seed=c.seed)
            self._env_obs = np.asarray(self._env_obs, np.float32)
            self._ep_return = np.zeros(m)
        if self._ep_return is None or self._ep_return.shape != (m,):
            self._ep_return = np.zeros(m)
        rollout = RolloutBuffer(c.n_steps, m, self.layout, indexed=src is not None, device=dev)
        metrics: dict[str, float] = {}
        while self.global_step < total_timesteps:
            t0 = time.perf_counter()
            self._anneal(total_timesteps)
            rollout.reset()
            self.net.eval()
            with torch.no_grad():  # the parameters are fixed during a rollout: project every day once
                day_rows = self.net.day_rows(self._features) if fast_days else None
            for _step in range(c.n_steps):
                days = venv.days if src is not None else None
                with torch.no_grad():
                    if fast_days:
                        _, weights, mask = self.layout.split_numpy(self._env_obs)
                        logits, v, mask1 = self.net.forward_days(
                            self._features, torch.as_tensor(days).to(dev), torch.as_tensor(weights).to(dev),
                            torch.as_tensor(mask).to(dev), day_rows=day_rows)
                    else:
                        logits, v, mask1 = self._forward(torch.as_tensor(self._env_obs).to(dev))
                    z = self.net.sample_latent(logits, self.gen)
                    logp, _ = self.net.log_prob_entropy(logits, mask1, z)
                    w = self.net.weights_from_latent(z, mask1)
                next_obs, rew, term, trunc, infos = venv.step(w.cpu().numpy())
                rew = np.asarray(rew, np.float64).copy()
                self._ep_return += rew
                done = np.logical_or(term, trunc)
                if c.normalize_reward:
                    rew = self.reward_scaler(rew, done)
                rew += self._bootstrap_truncated(np.asarray(trunc) & ~np.asarray(term), infos)
                rollout.add(self._env_obs, days, z.cpu().numpy(), logp.cpu().numpy(), v.cpu().numpy(), rew, done)
                for i in np.flatnonzero(done):
                    self._recent_returns = (self._recent_returns + [float(self._ep_return[i])])[-100:]
                    self._ep_return[i] = 0.0
                self._env_obs = np.asarray(next_obs, np.float32)
                self.global_step += m
            with torch.no_grad():
                last_v = self._forward(torch.as_tensor(self._env_obs).to(dev))[1].cpu().numpy()
            rollout.compute_returns_and_advantage(last_v, c.gamma, c.gae_lambda)
            metrics = self._update(rollout)
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
                extra[idx] = self.config.gamma * self._forward(torch.as_tensor(final).to(self.device))[1].cpu().numpy()
        return extra

    # -- the quick-start loop ------------------------------------------------------------------------
    def learn(self, state: np.ndarray, action: np.ndarray, reward: float, next_state: np.ndarray,
              terminated: bool, truncated: bool = False, total_timesteps: int = 0) -> dict[str, float] | None:
        """Record one transition; every ``n_steps`` transitions run a PPO update and return its metrics.

        ``action`` are the weights the env received (N+1); they are mapped back to the latent exactly.
        ``total_timesteps`` > 0 anneals the learning rate towards that horizon.
        """
        c, dev = self.config, self.device
        obs = as_batch(state, self.layout.obs_dim).to(dev)
        act = torch.as_tensor(np.asarray(action, np.float32).reshape(1, -1)).to(dev)
        self.net.eval()
        with torch.no_grad():
            logits, v, mask1 = self._forward(obs)
            z = alr_from_weights(act / act.sum(-1, keepdim=True).clamp_min(1e-12))
            z = torch.where(mask1[:, :-1] > 0.5, z, self.net.mean_latent(logits))
            logp, _ = self.net.log_prob_entropy(logits, mask1, z)
            r = float(reward)
            if c.normalize_reward:
                r = float(self.reward_scaler(np.array([r]), np.array([terminated or truncated]))[0])
            if truncated and not terminated:
                r += c.gamma * float(self._forward(as_batch(next_state, self.layout.obs_dim).to(dev))[1][0])
        if self._pending is None:
            self._pending = RolloutBuffer(c.n_steps, 1, self.layout, indexed=False, device=dev)
        self._pending.add(obs.cpu().numpy(), None, z.cpu().numpy(), logp.cpu().numpy(), v.cpu().numpy(),
                          np.array([r]), np.array([float(terminated or truncated)]))
        self.global_step += 1
        if not self._pending.full:
            return None
        if total_timesteps > 0:
            self._anneal(total_timesteps)
        with torch.no_grad():
            last_v = self._forward(as_batch(next_state, self.layout.obs_dim).to(dev))[1].cpu().numpy()
        self._pending.compute_returns_and_advantage(last_v, c.gamma, c.gae_lambda)
        out = self._update(self._pending)
        self._pending.reset()
        return out

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
        self.optimizer.load_state_dict(state["optimizer"])  # Adam's moments follow the parameters' device
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
    def load_checkpoint(cls, path: str, env: Any | None = None, device: str = "cpu") -> PPOAgent:
        """Rebuild an agent from ``save_checkpoint`` output on ``device`` (``agents.checkpoint.load_checkpoint``;
        loaded to the CPU first, so a checkpoint written on any device loads on any other)."""
        return load_checkpoint(cls, path, env, device=device)

    def restart_episodes(self, obs: np.ndarray) -> None:
        """Continue ``train`` from fresh episodes whose first observations are ``obs`` (M, obs_dim)."""
        self._env_obs = np.asarray(obs, np.float32)
        self._ep_return = np.zeros(self._env_obs.shape[0])


__all__ = ["PPOAgent", "PPOConfig", "RewardScaler", "gae", "as_batched_env"]
