"""agents/portfolio_gradient.py: the differentiable one-day outcome against the env's accounting and a
hand-worked case; no look-ahead; determinism; a warm start that learns a drifting asset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import portfolio_gradient as pg
from agents.common import ObsLayout
from agents.ppo_agent import PPOAgent
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv

torch.set_num_threads(1)
WINDOW, N = 4, 3


def _env(seed: int = 0, max_weight: float = 1.0, closed: bool = True, **options) -> CryptoHedgeFundEnv:
    """Asset 0 drifts +1%/day, the others are zero-mean noise; features = yesterday's return in % and 1."""
    rng = np.random.default_rng(seed)
    t_days = 200
    r = rng.normal(0.0, 0.01, (t_days, N))
    r[:, 0] = 0.01 + 0.005 * rng.standard_normal(t_days)
    prices = 100 * np.cumprod(1 + r, axis=0)
    feats = np.stack([np.vstack([np.zeros((1, N)), r[:-1]]) / 0.01, np.ones((t_days, N))], axis=-1)
    tradable = np.ones((t_days, N), bool)
    if closed:
        tradable[np.arange(t_days) % 7 >= 5, 2] = False  # asset 2 trades on weekdays only
    return CryptoHedgeFundEnv(prices, feats, transaction_costs=[0.001, 0.002, 0.003], tradable=tradable,
                              slippage_costs=[0.0005, 0.0, 0.001], window=WINDOW, episode_length=32,
                              max_weight=max_weight, **options)


def test_step_growth_hand_worked():
    # prev (0.5, 0, 0.5) -> target (0.2, 0.3, 0.5): cost = 0.01 * (0.3 + 0.3) = 0.006;
    # value = 0.2 * 1.1 + 0.3 * 0.9 + 0.5 = 0.99; growth = 0.994 * 0.99 = 0.98406.
    target = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    prev = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64)
    g, nxt = pg.step_growth(target, prev, torch.tensor([[0.1, -0.1]], dtype=torch.float64),
                            torch.tensor([0.01, 0.01], dtype=torch.float64))
    assert float(g) == pytest.approx(np.log(0.98406), abs=1e-12)
    np.testing.assert_allclose(nxt.numpy(), [[0.22 / 0.99, 0.27 / 0.99, 0.5 / 0.99]])


def test_env_targets_and_growth_match_the_env_exactly():
    env = _env(max_weight=0.4)
    tape = pg.tape_from_core(env.core)
    rng = np.random.default_rng(1)
    _, info = env.reset(options={"start": WINDOW - 1, "end": WINDOW + 40})
    prev, nav = info["weights"], info["nav"]
    for t in range(WINDOW - 1, WINDOW + 40):
        action = rng.dirichlet(np.ones(N + 1))
        action[:N] *= tape.tradable[t]  # a policy gives closed assets no weight
        action /= action.sum()
        _, _, _, _, info = env.step(action)
        p = torch.as_tensor(prev[None], dtype=torch.float64)
        target = pg.env_targets(torch.as_tensor(action[None]), p, torch.as_tensor(tape.tradable[t][None], dtype=torch.float64),
                                tape.max_weight)
        g, nxt = pg.step_growth(target, p, torch.as_tensor(tape.returns[t][None]), torch.as_tensor(tape.cost_rate))
        np.testing.assert_allclose(target.numpy()[0], info["target_weights"], atol=1e-12)
        assert float(g) == pytest.approx(np.log(info["nav"] / nav), abs=1e-12)
        np.testing.assert_allclose(nxt.numpy()[0], info["weights"], atol=1e-12)
        prev, nav = info["weights"], info["nav"]


def _agent(env: CryptoHedgeFundEnv, seed: int = 0) -> PPOAgent:
    return PPOAgent(env.core.obs_dim, N + 1, layout=ObsLayout(WINDOW, N, 2), window=WINDOW, encoder="mlp",
                    d_model=16, seed=seed)


def _params(module: torch.nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in module.parameters()]


