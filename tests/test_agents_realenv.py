"""The agents on the project's own environment (environments/), built on a small synthetic drift market."""

from __future__ import annotations

import numpy as np
import torch

import environments.crypto_hedge_fund_env as env_mod
import environments.vector_env as vec_mod
from agents.common import ObsLayout
from agents.ppo_agent import PPOAgent
from agents.replay_buffer import IndexReplayBuffer, index_source
from agents.sac_agent import SACAgent

torch.set_num_threads(1)

WINDOW, N = 4, 3


def _env(num_envs: int, seed: int = 0, closed: bool = False):
    """Asset 0 drifts +1%/day, the others are zero-mean noise; features = the day's return in % and 1."""
    rng = np.random.default_rng(seed)
    t_days = 300
    r = rng.normal(0.0, 0.01, (t_days, N))
    r[:, 0] = 0.01 + 0.005 * rng.standard_normal(t_days)
    prices = 100 * np.cumprod(1 + r, axis=0)
    feats = np.stack([np.vstack([np.zeros((1, N)), r[:-1]]) / 0.01, np.ones((t_days, N))], axis=-1)
    tradable = np.ones((t_days, N), bool)
    if closed:
        tradable[np.arange(t_days) % 7 >= 5, 2] = False  # asset 2 trades on weekdays only
    single = env_mod.CryptoHedgeFundEnv(prices, feats, transaction_costs=0.0, tradable=tradable, window=WINDOW,
                                        episode_length=32, max_weight=1.0)
    return vec_mod.BatchedHedgeFundEnv.like(single, num_envs)


def test_index_buffer_rebuilds_exactly_the_envs_observations():
    venv = _env(3, closed=True)
    src = index_source(venv)
    assert src is not None
    layout = ObsLayout(WINDOW, N, 2)
    buf = IndexReplayBuffer(src[0], src[1], layout, capacity=100)
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        days = venv.days
        np.testing.assert_array_equal(buf.observations(days, layout.split_numpy(obs)[1]), obs)
        next_obs, _, term, trunc, infos = venv.step(rng.dirichlet(np.ones(N + 1), size=3))
        real_next = next_obs.copy()
        done = term | trunc
        if done.any():
            real_next[done] = infos["final_obs"][done]
        np.testing.assert_array_equal(buf.observations(infos["t"], infos["weights"].astype(np.float32)), real_next)
        obs = next_obs


def test_sac_trains_on_the_batched_env_with_a_day_index_buffer():
    venv = _env(2)
    agent = SACAgent(venv.obs_dim, N + 1, window=WINDOW, hidden=8, learning_starts=32, batch_size=16, seed=0)
    agent.train(venv, 80)
    assert isinstance(agent.buffer, IndexReplayBuffer) and len(agent.buffer) == 80
    assert agent.n_updates > 0
    mask_closed = venv.reset(seed=1)[0]
    w = agent.get_action(mask_closed, deterministic=True)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)


def test_ppo_learns_the_drift_on_the_real_env():
    venv = _env(8)
    agent = PPOAgent(venv.obs_dim, N + 1, window=WINDOW, d_model=32, dim_feedforward=64, day_layers=1,
                     init_log_std=0.0, n_steps=64, batch_size=128, learning_rate=1e-3, gamma=0.5,
                     gae_lambda=0.9, target_kl=0.05, seed=0)
    agent.train(venv, 12288)
    obs, _ = venv.reset(seed=7)
    w = agent.get_action(obs, deterministic=True)
    assert w[:, 0].mean() > 0.8, w.mean(0)


def test_ppo_index_rollout_matches_stored_observations_exactly():
    """Day-index rollout storage and whole-observation storage give bit-identical training (on the
    straightforward forward; the per-day forward is checked against it in test_agents_ppo_days.py)."""
    cfg = dict(window=WINDOW, d_model=16, n_heads=2, dim_feedforward=32, day_layers=1, n_steps=16, batch_size=16,
               n_epochs=2, seed=3, per_day_market=False)
    a = PPOAgent(_env(2).obs_dim, N + 1, index_rollout=True, **cfg)
    b = PPOAgent(_env(2).obs_dim, N + 1, index_rollout=False, **cfg)
    a.train(_env(2), 64)
    b.train(_env(2), 64)
    for (name, pa), pb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(pa, pb), name
