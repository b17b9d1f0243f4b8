"""SAC over portfolio weights with the LSTM extractor: Gaussian actor mapped onto the simplex.

Actor: ``AssetScoreHead(H, 2)`` on the detached latent gives, per risky asset i, a mean ``mu_i`` and a
log-std (clamped to [``log_std_min``, ``log_std_max``]). The latent ``z = mu + sigma * eps`` lives in
additive-log-ratio coordinates with cash as the reference, and the weights are
``masked_softmax([z, 0], mask1)`` (masked assets exactly 0; the deterministic policy uses ``z = mu``).
The softmax is treated as part of the environment: the policy's density and entropy are those of the
Gaussian on the tradable coordinates, ``log pi = sum_i mask_i log Normal(z_i; mu_i, sigma_i)``, and the
critics score the weights. (The density of the weights themselves would add the Jacobian
``-sum_j log w_j``, whose entropy bonus pushes every policy towards equal weights.)

Update (one minibatch of ``batch_size`` from the replay buffer), Haarnoja et al. 2018 with automatic
temperature:

- ``y = reward_scale * r + gamma * (1 - terminated) * (min_k Q'_k(s', a') - alpha * log pi(a'|s'))``,
  ``a' ~ pi(.|s')``; both a' and Q'_k read the target encoder's latent of s' (one LSTM pass instead of two).
- Critic loss ``MSE(Q_1(s, a), y) + MSE(Q_2(s, a), y)`` trains both critics and the shared encoder.
- Actor loss ``mean(alpha * log pi(a~|s) - min_k Q_k(s, a~))`` with reparameterised ``a~`` on the
  detached latent; temperature loss ``-mean(log_alpha * (log pi + target_entropy))`` with
  ``target_entropy = -N`` unless set.
- Polyak updates (``tau``) of both target critics and the target encoder.

Softmax saturation: the entropy is taken in z coordinates, so it is the same whether ``mu`` sits near 0 or
far below cash's 0; once every risky ``mu_i`` is far below 0 the weights are all cash, their gradient
``w_i (1 - w_i)`` vanishes and nothing pulls the actor back (seen on crypto4 at 100k steps).
``latent_l2 > 0`` adds ``latent_l2 * mean_i mu_i^2`` to the actor loss (the ``action_l2`` regulariser of
OpenAI baselines' DDPG-HER, here on the pre-softmax mean), a restoring force towards equal weight that the
critics must outweigh.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from agents import distributions as D
from agents.lstm_extractor import AssetScoreHead, QHead, soft_update
from agents.off_policy import OffPolicyAgent
from agents.replay_buffer import ReplayBatch


@dataclass(frozen=True)
class SACConfig:
    """SAC hyper-parameters (the second paper's table: gamma 0.99, batch 64, 64 hidden units).

    ``learning_starts`` decisions of uniform random weights fill the buffer first; then every
    ``train_freq`` batched env steps (M decisions each) ``gradient_steps`` updates run (-1: train_freq * M
    updates), stable-baselines3's meaning with the batched env's step as the unit. ``target_entropy`` None = -N. ``reward_scale`` multiplies rewards
    (daily log returns are ~0.01; SAC's entropy trade-off depends on the reward scale).
    ``index_buffer``: store day indices when the env exposes them. ``latent_l2`` adds
    ``latent_l2 * mean_i mu_i^2`` (tradable assets) to the actor loss (0 = off; module doc).
    """

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    buffer_size: int = 100_000
    batch_size: int = 64
    gamma: float = 0.99
    tau: float = 0.005
    hidden: int = 64
    lstm_layers: int = 3
    learning_starts: int = 1000
    train_freq: int = 1
    gradient_steps: int = 1
    init_alpha: float = 0.1
    target_entropy: float | None = None
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    latent_l2: float = 0.0
    reward_scale: float = 1.0
    max_grad_norm: float = 10.0
    index_buffer: bool = True
    log_interval: int = 1000
    window: int = 1
    n_features: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("actor_lr", "critic_lr", "alpha_lr", "buffer_size", "batch_size", "hidden", "window",
                     "init_alpha", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SACConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.train_freq < 1 or (self.gradient_steps < 1 and self.gradient_steps != -1):
            raise ValueError(f"SACConfig.train_freq must be >= 1 and gradient_steps >= 1 or -1, got "
                             f"{self.train_freq} and {self.gradient_steps}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 < self.gamma <= 1.0:
            raise ValueError("SACConfig.tau and gamma must be in (0, 1]")
        if self.latent_l2 < 0:
            raise ValueError(f"SACConfig.latent_l2 must be non-negative, got {self.latent_l2}")


class SACAgent(OffPolicyAgent):
    """Soft actor-critic with twin critics, target networks and automatic temperature (module doc)."""

    algo = "sac"
    config_class = SACConfig
    cash_reference = True

    def _build(self) -> None:
        c, h = self.config, self.config.hidden
        self.nets["actor"] = AssetScoreHead(h, 2)
        self.nets["q1"], self.nets["q2"] = QHead(self.layout, h), QHead(self.layout, h)
        self.nets["q1_target"], self.nets["q2_target"] = copy.deepcopy(self.nets["q1"]), copy.deepcopy(self.nets["q2"])
        for name in ("q1_target", "q2_target"):
            for p in self.nets[name].parameters():
                p.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.init_alpha), requires_grad=True)
        self.target_entropy = float(-self.layout.n_assets if c.target_entropy is None else c.target_entropy)

    def _to_device(self) -> None:
        self.log_alpha = self.log_alpha.detach().to(self.device).requires_grad_(True)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        critic_params = [*self.nets["encoder"].parameters(), *self.nets["q1"].parameters(),
                         *self.nets["q2"].parameters()]
        return {
            "actor": torch.optim.Adam(self.nets["actor"].parameters(), lr=c.actor_lr),
            "critic": torch.optim.Adam(critic_params, lr=c.critic_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=c.alpha_lr),
        }

    def _extra_state(self) -> dict:
        return {"log_alpha": self.log_alpha.detach().clone()}

    def _load_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])

    def model_state(self) -> dict[str, torch.Tensor]:
        state = dict(self.nets.state_dict())
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        log_alpha = state.pop("log_alpha")
        self.nets.load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(log_alpha)

    # -- the policy ----------------------------------------------------------------------------------
    def _actor_out(self, latent: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's latent mean ``mu`` (B, N) and clamped log-std (B, N) per risky asset."""
        out = self.nets["actor"](latent, weights)[:, :-1]
        return out[..., 0], out[..., 1].clamp(self.config.log_std_min, self.config.log_std_max)

    @staticmethod
    def _draw(mu: torch.Tensor, log_std: torch.Tensor, mask1: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = D.sample_noise(mu.shape, mu, generator)
        z = mu + log_std.exp() * eps
        return D.weights_from_latent(z, mask1), D.noise_log_prob(eps, log_std, mask1[:, :-1])

    def _sample(self, latent: torch.Tensor, weights: torch.Tensor, mask1: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised weights (B, N+1) and log pi (B,) over tradable assets (module doc)."""
        return self._draw(*self._actor_out(latent, weights), mask1, generator)

    def _explore(self, obs: torch.Tensor) -> np.ndarray:
        latent, weights, mask1 = self._split(obs)
        w, _ = self._sample(latent, weights, mask1, self.gen)
        return w.cpu().numpy().astype(np.float32)

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # -- the update ----------------------------------------------------------------------------------
    def _update(self, batch: ReplayBatch) -> dict[str, float]:
        c, nets = self.config, self.nets
        alpha = self.log_alpha.exp().detach()
        feats, weights, mask = self.layout.split(batch.obs)
        n_feats, n_weights, n_mask = self.layout.split(batch.next_obs)
        mask1, n_mask1 = torch.cat([mask, torch.ones_like(mask[:, :1])], 1), torch.cat(
            [n_mask, torch.ones_like(n_mask[:, :1])], 1)
        with torch.no_grad():
            n_latent_t = nets["encoder_target"](n_feats)  # one LSTM pass serves the next action and Q'
            n_action, n_logp = self._sample(n_latent_t, n_weights, n_mask1, self.gen)
            q_next = torch.min(nets["q1_target"](n_latent_t, n_weights, n_action),
                               nets["q2_target"](n_latent_t, n_weights, n_action))
            y = c.reward_scale * batch.rewards + c.gamma * (1.0 - batch.dones) * (q_next - alpha * n_logp)
        latent = nets["encoder"](feats)
        q1 = nets["q1"](latent, weights, batch.actions)
        q2 = nets["q2"](latent, weights, batch.actions)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.optimizers["critic"].zero_grad()
        critic_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizers["critic"].param_groups[0]["params"], c.max_grad_norm)
        self.optimizers["critic"].step()

        lat = latent.detach()
        mu, log_std = self._actor_out(lat, weights)
        action, logp = self._draw(mu, log_std, mask1, self.gen)
        q_pi = torch.min(nets["q1"](lat, weights, action), nets["q2"](lat, weights, action))
        actor_loss = (alpha * logp - q_pi).mean()
        if c.latent_l2:  # keeps the softmax out of saturation (module doc); 0 = Haarnoja et al. as is
            actor_loss = actor_loss + c.latent_l2 * (mu.square() * mask).sum(1).div(mask.sum(1).clamp(min=1)).mean()
        self.optimizers["actor"].zero_grad()
        actor_loss.backward()
        self.optimizers["actor"].step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.optimizers["alpha"].zero_grad()
        alpha_loss.backward()
        self.optimizers["alpha"].step()

        soft_update(nets["q1_target"], nets["q1"], c.tau)
        soft_update(nets["q2_target"], nets["q2"], c.tau)
        soft_update(nets["encoder_target"], nets["encoder"], c.tau)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach()),
                "alpha": float(alpha), "entropy": float(-logp.detach().mean()), "q": float(q1.detach().mean())}
