"""The seeds' own usage, verbatim: ``from agents import PPOAgent``, ``from environments import CryptoHedgeFundEnv``,
``PPOAgent(state_dim, action_dim)`` on the env's flat observation and a ``get_action``/``step`` loop with
gymnasium's five-value step; plus the packages' public names."""

from __future__ import annotations

import numpy as np
import torch

from data.feature_engineering import build_feature_store
from data.synthetic import generate_market
from data.universe import build_universe


def synthetic_prices_and_features() -> tuple[np.ndarray, np.ndarray]:
    """Closes (T, N) (NaN before listing) and normalised features (T, N, F) of a small seeded synthetic market."""
    universe = build_universe({"growth": ["BTC-USD", "ETH-USD"], "traditional": ["SPY"], "stable": ["BIL"]})
    store = build_feature_store(generate_market(universe, "2021-01-01", "2022-06-30", seed=0), "2021-12-31")
    return store.close, store.features


def test_the_quick_start_runs_verbatim():
    torch.set_num_threads(1)
    prices, features = synthetic_prices_and_features()
    n_assets, n_features = features.shape[1], features.shape[2]
    state_dim = 60 * n_assets * n_features + 2 * n_assets + 1  # default 60-day window, weights, tradable mask
    action_dim = n_assets + 1  # one weight per asset plus cash

    # -- the quick start, as the README shows it ---------------------------------------------------------
    from agents import PPOAgent
    from environments import CryptoHedgeFundEnv

    agent = PPOAgent(state_dim, action_dim)
    env = CryptoHedgeFundEnv(prices, features)
    state, info = env.reset(seed=0)
    for _ in range(5):
        action = agent.get_action(state)
        state, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            state, info = env.reset()
    # ------------------------------------------------------------------------------------------------------

    assert env.observation_space.shape == (state_dim,) and env.action_space.shape == (action_dim,)
    assert state.shape == (state_dim,) and state.dtype == np.float32
    assert action.shape == (action_dim,) and action.dtype == np.float32
    assert (action >= 0).all() and abs(float(action.sum()) - 1.0) < 1e-6
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    # The default reward is the step's log NAV growth, net of costs (no penalty configured).
    nav_before = env.nav
    _, reward, *_, info = env.step(agent.get_action(state, deterministic=True))
    assert reward == np.log(info["nav"] / nav_before)
    # A flat observation gives a one-day layout whose "features" are the whole 60-day window.
    assert agent.layout.window == 1 and agent.layout.n_features == 60 * n_features
    # get_action(obs) answers one observation with one weight vector; a batch gives a batch.
    assert agent.get_action(np.stack([state, state])).shape == (2, action_dim)


def test_packages_export_their_public_classes():
    import agents
    import deployment
    import environments
    from agents.ppo_agent import PPOAgent
    from agents.registry import REGISTRY
    from deployment.deployed_fund import DeployedCryptoHedgeFund
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from environments.vector_env import BatchedHedgeFundEnv

    assert agents.PPOAgent is PPOAgent and agents.REGISTRY is REGISTRY
    assert {agents.REGISTRY[a].agent_class for a in agents.ALGOS} == {
        agents.PPOAgent, agents.SACAgent, agents.DDPGAgent, agents.Forecaster}
    assert environments.CryptoHedgeFundEnv is CryptoHedgeFundEnv
    assert environments.BatchedHedgeFundEnv is BatchedHedgeFundEnv
    assert deployment.DeployedCryptoHedgeFund is DeployedCryptoHedgeFund
    assert set(agents.__all__) <= set(dir(agents)) and "CryptoHedgeFundEnv" in dir(environments)