def test_no_look_ahead_and_deterministic():
    cfg = pg.PortfolioGradientConfig(steps=5, batch_days=8, rollout=3, seed=3)
    env = _env()
    last = 120
    layout = ObsLayout(WINDOW, N, 2)
    policy = _agent(env).policy_module()
    pg.train_policy(policy, pg.tape_from_core(env.core, last=last), layout, cfg)
    env2 = _env()
    env2.core.market.returns[last:] = 0.5  # a different future (returns[last] is earned after day last)
    env2.core.features[last:] = 7.0
    policy2 = _agent(env2).policy_module()
    pg.train_policy(policy2, pg.tape_from_core(env2.core, last=last), layout, cfg)
    for a, b in zip(_params(policy), _params(policy2)):
        np.testing.assert_array_equal(a, b)


def test_warm_start_learns_the_drifting_asset_and_loads_into_the_agent():
    env = _env(max_weight=1.0, closed=False)
    agent = _agent(env)
    obs = torch.as_tensor(np.stack([env.core.observation(t, np.full(N + 1, 0.25)) for t in range(50, 150, 10)]))
    before = agent.policy_module()(obs).detach().numpy()
    hist = pg.warm_start(agent, env.core, pg.PortfolioGradientConfig(steps=80, batch_days=16, rollout=2,
                                                                      learning_rate=3e-3))
    after = agent.policy_module()(obs).detach().numpy()
    assert before[:, 0].mean() < 0.35  # starts near uniform
    assert after[:, 0].mean() > 0.8  # Kelly on a +1%/day asset with 0.5% noise: all in
    assert np.mean(hist["objective"][-10:]) > np.mean(hist["objective"][:10])
    # the agent's stochastic action is centred on the trained policy (PPO continues from it)
    np.testing.assert_allclose(agent.get_action(obs.numpy(), deterministic=True), after, atol=1e-5)


def test_risk_penalties_and_bad_config():
    g = torch.tensor([0.02, -0.01, 0.0, -0.03])
    assert float(pg.objective(g)) == pytest.approx(-0.005)
    assert float(pg.objective(g, risk_aversion=2.0)) == pytest.approx(-0.005 - 2.0 * float(g.var(unbiased=False)))
    assert float(pg.objective(g, downside=1.0)) == pytest.approx(-0.005 - (0.0001 + 0.0009) / 4)
    with pytest.raises(ValueError):
        pg.PortfolioGradientConfig(steps=0)
    with pytest.raises(ValueError):
        pg.PortfolioGradientConfig(risk_aversion=-1.0)
    with pytest.raises(ValueError):
        pg.copy_policy_into(_agent(_env()), torch.nn.Linear(2, 2))


def test_sharpe_objective_hand_worked_scale_free_and_exclusive():
    g = torch.tensor([0.02, -0.01, 0.0, -0.03])
    std = float(np.std([0.02, -0.01, 0.0, -0.03]))  # population std, as the objective uses
    assert float(pg.objective(g, sharpe=True)) == pytest.approx(-0.005 / std, rel=1e-5)
    assert float(pg.objective(g, sharpe=True, cash_log_growth=0.001)) == pytest.approx(-0.006 / std, rel=1e-5)
    # scale-free: doubling the excess log growth over cash (twice the risky sleeve) leaves it unchanged
    rf = 1e-4
    assert float(pg.objective(rf + 2 * (g - rf), sharpe=True, cash_log_growth=rf)) == pytest.approx(
        float(pg.objective(g, sharpe=True, cash_log_growth=rf)), rel=1e-5)
    with pytest.raises(ValueError, match="scale-free"):
        pg.PortfolioGradientConfig(sharpe=True, risk_aversion=1.0)


