"""Property tests (hypothesis): accounting invariants over random markets and random actions."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_env_support import make_store

from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv

SETTINGS = settings(max_examples=25, deadline=None)
N_ASSETS = 4


def scores(n_steps: int) -> st.SearchStrategy:
    """Lists of raw actions: non-negative scores with exact zeros and all-zero rows mixed in."""
    value = st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.floats(1e-9, 1e3))
    return st.lists(st.lists(value, min_size=N_ASSETS + 1, max_size=N_ASSETS + 1),
                    min_size=n_steps, max_size=n_steps)


def market_env(seed: int, **cfg) -> tuple:
    store = make_store(n_days=60, n_assets=N_ASSETS, seed=seed, late={1: 20})
    env = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=5, **cfg))
    return store, env


@SETTINGS
@given(seed=st.integers(0, 10_000), actions=scores(30), cap=st.sampled_from([0.3, 0.5, 1.0]),
       leverage=st.sampled_from([1.0, 1.5, 3.0]))
def test_zero_costs_nav_equals_value_of_holdings(seed, actions, cap, leverage):
    """Frictionless: NAV after each step is the value of the shares bought at t's close, at t+1's close.

    With margin (leverage > 1) the cash leg is a loan (negative cash, no interest here) and gross
    exposure stays within the leverage limit.
    """
    margin = {"margin": True, "max_leverage": leverage, "maintenance_margin": 0.0, "borrow_rate": 0.0} \
        if leverage > 1 else {}
    store, env = market_env(seed, cost_scale=0.0, max_weight=cap * leverage, **margin)
    env.reset(options={"start": 10})
    nav, t = env.nav, 10
    for action in actions:
        info = env.step(np.array(action))[4]
        target = info["target_weights"]
        assert info["cost"] == 0.0
        price_now = np.nan_to_num(store.close[t], nan=1.0)
        price_next = np.nan_to_num(store.close[t + 1], nan=1.0)
        shares = target[:-1] * nav / price_now
        assert np.all(shares[~store.listed[t]] == 0)  # nothing is ever held in an unlisted asset
        value = float(shares @ price_next + target[-1] * nav)
        assert abs(target.sum() - 1) < 1e-12 and np.all(target[:-1] >= 0)
        assert target[:-1].sum() <= leverage + 1e-12
        np.testing.assert_allclose(info["nav"], value, rtol=1e-12)
        np.testing.assert_allclose(info["weights"][:-1], shares * price_next / value, atol=1e-12)
        nav, t = info["nav"], t + 1


@SETTINGS
@given(seed=st.integers(0, 10_000), actions=scores(30), cap=st.sampled_from([0.3, 0.5, 1.0]),
       nav0=st.sampled_from([1e4, 1e6, 1e9]))
def test_weights_on_simplex_capped_costs_non_negative_closed_assets_held(seed, actions, cap, nav0):
    store, env = market_env(seed, max_weight=cap, initial_nav=nav0)
    env.reset(options={"start": 10})
    weights, nav, t = env.weights, env.nav, 10
    for action in actions:
        info = env.step(np.array(action))[4]
        target, after = info["target_weights"], info["weights"]
        assert info["fee"] >= 0 and info["slippage"] >= 0 and info["cost"] >= 0
        for w in (target, after):
            assert np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-12
        open_ = store.tradable[t]
        assert np.all(target[:-1][open_] <= cap + 1e-12)
        # A closed (or unlisted) asset keeps its weight: the target equals the drifted weight ...
        np.testing.assert_array_equal(target[:-1][~open_], weights[:-1][~open_])
        # ... and the new weight differs from it by the price drift only.
        post = nav - info["cost"]
        drift = weights[:-1] * (1 + store.returns[t]) * post / info["nav"]
        np.testing.assert_allclose(after[:-1][~open_], drift[~open_], rtol=1e-12, atol=1e-15)
        assert np.all(after[:-1][~store.listed[t + 1]] == 0)
        weights, nav, t = after, info["nav"], t + 1


@SETTINGS
@given(seed=st.integers(0, 10_000), raw=st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_action_map_is_identity_on_feasible_simplex_points(seed, raw):
    store, env = market_env(seed, max_weight=0.5, cost_scale=0.0)
    env.reset(options={"start": 10})  # two steps later is a Saturday: assets 2 and 3 are closed
    env.step(np.array([0.25, 0.25, 0.25, 0.25, 0.0]))
    env.step(np.array([0.25, 0.25, 0.25, 0.25, 0.0]))
    t, w = env.day, env.weights
    open_ = store.tradable[t]
    budget = 1.0 - w[:-1][~open_].sum()
    free = np.array(raw[: N_ASSETS + 1])
    free[:-1][~open_] = 0.0
    assume(free.sum() > 1e-3)
    feasible = free / free.sum() * budget
    assume(np.all(feasible[:-1] <= 0.5))
    feasible[:-1][~open_] = w[:-1][~open_]
    info = env.step(feasible)[4]
    np.testing.assert_allclose(info["target_weights"], feasible, atol=1e-12)
    assert info["interventions"] == []


@SETTINGS
@given(returns=st.lists(st.floats(-0.45, 0.3), min_size=1, max_size=25),
       leverage=st.floats(1.1, 2.0), mm=st.floats(0.05, 0.5))
def test_liquidation_exactly_at_first_breach_of_maintenance_margin(returns, leverage, mm):
    """Re-levered to L every day with no costs: equity 1 + L r against mm * gross L (1 + r)."""
    margins = [(1 + leverage * r) - mm * leverage * (1 + r) for r in returns]
    assume(all(abs(m) > 1e-9 for m in margins))
    breach = next((k for k, m in enumerate(margins) if m < 0), None)
    prices = 100.0 * np.cumprod([1.0, *[1 + r for r in returns], 1.0])[:, None]
    env = CryptoHedgeFundEnv(prices, np.zeros((len(prices), 1, 1)), 0.0, window=1, margin=True,
                             max_leverage=leverage, max_weight=leverage, borrow_rate=0.0,
                             maintenance_margin=mm, liquidation_penalty=0.02)
    env.reset(options={"start": 0, "end": len(returns)})
    for k in range(len(returns)):
        _, _, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
        assert terminated == (k == breach), f"step {k}, first breach at {breach}"
        if terminated:
            assert info["interventions"] == ["liquidation"]
            return
    assert breach is None and truncated
