"""DDPG over portfolio weights with the LSTM extractor: deterministic softmax actor, one critic.

Actor: ``AssetScoreHead(H, 1)`` on the detached latent gives one logit per asset (cash included);
``weights = masked_softmax(logits, mask1)`` (masked assets exactly 0). Exploration adds
Ornstein-Uhlenbeck noise to the logits before the softmax, so explored actions stay on the simplex:
``x <- x + theta * (0 - x) * dt + sigma * sqrt(dt) * eps`` per portfolio and asset, reset when the
portfolio's episode ends.

Update (Lillicrap et al. 2016): ``y = reward_scale * r + gamma * (1 - terminated) * Q'(s', mu'(s'))``
with the target actor and target critic on the target encoder; critic loss ``MSE(Q(s, a), y)`` trains the
critic and the shared encoder; actor loss ``-mean(Q(s, mu(s)))`` on the detached latent; Polyak updates
(``tau``) of the target actor, critic and encoder.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from agents.common import full_mask, masked_softmax
from agents.lstm_extractor import AssetScoreHead, QHead, soft_update
from agents.off_policy import OffPolicyAgent
from agents.replay_buffer import ReplayBatch


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG hyper-parameters (the second paper's table: gamma 0.99, batch 64, 64 hidden units).

    OU noise on the actor's logits: ``ou_theta``, ``ou_sigma`` (logit units), ``ou_dt``.
    Other fields as in ``SACConfig``.
    """

    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    buffer_size: int = 100_000
    batch_size: int = 64
    gamma: float = 0.99
    tau: float = 0.005
    hidden: int = 64
    lstm_layers: int = 3
    learning_starts: int = 1000
    train_freq: int = 1
    gradient_steps: int = 1
    ou_theta: float = 0.15
    ou_sigma: float = 0.3
    ou_dt: float = 1.0
    reward_scale: float = 1.0
    max_grad_norm: float = 10.0
    index_buffer: bool = True
    log_interval: int = 1000
    window: int = 1
    n_features: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("actor_lr", "critic_lr", "buffer_size", "batch_size", "hidden", "window", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DDPGConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.train_freq < 1 or (self.gradient_steps < 1 and self.gradient_steps != -1):
            raise ValueError(f"DDPGConfig.train_freq must be >= 1 and gradient_steps >= 1 or -1, got "
                             f"{self.train_freq} and {self.gradient_steps}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 < self.gamma <= 1.0:
            raise ValueError("DDPGConfig.tau and gamma must be in (0, 1]")
        if self.ou_sigma < 0 or self.ou_theta < 0 or self.ou_dt <= 0:
            raise ValueError("DDPGConfig.ou_sigma and ou_theta must be >= 0 and ou_dt > 0")


class OUNoise:
    """Ornstein-Uhlenbeck process, state (M, K), mean 0; stationary std sigma / sqrt(2 theta)."""

    def __init__(self, shape: tuple[int, int], theta: float, sigma: float, dt: float) -> None:
        self.theta, self.sigma, self.dt = theta, sigma, dt
        self.state = np.zeros(shape)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        eps = rng.standard_normal(self.state.shape)
        self.state = self.state - self.theta * self.state * self.dt + self.sigma * math.sqrt(self.dt) * eps
        return self.state.copy()

    def reset(self, rows: np.ndarray) -> None:
        self.state[rows] = 0.0


class DDPGAgent(OffPolicyAgent):
    """Deep deterministic policy gradient with target networks and OU exploration (module doc)."""

    algo = "ddpg"
    config_class = DDPGConfig
    cash_reference = False

    def _build(self) -> None:
        h = self.config.hidden
        self.nets["actor"] = AssetScoreHead(h, 1)
        self.nets["critic"] = QHead(self.layout, h)
        self.nets["actor_target"] = copy.deepcopy(self.nets["actor"])
        self.nets["critic_target"] = copy.deepcopy(self.nets["critic"])
        for name in ("actor_target", "critic_target"):
            for p in self.nets[name].parameters():
                p.requires_grad_(False)
        self.noise: OUNoise | None = None

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        critic_params = [*self.nets["encoder"].parameters(), *self.nets["critic"].parameters()]
        return {
            "actor": torch.optim.Adam(self.nets["actor"].parameters(), lr=c.actor_lr),
            "critic": torch.optim.Adam(critic_params, lr=c.critic_lr),
        }

    def _extra_state(self) -> dict:
        return {"noise": None if self.noise is None else torch.as_tensor(self.noise.state)}

    def _load_extra_state(self, state: dict) -> None:
        if state["noise"] is not None:
            c = self.config
            self.noise = OUNoise(tuple(state["noise"].shape), c.ou_theta, c.ou_sigma, c.ou_dt)
            self.noise.state = state["noise"].numpy().copy()

    def _logits(self, actor: torch.nn.Module, latent: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return actor(latent, weights)[..., 0]

    def _explore(self, obs: torch.Tensor) -> np.ndarray:
        c = self.config
        latent, weights, mask1 = self._split(obs)
        logits = self._logits(self.nets["actor"], latent, weights)
        if self.noise is None or self.noise.state.shape != tuple(logits.shape):
            self.noise = OUNoise(tuple(logits.shape), c.ou_theta, c.ou_sigma, c.ou_dt)
        noisy = logits + torch.as_tensor(self.noise.sample(self.np_rng), dtype=logits.dtype).to(logits.device)
        return masked_softmax(noisy, mask1).cpu().numpy().astype(np.float32)

    def _on_episode_end(self, rows: np.ndarray) -> None:
        if self.noise is not None and self.noise.state.shape[0] == rows.shape[0]:
            self.noise.reset(rows)

    def _update(self, batch: ReplayBatch) -> dict[str, float]:
        c, nets = self.config, self.nets
        feats, weights, mask = self.layout.split(batch.obs)
        n_feats, n_weights, n_mask = self.layout.split(batch.next_obs)
        mask1, n_mask1 = full_mask(mask), full_mask(n_mask)
        with torch.no_grad():
            n_latent_t = nets["encoder_target"](n_feats)
            n_action = masked_softmax(self._logits(nets["actor_target"], n_latent_t, n_weights), n_mask1)
            q_next = nets["critic_target"](n_latent_t, n_weights, n_action)
            y = c.reward_scale * batch.rewards + c.gamma * (1.0 - batch.dones) * q_next
        latent = nets["encoder"](feats)
        q = nets["critic"](latent, weights, batch.actions)
        critic_loss = F.mse_loss(q, y)
        self.optimizers["critic"].zero_grad()
        critic_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizers["critic"].param_groups[0]["params"], c.max_grad_norm)
        self.optimizers["critic"].step()

        lat = latent.detach()
        action = masked_softmax(self._logits(nets["actor"], lat, weights), mask1)
        actor_loss = -nets["critic"](lat, weights, action).mean()
        self.optimizers["actor"].zero_grad()
        actor_loss.backward()
        self.optimizers["actor"].step()

        soft_update(nets["actor_target"], nets["actor"], c.tau)
        soft_update(nets["critic_target"], nets["critic"], c.tau)
        soft_update(nets["encoder_target"], nets["encoder"], c.tau)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach()),
                "q": float(q.detach().mean())}
