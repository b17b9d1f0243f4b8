"""SAC and DDPG with the LSTM extractor: learning, determinism, resume, replay buffers, OU noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agents_env import DriftVecEnv

from agents.common import ObsLayout
from agents.ddpg_agent import DDPGAgent, OUNoise
from agents.lstm_extractor import LSTMExtractor
from agents.off_policy import dirichlet_on_tradable
from agents.replay_buffer import IndexReplayBuffer, ObsReplayBuffer, index_source
from agents.sac_agent import SACAgent

torch.set_num_threads(1)

COMMON = dict(window=4, hidden=32, gamma=0.5, gradient_steps=4, learning_starts=256, actor_lr=1e-3,
              critic_lr=1e-3, log_interval=500)
SAC_FAST = dict(COMMON, init_alpha=0.01, alpha_lr=1e-3)


def _drift_weight(agent) -> float:
    obs, _ = DriftVecEnv(num_envs=32, noise_vol=0.01).reset(seed=99)
    w = agent.get_action(obs, deterministic=True)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    return float(w[:, 0].mean())


@pytest.mark.parametrize("cls,cfg", [(SACAgent, SAC_FAST), (DDPGAgent, COMMON)], ids=["sac", "ddpg"])
def test_off_policy_agent_puts_most_weight_in_the_drifting_asset(cls, cfg):
    env = DriftVecEnv(num_envs=4, noise_vol=0.01)
    agent = cls(env.obs_dim, 4, seed=0, **cfg)
    assert _drift_weight(agent) < 0.5  # untrained: near equal weights
    logged = []
    agent.train(env, 1500, callback=lambda step, m: logged.append(step))
    assert logged[-1] == 1500 and agent.n_updates == 4 * ((1500 - 256) // 4 + 1)
    assert _drift_weight(agent) > 0.8


@pytest.mark.parametrize("cls,cfg", [(SACAgent, SAC_FAST), (DDPGAgent, COMMON)], ids=["sac", "ddpg"])
def test_same_seed_same_weights_and_resume_is_bit_identical(tmp_path, cls, cfg):
    cfg = dict(cfg, learning_starts=16, batch_size=16, log_interval=8, gradient_steps=1)
    obs_dim = DriftVecEnv().obs_dim
    a = cls(obs_dim, 4, seed=5, **cfg)
    a.train(DriftVecEnv(num_envs=2), 64)
    b = cls(obs_dim, 4, seed=5, **cfg)
    env_b = DriftVecEnv(num_envs=2)
    b.train(env_b, 64, callback=lambda step, _: step < 32)
    assert b.global_step == 32
    b.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = cls.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.train(env_b, 64)
    for (name, pa), pr in zip(a.model_state().items(), resumed.model_state().values()):
        assert torch.equal(pa, pr), name
    other = cls(obs_dim, 4, seed=6, **cfg)
    other.train(DriftVecEnv(num_envs=2), 64)
    assert not torch.equal(other.nets["actor"].fc1.weight, a.nets["actor"].fc1.weight)


def test_lstm_extractor_shapes_and_zero_cash_embedding():
    layout = ObsLayout(5, 3, 2)
    ext = LSTMExtractor(layout, hidden=8)
    feats = torch.randn(4, 5, 3, 2)
    lat = ext(feats)
    assert lat.shape == (4, 4, 8)
    assert torch.equal(lat[:, -1], torch.zeros(4, 8))
    # asset order is preserved: permuting assets permutes latents (shared weights per asset)
    perm = ext(feats[:, :, [2, 0, 1]])
    torch.testing.assert_close(perm[:, :3], lat[:, [2, 0, 1]])


def test_index_buffer_rebuilds_the_same_observations_as_an_obs_buffer():
    layout = ObsLayout(3, 2, 2)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((20, 2, 2)).astype(np.float32)
    tradable = (rng.random((20, 2)) > 0.3).astype(np.float32)
    days = np.array([2, 7, 19])
    weights = rng.dirichlet(np.ones(3), size=3).astype(np.float32)
    idx_buf = IndexReplayBuffer(feats, tradable, layout, capacity=10)
    obs = idx_buf.observations(days, weights)
    for row, d in enumerate(days):  # by hand: window rows d-2..d, weights, mask of day d
        expected = np.concatenate([feats[d - 2 : d + 1].ravel(), weights[row], tradable[d]])
        np.testing.assert_array_equal(obs[row], expected)
    next_days, next_w = days[:2] + 1, weights[:2][:, ::-1].copy()
    idx_buf.add_days(days[:2], weights[:2], weights[:2], np.array([1.0, 2.0]), next_days, next_w, np.zeros(2))
    plain = ObsReplayBuffer(10, layout.obs_dim, 3)
    plain.add(obs[:2], weights[:2], np.array([1.0, 2.0]), idx_buf.observations(next_days, next_w), np.zeros(2))
    a, b = idx_buf.sample(8, np.random.default_rng(1)), plain.sample(8, np.random.default_rng(1))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert idx_buf.nbytes < plain.obs.nbytes + plain.next_obs.nbytes
    with pytest.raises(ValueError, match="window range"):
        idx_buf.add_days(np.array([1]), weights[:1], weights[:1], np.ones(1), np.array([2]), weights[:1], np.zeros(1))
    with pytest.raises(TypeError):
        idx_buf.add(obs, weights, np.ones(3), obs, np.zeros(3))


def test_replay_buffer_is_circular():
    buf = ObsReplayBuffer(4, 2, 2)
    for k in range(6):
        buf.add(np.full((1, 2), k), np.zeros((1, 2)), np.array([k]), np.zeros((1, 2)), np.zeros(1))
    assert len(buf) == 4
    assert sorted(buf.rewards.tolist()) == [2, 3, 4, 5]


def test_index_source_duck_typing():
    class Core:
        features = np.zeros((10, 2, 3), np.float32)
        tradable_f32 = np.ones((10, 2), np.float32)

    class Env:
        core, days = Core(), np.zeros(1)

    assert index_source(Env()) is not None
    assert index_source(DriftVecEnv()) is None


def test_ou_noise_is_mean_reverting_with_the_stationary_std():
    noise = OUNoise((20000, 1), theta=0.15, sigma=0.3, dt=1.0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = noise.sample(rng)
    assert abs(x.mean()) < 0.02
    assert x.std() == pytest.approx(0.3 / np.sqrt(2 * 0.15 - 0.15**2), rel=0.05)  # exact AR(1) variance
    noise.reset(np.array([0, 1]))
    assert noise.state[:2].sum() == 0.0


def test_warm_up_actions_respect_the_mask():
    mask = np.array([[1, 0, 1], [0, 0, 0]], np.float32)
    w = dirichlet_on_tradable(np.random.default_rng(0), mask)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert w[0, 1] == 0 and np.all(w[1, :3] == 0) and w[1, 3] == 1.0


def test_index_checkpoint_needs_the_env(tmp_path):
    agent = SACAgent(DriftVecEnv().obs_dim, 4, window=4, hidden=8)
    agent.buffer = IndexReplayBuffer(np.zeros((10, 3, 2), np.float32), np.ones((10, 3)), agent.layout, 4)
    agent.save_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="pass the env"):
        SACAgent.load_checkpoint(tmp_path / "c.pt")


def test_sac_log_prob_matches_torch_distributions_and_weights_are_the_masked_softmax():
    agent = SACAgent(DriftVecEnv().obs_dim, 4, window=4, hidden=8, log_std_min=-3.0, log_std_max=1.0)
    obs = torch.as_tensor(DriftVecEnv(num_envs=5, masked_asset=1).reset(seed=0)[0])
    obs[::2, -3:] = torch.tensor([0.0, 1.0, 0.0])  # mask assets 0 and 2 on some rows
    latent, weights, mask1 = agent._split(obs)
    with torch.no_grad():
        w, logp = agent._sample(latent, weights, mask1, torch.Generator().manual_seed(11))
        out = agent.nets["actor"](latent, weights)[:, :-1]
    mu, std = out[..., 0], out[..., 1].clamp(-3.0, 1.0).exp()
    z = mu + std * torch.randn(mu.shape, generator=torch.Generator().manual_seed(11))
    m = mask1[:, :-1]
    dist = torch.distributions.Normal(mu, std)
    torch.testing.assert_close(logp, (dist.log_prob(z) * m).sum(-1))
    expected = torch.softmax(torch.cat([z, torch.zeros(5, 1)], 1).masked_fill(mask1 == 0, -torch.inf), 1)
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize(("train_freq", "gradient_steps", "updates"), [(1, 1, 17), (3, 2, 10), (3, -1, 30)])
def test_train_freq_and_gradient_steps_have_stable_baselines3s_meaning(train_freq, gradient_steps, updates):
    """M=2 envs, 20 batched steps; updates may start at step 4 (8 transitions = learning_starts = batch).
    Every train_freq-th batched step runs gradient_steps updates (-1: train_freq * M, the transitions
    collected since the last round): train_freq 1 -> steps 4..20 = 17 rounds; 3 -> steps 6, 9, 12, 15, 18."""
    agent = DDPGAgent(DriftVecEnv().obs_dim, 4, window=4, hidden=8, lstm_layers=1, learning_starts=8, batch_size=8,
                      train_freq=train_freq, gradient_steps=gradient_steps)
    agent.train(DriftVecEnv(num_envs=2), 40)
    assert agent.n_updates == updates
    with pytest.raises(ValueError, match="train_freq"):
        SACAgent(DriftVecEnv().obs_dim, 4, window=4, train_freq=0)
    with pytest.raises(ValueError, match="gradient_steps"):
        SACAgent(DriftVecEnv().obs_dim, 4, window=4, gradient_steps=0)


def test_sac_latent_l2_pulls_a_saturated_all_cash_actor_back_and_is_off_by_default():
    """Every risky mu at -30: the weights are all cash and their gradient is ~exp(-30), so the plain actor
    loss cannot move mu; latent_l2 adds 2 * latent_l2 * mu / N per asset, which does."""
    env = DriftVecEnv(num_envs=4)
    obs_dim = env.obs_dim
    moved = {}
    for l2 in (0.0, 0.1):
        agent = SACAgent(obs_dim, 4, seed=3, window=4, hidden=16, lstm_layers=1, learning_starts=16, batch_size=16,
                         gradient_steps=1, actor_lr=1e-2, latent_l2=l2)
        with torch.no_grad():
            agent.nets["actor"].fc2.bias[0] = -30.0
        obs = torch.as_tensor(env.reset(seed=0)[0])
        latent, weights, mask1 = agent._split(obs)
        before = agent._actor_out(latent, weights)[0].detach()
        with torch.no_grad():
            assert float(agent._sample(latent, weights, mask1)[0][:, -1].min()) > 1 - 1e-9  # all cash
        agent.train(env, 64)
        latent, weights, _ = agent._split(obs)
        moved[l2] = float((agent._actor_out(latent, weights)[0].detach() - before).mean())
    assert abs(moved[0.0]) < 0.05 and moved[0.1] > 0.5, moved
    assert SACAgent(obs_dim, 4, window=4).config.latent_l2 == 0.0  # off by default: Haarnoja et al. as published
    with pytest.raises(ValueError, match="latent_l2"):
        SACAgent(obs_dim, 4, window=4, latent_l2=-1.0)
