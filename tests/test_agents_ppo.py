"""PPO with the Transformer policy: GAE by hand, learning on the drift market, determinism, resume, attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agents_env import DriftEnv, DriftVecEnv

from agents.common import ObsLayout
from agents.ppo_agent import PPOAgent, PPOConfig, gae
from agents.transformer_encoder import TransformerActorCritic, _run_with_attention

torch.set_num_threads(1)

SMALL = dict(window=4, d_model=32, dim_feedforward=64, day_layers=1, init_log_std=0.0)
FAST = dict(SMALL, n_steps=64, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.5, gae_lambda=0.9,
            target_kl=0.05)


def test_gae_matches_hand_computation():
    # two steps, one env, episode ends after step 0: A1 = r1 + g*V_last - V1; A0 = r0 - V0 (no bootstrap)
    rewards = np.array([[1.0], [2.0]])
    values = np.array([[0.5], [1.0]])
    dones = np.array([[1.0], [0.0]])
    adv, ret = gae(rewards, values, dones, np.array([3.0]), gamma=0.9, lam=0.8)
    a1 = 2.0 + 0.9 * 3.0 - 1.0
    np.testing.assert_allclose(adv[:, 0], [1.0 - 0.5, a1])
    np.testing.assert_allclose(ret, adv + values)
    # without the episode end, A0 picks up gamma*lambda*A1
    adv2, _ = gae(rewards, values, np.zeros((2, 1)), np.array([3.0]), gamma=0.9, lam=0.8)
    assert adv2[0, 0] == pytest.approx(1.0 + 0.9 * 1.0 - 0.5 + 0.9 * 0.8 * a1)


def test_ppo_puts_most_weight_in_the_drifting_asset():
    env = DriftVecEnv(num_envs=8, noise_vol=0.01)
    agent = PPOAgent(env.obs_dim, 4, seed=0, **FAST)
    seen = []
    agent.train(env, 10240, callback=lambda step, m: seen.append((step, m["approx_kl"])))
    assert seen[-1][0] == 10240 and len(seen) == 20
    obs, _ = DriftVecEnv(num_envs=16, noise_vol=0.01).reset(seed=123)
    w = agent.get_action(obs, deterministic=True)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert w[:, 0].mean() > 0.8, w.mean(0)


def test_same_seed_same_weights_and_resume_is_bit_identical(tmp_path):
    cfg = dict(FAST, n_steps=16)
    a = PPOAgent(DriftVecEnv().obs_dim, 4, seed=3, **cfg)
    env_a = DriftVecEnv(num_envs=2)
    a.train(env_a, 128)
    b = PPOAgent(DriftVecEnv().obs_dim, 4, seed=3, **cfg)
    env_b = DriftVecEnv(num_envs=2)
    b.train(env_b, 128, callback=lambda step, _: step < 64)  # stop after the update reaching step 64
    assert b.global_step == 64
    b.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = PPOAgent.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.train(env_b, 128)
    for (name, pa), pr in zip(a.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(pa, pr), name
    assert resumed.global_step == a.global_step == 128
    c = PPOAgent(DriftVecEnv().obs_dim, 4, seed=4, **cfg)
    c.train(DriftVecEnv(num_envs=2), 128)
    assert not torch.equal(c.net.actor_head.weight, a.net.actor_head.weight)


def test_quick_start_loop_with_single_env_and_five_value_step():
    env = DriftEnv(episode_length=8)
    agent = PPOAgent(env.observation_space.shape[0], 4, seed=0, **dict(FAST, n_steps=16, batch_size=8))
    state, _ = env.reset(seed=0)
    updates = []
    before = agent.net.actor_head.weight.clone()
    for _ in range(40):
        action = agent.get_action(state)
        assert action.shape == (4,) and abs(action.sum() - 1) < 1e-5
        next_state, reward, terminated, truncated, _ = env.step(action)
        out = agent.learn(state, action, reward, next_state, terminated, truncated)
        if out is not None:
            updates.append(out)
        state = env.reset()[0] if terminated or truncated else next_state
    assert len(updates) == 2 and np.isfinite(updates[-1]["policy_loss"])
    assert not torch.equal(before, agent.net.actor_head.weight)


def first_minibatch_ratios(agent: PPOAgent) -> list[torch.Tensor]:
    """Spy on ``agent._evaluate`` (what the update calls): the probability ratios of the first minibatch."""
    seen: list[torch.Tensor] = []
    evaluate = agent._evaluate

    def spy(batch):
        out = evaluate(batch)
        if not seen:
            logp, _ = agent.net.log_prob_entropy(out[0], out[2], batch.latents)
            seen.append((logp - batch.old_log_prob).exp().detach())
        return out

    agent._evaluate = spy
    return seen


def test_first_minibatch_log_probs_equal_the_rollouts_in_the_quick_start_loop():
    """Before the first optimiser step the policy is the behaviour policy: every ratio is 1 (to 1e-6),
    including for the latent the quick-start path recovers from the weights the env received."""
    env = DriftEnv(episode_length=8)
    agent = PPOAgent(env.observation_space.shape[0], 4, seed=0, **dict(FAST, n_steps=16, batch_size=8))
    ratios = first_minibatch_ratios(agent)
    state, _ = env.reset(seed=0)
    for _ in range(16):
        action = agent.get_action(state)
        next_state, reward, terminated, truncated, _ = env.step(action)
        agent.learn(state, action, reward, next_state, terminated, truncated)
        state = env.reset()[0] if terminated or truncated else next_state
    assert len(ratios) == 1 and ratios[0].shape == (8,)
    torch.testing.assert_close(ratios[0], torch.ones(8), atol=1e-6, rtol=0)


def test_single_gymnasium_env_trains_through_the_adapter():
    agent = PPOAgent(DriftEnv().observation_space.shape[0], 4, seed=0, **dict(FAST, n_steps=40, batch_size=20))
    metrics = agent.train(DriftEnv(episode_length=10), 80)
    assert agent.global_step == 80 and np.isfinite(metrics["episode_return"])


def test_attention_maps_are_row_stochastic_and_reproduce_the_encoder():
    layout = ObsLayout(6, 3, 2)
    net = TransformerActorCritic(layout, d_model=16, n_heads=2, day_layers=2).eval()
    obs = torch.randn(4, layout.obs_dim)
    maps = net.attention_maps(obs)
    assert maps["days"].shape == (4, 2, 6, 6) and maps["assets"].shape == (4, 1, 4, 4)
    np.testing.assert_allclose(maps["days"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps["assets"].sum(-1), 1.0, atol=1e-5)
    feats, _, _ = layout.split(obs)
    with torch.no_grad():
        ref = net.day_encoder(net._day_tokens(feats))
        mine, _ = _run_with_attention(net.day_encoder, net._day_tokens(feats))
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_config_rejects_bad_values_and_layout_mismatch():
    with pytest.raises(ValueError, match="n_steps"):
        PPOConfig(n_steps=0)
    with pytest.raises(ValueError):
        PPOAgent(100, 4, window=4)
    with pytest.raises(TypeError):
        PPOAgent(DriftVecEnv().obs_dim, 4, windw=4)


def test_reward_scaler_tracks_the_variance_of_discounted_returns():
    from agents.ppo_agent import RewardScaler

    rng = np.random.default_rng(0)
    scaler = RewardScaler(gamma=0.9)
    g = np.zeros(3)
    seen = []
    for step in range(50):
        r = rng.normal(0.01, 0.02, 3)
        done = np.array([step % 10 == 9, False, step % 7 == 6])
        out = scaler(r, done)
        g = 0.9 * g + r
        seen.append(g.copy())
        if step >= 20:  # once the prior (count 1e-4, var 1) has washed out
            np.testing.assert_allclose(out, r / np.sqrt(np.var(np.concatenate(seen)) + 1e-8), rtol=1e-3)
        g[done] = 0.0


def test_gae_matches_stable_baselines3_rollout_buffer():
    """Independent check: SB3's RolloutBuffer computes the same advantages and returns."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rng = np.random.default_rng(0)
    t_len, m = 12, 3
    rewards, values = rng.normal(size=(t_len, m)), rng.normal(size=(t_len, m))
    dones = (rng.random((t_len, m)) < 0.2).astype(float)
    last_v = rng.normal(size=m)
    adv, ret = gae(rewards, values, dones, last_v, gamma=0.97, lam=0.9)
    buf = RolloutBuffer(t_len, spaces.Box(-1, 1, (2,)), spaces.Box(0, 1, (2,)), device="cpu", gae_lambda=0.9,
                        gamma=0.97, n_envs=m)
    for t in range(t_len):
        starts = np.zeros(m) if t == 0 else dones[t - 1]  # SB3 marks the first step of the next episode
        buf.add(np.zeros((m, 2)), np.zeros((m, 2)), rewards[t], starts, torch.as_tensor(values[t]), torch.zeros(m))
    buf.compute_returns_and_advantage(torch.as_tensor(last_v), dones[-1])
    np.testing.assert_allclose(buf.advantages, adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buf.returns, ret, rtol=1e-5, atol=1e-6)


def test_log_prob_and_entropy_match_torch_distributions_on_tradable_assets():
    layout = ObsLayout(3, 4, 2)
    net = TransformerActorCritic(layout, d_model=16, n_heads=2, day_layers=1, init_log_std=-0.3)
    with torch.no_grad():
        net.log_std.copy_(torch.tensor([-0.3, 0.1, 0.5, -1.0]))
    logits = torch.randn(5, 5)
    mask1 = torch.tensor([[1, 0, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 1], [0, 1, 1, 1, 1.0]])
    z = torch.randn(5, 4)
    logp, ent = net.log_prob_entropy(logits, mask1, z)
    dist = torch.distributions.Normal(logits[:, :4] - logits[:, 4:], net.log_std.exp())
    m = mask1[:, :4]
    torch.testing.assert_close(logp, (dist.log_prob(z) * m).sum(-1))
    torch.testing.assert_close(ent, (dist.entropy() * m).sum(-1))
    w = TransformerActorCritic.weights_from_latent(z, mask1)
    assert torch.all(w[:, :4][m == 0] == 0) and torch.allclose(w.sum(-1), torch.ones(5))