def test_sharpe_warm_start_times_a_visible_stress_regime():
    """A flag seen at day t's close says whether t -> t+1 is calm (+0.2%, 1% noise) or stress (-0.2%, 4% noise)
    for every asset: the Sharpe objective holds risk on calm days and cash on stress days."""
    rng = np.random.default_rng(0)
    t_days = 300
    flag = (rng.random(t_days) < 0.3).astype(float)
    r = np.where(flag[:, None] == 1, -0.002 + 0.04 * rng.standard_normal((t_days, N)),
                 0.002 + 0.01 * rng.standard_normal((t_days, N)))
    prices = 100 * np.vstack([np.ones((1, N)), np.cumprod(1 + r[:-1], axis=0)])  # r[t] is close t -> t+1
    feats = np.stack([np.repeat(2 * flag[:, None] - 1, N, axis=1), np.ones((t_days, N))], axis=-1)
    env = CryptoHedgeFundEnv(prices, feats, transaction_costs=[0.001] * N, window=WINDOW, episode_length=32,
                             max_weight=1.0)
    agent = _agent(env)
    hist = pg.warm_start(agent, env.core, pg.PortfolioGradientConfig(steps=150, batch_days=16, rollout=2,
                                                                      learning_rate=3e-3, sharpe=True))
    days = np.arange(WINDOW, t_days - 2)
    obs = torch.as_tensor(np.stack([env.core.observation(t, np.full(N + 1, 0.25)) for t in days]))
    risky = 1.0 - agent.policy_module()(obs).detach().numpy()[:, -1]
    assert risky[flag[days] == 0].mean() > 0.8 and risky[flag[days] == 1].mean() < 0.2
    assert np.mean(hist["objective"][-10:]) > np.mean(hist["objective"][:10])


def test_holdout_early_stopping_keeps_the_best_parameters():
    env = _env(max_weight=1.0, closed=False)
    tape = pg.tape_from_core(env.core)
    layout = ObsLayout(WINDOW, N, 2)
    cfg = pg.PortfolioGradientConfig(steps=30, batch_days=8, rollout=2, learning_rate=3e-3, holdout_days=40,
                                     eval_every=10, turnover_penalty=0.001)
    policy = _agent(env).policy_module()
    hist = pg.train_policy(policy, tape, layout, cfg)
    assert hist["holdout_step"] == [0, 10, 20, 30]
    assert hist["best_step"] == [float(hist["holdout_step"][int(np.argmax(hist["holdout"]))])]
    # the kept parameters score the best holdout objective (re-measured from equal weight)
    builder = pg.IndexReplayBuffer(tape.features, tape.tradable.astype(np.float32), layout, capacity=1)
    days = np.arange(tape.last - 40, tape.last - 1)
    w0 = np.zeros((days.size, N + 1))
    w0[:, :-1] = 1.0 / N
    with torch.no_grad():
        g, _ = pg.rollout_growth(policy, tape, builder, days, w0, 2)
    assert float(pg.objective(g)) == pytest.approx(max(hist["holdout"]), abs=1e-6)


def test_a_residual_policy_is_scored_as_the_env_books_it():
    """With env.action_prior the tape carries the prior and the rollout tilts the policy's weights by it: the
    rollout's post-trade weights and log growths equal the env's steps for the same policy (float32 policy)."""
    from agents.replay_buffer import IndexReplayBuffer

    env = _env(max_weight=0.6, action_prior="vol_target", prior_lookback=10, prior_vol_target=0.05)
    tape = pg.tape_from_core(env.core)
    assert tape.prior is env.core.market.prior and tape.prior is not None
    layout = ObsLayout(WINDOW, N, 2)
    policy = _agent(env).policy_module()
    builder = IndexReplayBuffer(tape.features, tape.tradable.astype(np.float32), layout, capacity=1)
    obs, info = env.reset(options={"start": 30, "end": 40})
    w0 = info["weights"][None]
    g, targets = pg.rollout_growth(policy, tape, builder, np.array([30]), w0, 8)
    g = g.detach()
    nav = info["nav"]
    for k in range(8):
        with torch.no_grad():
            action = policy(torch.as_tensor(obs[None])).double().numpy()[0]
        obs, _, _, _, info = env.step(action)
        np.testing.assert_allclose(targets[0, k], info["target_weights"], atol=1e-6)
        assert float(g[k]) == pytest.approx(np.log(info["nav"] / nav), abs=1e-6)
        nav = info["nav"]
    # the prior is what moved the weights: the same rollout without it lands elsewhere
    _, untilted = pg.rollout_growth(policy, tape._replace(prior=None), builder, np.array([30]), w0, 1)
    assert np.abs(untilted[0, 0] - targets[0, 0]).max() > 0.05
