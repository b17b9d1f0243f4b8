"""What SAC and DDPG share: the LSTM encoder, the replay buffer, the rollout loop and checkpoints.

Encoder sharing (as in SAC-AE / DrQ): one ``LSTMExtractor`` (``nets.encoder``) is trained by the critic
loss; the actor reads its latent detached, and the target critics read ``nets.encoder_target``, a
Polyak-averaged copy. ``policy.pth`` is the state dict of ``nets`` (an ``nn.ModuleDict``): the
deployment path needs only the ``encoder.*`` and ``actor.*`` entries.

Rollout (``train``): warm-up decisions (``learning_starts``) are uniform draws on the simplex of the
tradable assets (Dirichlet(1)); afterwards the algorithm's exploration policy acts. Every batched env step
adds M transitions; every ``train_freq`` batched env steps, ``gradient_steps`` updates of ``batch_size`` run
(stable-baselines3's meaning, with ``train_freq`` counted in steps of the batched env; ``gradient_steps=-1``
runs as many updates as transitions were collected since the last round, train_freq * M). These two set
the updates per sample, an algorithm setting. Time-limit truncation is not a
terminal (the target bootstraps from ``final_obs``). With an env that exposes day indices (see
``agents.replay_buffer.index_source``) and ``index_buffer`` on, the buffer stores days and weights only.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.checkpoint import atomic_torch_save, load_checkpoint
from agents.common import (
    ObsLayout,
    as_batch,
    as_batched_env,
    full_mask,
    masked_softmax,
    resolve_config,
    resolve_device,
    split_obs,
)
from agents.distributions import pooled_exposure_logits
from agents.lstm_extractor import AssetScoreHead, LSTMExtractor
from agents.replay_buffer import IndexReplayBuffer, ObsReplayBuffer, ReplayBatch, index_source


class LSTMPolicyModule(nn.Module):
    """Deterministic policy obs (B, obs_dim) -> weights (B, N+1): encoder -> actor head -> masked softmax.

    ``cash_reference`` True (SAC): logits = [mu_1..mu_N, 0] (the actor's first output, cash row ignored);
    False (DDPG): logits = the actor's first output for all N+1 rows. ``exposure`` (PPO-LSTM/MLP with
    ``action_head="exposure"``): then ``agents.distributions.pooled_exposure_logits`` of them. Split as the Transformer's
    ``PolicyModule``: ``forward(obs) == act(market(features), weights, mask)`` with ``market`` = the encoder's
    latent (B, N+1, H); scriptable, traceable (per method) and ONNX-exportable.
    """

    def __init__(self, layout: ObsLayout, encoder: nn.Module, actor: AssetScoreHead, cash_reference: bool,
                 exposure: bool = False):
        super().__init__()
        self.layout, self.encoder, self.actor, self.cash_reference = layout, encoder, actor, cash_reference
        self.exposure = exposure
        self.window, self.n_assets, self.n_features = layout.window, layout.n_assets, layout.n_features

    def market(self, features: torch.Tensor) -> torch.Tensor:
        """Market-only latent: features (B, W, N, F) -> the encoder's latent (B, N+1, H), cash row zero."""
        return self.encoder(features)

    def act(self, market: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """market latent (B, N+1, H), weights (B, N+1), mask (B, N) -> simplex weights (B, N+1)."""
        out = self.actor(market, weights)[..., 0]
        if self.cash_reference:
            out = torch.cat([out[:, :-1], torch.zeros_like(out[:, :1])], dim=1)
        mask1 = full_mask(mask)
        if self.exposure:
            out = pooled_exposure_logits(out, mask1)
        return masked_softmax(out, mask1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (B, obs_dim) -> weights (B, N+1); equals ``act(market(features), weights, mask)``."""
        features, weights, mask = split_obs(obs, self.window, self.n_assets, self.n_features)
        return self.act(self.market(features), weights, mask)


def dirichlet_on_tradable(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Uniform random weights (M, N+1) on the simplex of tradable assets + cash; mask (M, N)."""
    keep = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1) > 0.5
    g = rng.exponential(size=keep.shape) * keep
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


class OffPolicyAgent:
    """Base of ``SACAgent`` and ``DDPGAgent``; subclasses define ``_build``, ``_explore``, ``_update``."""

    algo = ""
    config_class: type = object
    cash_reference = False

    def __init__(self, state_dim: int, action_dim: int, layout: ObsLayout | None = None,
                 config: Any = None, device: str = "cpu", **overrides: Any) -> None:
        self.config = resolve_config(self.config_class, config, overrides)
        self.device = resolve_device(device)
        c = self.config
        self.layout = layout or ObsLayout.infer(state_dim, action_dim, c.window)
        self.layout.check_obs_dim(state_dim)
        if self.layout.action_dim != action_dim:
            raise ValueError(f"action_dim {action_dim} does not match the layout's N+1 = {self.layout.action_dim}")
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.nets = nn.ModuleDict({"encoder": LSTMExtractor(self.layout, c.hidden, c.lstm_layers)})
            self._build()
        self.nets["encoder_target"] = copy.deepcopy(self.nets["encoder"])
        for p in self.nets["encoder_target"].parameters():
            p.requires_grad_(False)
        self.nets.to(self.device)
        self._to_device()
        self.optimizers: dict[str, torch.optim.Optimizer] = self._optimizers()
        self.gen = torch.Generator().manual_seed(c.seed)
        self.np_rng = np.random.default_rng(c.seed)
        self.global_step = 0
        self.n_updates = 0
        self.buffer: ObsReplayBuffer | None = None
        self._env_obs: np.ndarray | None = None  # train(): the env's current observations (M, obs_dim)
        self._ep_return = np.zeros(0)
        self._recent: list[float] = []

    # -- to be defined by the algorithm --------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def _to_device(self) -> None:
        """Move state the algorithm keeps outside ``nets`` (SAC's temperature) to ``self.device``."""
        return None

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _explore(self, obs: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def _update(self, batch: ReplayBatch) -> dict[str, float]:
        raise NotImplementedError

    def _on_episode_end(self, rows: np.ndarray) -> None:
        return None

    # -- acting --------------------------------------------------------------------------------------
    def policy_module(self) -> nn.Module:
        """A snapshot of the deterministic policy obs (B, obs_dim) -> weights (B, N+1), in eval mode, on the CPU."""
        return LSTMPolicyModule(self.layout, copy.deepcopy(self.nets["encoder"]),
                                copy.deepcopy(self.nets["actor"]), self.cash_reference).eval().cpu()

    @torch.no_grad()
    def get_action(self, state: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Weights (N+1,) for one observation (obs_dim,), or (B, N+1) for (B, obs_dim); float32."""
        obs = as_batch(state, self.layout.obs_dim).to(self.device)
        if deterministic:
            w = LSTMPolicyModule(self.layout, self.nets["encoder"], self.nets["actor"], self.cash_reference)(obs)
            w = w.cpu().numpy().astype(np.float32)
        else:
            w = self._explore(obs)
        return w[0] if np.ndim(state) == 1 else w

    def _split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, obs_dim) -> latent (B, N+1, H) of the online encoder, weights (B, N+1), mask1 (B, N+1)."""
        features, weights, mask = self.layout.split(obs)
        return self.nets["encoder"](features), weights, full_mask(mask)

    # -- training loop -------------------------------------------------------------------------------
    def _make_buffer(self, venv: Any) -> ObsReplayBuffer:
        src = index_source(venv) if self.config.index_buffer else None
        if src is not None:
            return IndexReplayBuffer(src[0], src[1], self.layout, self.config.buffer_size, device=self.device)
        return ObsReplayBuffer(self.config.buffer_size, self.layout.obs_dim, self.layout.action_dim, device=self.device)

    def train(self, env: Any, total_timesteps: int,
              callback: Callable[[int, dict[str, float]], Any] | None = None) -> dict[str, float]:
        """Train until ``global_step`` (env decisions over the batch) reaches ``total_timesteps``.

        ``callback(global_step, metrics)`` runs every ``log_interval`` decisions (and at the end);
        returning ``False`` stops. Metrics: the last update's losses, ``alpha`` (SAC), ``episode_return``,
        ``samples_per_s``. A later call continues with the same env and buffer.
        """
        c, venv = self.config, as_batched_env(env)
        m = venv.num_envs
        if self.buffer is None:
            self.buffer = self._make_buffer(venv)
        indexed = isinstance(self.buffer, IndexReplayBuffer)
        if self._env_obs is None or self._env_obs.shape[0] != m:
            self._env_obs = np.asarray(venv.reset(seed=c.seed)[0], np.float32)
            self._ep_return, self._recent = np.zeros(m), []
        if self._ep_return.shape != (m,):
            self._ep_return = np.zeros(m)
        metrics: dict[str, float] = {}
        t0, steps0, next_log = time.perf_counter(), self.global_step, self.global_step + c.log_interval
        while self.global_step < total_timesteps:
            obs = self._env_obs
            _, weights, mask = self.layout.split_numpy(obs)
            if self.global_step < c.learning_starts:
                actions = dirichlet_on_tradable(self.np_rng, mask)
            else:
                with torch.no_grad():
                    actions = self._explore(torch.as_tensor(obs).to(self.device))
            days = venv.days.copy() if indexed else None
            next_obs, rew, term, trunc, infos = venv.step(actions)
            next_obs = np.asarray(next_obs, np.float32)
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            rew = np.asarray(rew, np.float64)
            done = term | trunc
            if indexed:
                self.buffer.add_days(days, weights, actions, rew, np.asarray(infos["t"]),
                                     np.asarray(infos["weights"]), term)
            else:
                real_next = next_obs.copy()
                for i in np.flatnonzero(np.asarray(infos.get("_final_obs", np.zeros(m, bool)), bool)):
                    real_next[i] = np.asarray(infos["final_obs"][i], np.float32)
                self.buffer.add(obs, actions, rew, real_next, term)
            self._ep_return += rew
            for i in np.flatnonzero(done):
                self._recent = (self._recent + [float(self._ep_return[i])])[-100:]
                self._ep_return[i] = 0.0
            if done.any():
                self._on_episode_end(done)
            self._env_obs = next_obs
            self.global_step += m
            round_due = (self.global_step // m) % c.train_freq == 0
            if round_due and self.global_step >= c.learning_starts and len(self.buffer) >= c.batch_size:
                for _ in range(c.gradient_steps if c.gradient_steps > 0 else c.train_freq * m):
                    metrics = self._update(self.buffer.sample(c.batch_size, self.np_rng))
                    self.n_updates += 1
            if self.global_step >= next_log or self.global_step >= total_timesteps:
                next_log += c.log_interval
                metrics = dict(metrics)
                metrics["episode_return"] = float(np.mean(self._recent)) if self._recent else float("nan")
                metrics["samples_per_s"] = (self.global_step - steps0) / max(time.perf_counter() - t0, 1e-9)
                if callback is not None and callback(self.global_step, metrics) is False:
                    break
        return metrics

    # -- persistence ---------------------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        """State dict of every network (``encoder``, ``actor``, critics and targets); ``policy.pth``."""
        return self.nets.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.nets.load_state_dict(state)

    def checkpoint_state(self) -> dict[str, Any]:
        """Networks, optimizers, RNG states, counters and the replay buffer's arrays (no objects)."""
        buf = None
        if self.buffer is not None:
            buf = {k: torch.as_tensor(v) for k, v in vars(self.buffer).items()
                   if isinstance(v, np.ndarray) and k not in ("features", "windows", "tradable")}
            buf.update(size=self.buffer.size, pos=self.buffer.pos)
        return {
            "model": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "torch_generator": self.gen.get_state(), "numpy_rng": self.np_rng.bit_generator.state,
            "global_step": self.global_step, "n_updates": self.n_updates, "buffer": buf,
            "extra": self._extra_state(),
            "env_obs": None if self._env_obs is None else torch.as_tensor(self._env_obs),
            "ep_return": None if self._env_obs is None else torch.as_tensor(self._ep_return),
            "recent_returns": list(self._recent),
            "config": dataclasses.asdict(self.config), "obs_layout": self.layout.to_dict(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def save_checkpoint(self, path: str) -> None:
        atomic_torch_save(self.checkpoint_state(), path)

    @classmethod
    def load_checkpoint(cls, path: str, env: Any | None = None, device: str = "cpu") -> OffPolicyAgent:
        """Rebuild from ``save_checkpoint`` on ``device`` (written on any device); pass the env to restore an
        index buffer (it needs the features)."""
        return load_checkpoint(cls, path, env, device=device)

    def restart_episodes(self, obs: np.ndarray) -> None:
        """Continue ``train`` from fresh episodes whose first observations are ``obs`` (M, obs_dim)."""
        self._env_obs = np.asarray(obs, np.float32)
        self._ep_return = np.zeros(self._env_obs.shape[0])

    def load_checkpoint_state(self, state: dict[str, Any], env: Any | None = None) -> None:
        """Restore ``checkpoint_state()`` output in place; an index replay buffer needs ``env``."""
        agent, layout = self, self.layout
        if state["obs_layout"] != layout.to_dict():
            raise ValueError("the checkpoint was made for a different observation layout")
        agent.nets.load_state_dict(state["model"])
        for k, o in agent.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        agent.gen.set_state(state["torch_generator"])
        agent.np_rng.bit_generator.state = state["numpy_rng"]
        agent.global_step, agent.n_updates = int(state["global_step"]), int(state["n_updates"])
        agent._load_extra_state(state["extra"])
        if state["env_obs"] is not None:
            agent._env_obs = state["env_obs"].numpy().copy()
            agent._ep_return, agent._recent = state["ep_return"].numpy().copy(), list(state["recent_returns"])
        if state["buffer"] is not None:
            buf = dict(state["buffer"])
            if "days" in buf:
                if env is None or index_source(as_batched_env(env)) is None:
                    raise ValueError("this checkpoint's replay buffer stores day indices: pass the env to load it")
                agent.buffer = agent._make_buffer(as_batched_env(env))
            else:
                agent.buffer = ObsReplayBuffer(agent.config.buffer_size, layout.obs_dim, layout.action_dim,
                                               device=agent.device)
            agent.buffer.size, agent.buffer.pos = int(buf.pop("size")), int(buf.pop("pos"))
            for k, v in buf.items():
                setattr(agent.buffer, k, v.numpy().copy())
