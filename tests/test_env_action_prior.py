"""The residual policy's prior (``EnvConfig.action_prior``): the vol-target table by hand, the tilt by
hand, the uniform action trading to the rule, no look-ahead, and the boundaries that must refuse it."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from test_env_support import make_store

from data.market import DataError
from environments.action_prior import prior_table, tilt, vol_target_weights
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
from environments.vector_env import BatchedHedgeFundEnv


def alternating_market(n_days: int = 12) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Two 7-day assets moving +-3% and +-1% together (up on even days), and a flat T-bill leg."""
    sign = np.where(np.arange(n_days) % 2 == 0, 1.0, -1.0)
    returns = np.stack([0.03 * sign, 0.01 * sign, np.zeros(n_days)], axis=1)
    return returns, np.ones((n_days, 3), dtype=bool), ("X-USD", "Y-USD", "BIL")


def test_vol_target_prior_by_hand():
    """At t = 6 the 5-day history is days 1..5: the sleeve (1/3 in X, 1/3 in Y) returns -c, +c, -c, +c, -c
    with c = 0.04 / 3; its mean is -c/5, the squared deviations sum to 3 (4c/5)^2 + 2 (6c/5)^2 = 4.8 c^2,
    so the sample std is c sqrt(1.2) and the annual volatility c sqrt(1.2) sqrt(365) = 27.9%. The scale
    0.2 / vol goes to X and Y (scale / 3 each) and what it frees, (1 - scale) 2/3, to the T-bill leg."""
    returns, listed, tickers = alternating_market()
    cfg = EnvConfig(window=2, max_weight=1.0, action_prior="vol_target", prior_vol_target=0.2,
                    prior_lookback=5, prior_floor=0.02)
    table = prior_table(cfg, returns, listed, tickers)
    c = 0.04 / 3
    scale = 0.2 / (c * np.sqrt(1.2) * np.sqrt(365))
    assert 0.70 < scale < 0.73
    rule = np.array([scale / 3, scale / 3, 1 / 3 + (1 - scale) * 2 / 3, 0.0])
    np.testing.assert_allclose(table[6], 0.98 * rule + 0.02 * np.full(4, 0.25), rtol=1e-12)
    # Day 0 and 1 have under two days of history: plain equal weight, no cash but the floor's.
    np.testing.assert_allclose(table[0], 0.98 * np.array([1 / 3, 1 / 3, 1 / 3, 0.0]) + 0.005)
    # The backtester's benchmark is this same rule.
    from evaluation.benchmarks import BENCHMARKS, EvaluationConfig
    ecfg = EvaluationConfig(lookback=5, momentum_days=5, vol_target=0.2)
    bench = BENCHMARKS["vol_target"].rule(returns[1:6], listed[6], 0.0, ecfg, 1.0, tickers=tickers)
    np.testing.assert_allclose(bench, rule[:3], rtol=1e-12)


def test_cap_sends_the_t_bill_excess_to_cash():
    returns, listed, tickers = alternating_market()
    w = vol_target_weights(returns[1:6], listed[6], 0.4, 0.2, tickers)
    scale = 0.2 / (0.04 / 3 * np.sqrt(1.2) * np.sqrt(365))
    np.testing.assert_allclose(w, [scale / 3, scale / 3, 0.4])  # 1 - sum stays in cash


def test_no_prior_by_default():
    returns, listed, tickers = alternating_market()
    assert prior_table(EnvConfig(window=2), returns, listed, tickers) is None
    # the price rows one decision reads (what a server must keep): lookback returns need one more close
    assert EnvConfig().prior_rows == 0
    assert EnvConfig(action_prior="vol_target", prior_lookback=10).prior_rows == 11


def prior_env(**cfg) -> tuple:
    store = make_store(n_days=90, n_assets=4, seed=3, late={}, weekday_assets=())
    config = EnvConfig(window=5, max_weight=1.0, slippage=False, action_prior="vol_target", prior_lookback=10,
                       prior_vol_target=0.3, **cfg)
    return store, config, CryptoHedgeFundEnv.from_store(store, config)


def test_uniform_action_trades_to_the_rule_and_a_tilt_by_hand():
    store, cfg, env = prior_env()
    prior = env.core.market.prior
    env.reset(seed=0, options={"start": 30})
    for t in range(30, 36):
        _, _, _, _, info = env.step(np.full(5, 0.2, dtype=np.float32))  # a zero latent's softmax
        np.testing.assert_allclose(info["target_weights"], prior[t], rtol=1e-12, atol=1e-15)
    # Doubling cash's score: cash target 2 p_c / (1 + p_c), every risky weight p_i / (1 + p_c).
    p = prior[36]
    _, _, _, _, info = env.step(np.array([1, 1, 1, 1, 2], dtype=np.float32))
    np.testing.assert_allclose(info["target_weights"], np.append(p[:4], 2 * p[4]) / (1 + p[4]), rtol=1e-12)
    assert p[4] > 0.05  # the test market is volatile enough for the rule to hold cash


def test_batched_env_applies_the_same_prior():
    store, cfg, env = prior_env()
    vec = BatchedHedgeFundEnv(store, cfg, 2)
    vec.reset(seed=0, options={"start": 40})
    env.reset(seed=0, options={"start": 40})
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(0, 1, 5).astype(np.float32)
        _, r_vec, _, _, info_vec = vec.step(np.stack([a, a]))
        _, r, _, _, info = env.step(a)
        np.testing.assert_array_equal(info_vec["nav"][0], info["nav"])
        assert r_vec[0] == r


def test_env_checker_passes_with_a_prior():
    check_env(prior_env()[2], skip_render_check=True)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(1, 89), seed=st.integers(0, 1000), floor=st.sampled_from([0.01, 0.2, 1.0]))
def test_prior_reads_no_return_from_day_t_on_and_stays_on_the_simplex(t, seed, floor):
    store = make_store(n_days=90, n_assets=4, seed=seed, late={1: 40})
    cfg = EnvConfig(window=5, max_weight=0.4, action_prior="vol_target", prior_lookback=10, prior_floor=floor)
    table = prior_table(cfg, store.returns, store.listed, store.tickers)
    changed = store.returns.copy()
    changed[t:] = np.random.default_rng(seed).normal(0, 0.5, changed[t:].shape)
    again = prior_table(cfg, changed, store.listed, store.tickers)
    np.testing.assert_array_equal(table[: t + 1], again[: t + 1])
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-12)
    listed_or_cash = np.concatenate([store.listed, np.ones((90, 1), dtype=bool)], axis=1)
    assert (table[listed_or_cash] > 0).all() and (table[~listed_or_cash] == 0).all()


@pytest.mark.parametrize("bad, match", [
    ({"action_prior": "momentum"}, "action_prior must be one of none, vol_target"),
    ({"prior_floor": 0.0}, "prior_floor must be in"),
    ({"prior_vol_target": -0.1}, "prior_vol_target must be positive"),
    ({"prior_lookback": 2}, "prior_lookback must be at least 5"),
])
def test_bad_prior_settings_are_one_sentence(bad, match):
    with pytest.raises(DataError, match=match):
        EnvConfig(**bad)


def test_benchmarks_run_without_the_agents_prior():
    from evaluation.backtester import benchmark_env_config

    assert benchmark_env_config(EnvConfig(action_prior="vol_target"), False).action_prior == "none"


def test_serving_reads_the_rule_and_computes_the_envs_prior():
    """``ServingSpec`` carries a residual run's env settings and ``prior_at`` on the store's last rows equals the
    env's prior table for that day."""
    from deployment.deployed_fund import ServingSpec

    store = make_store(n_days=90, n_assets=4, seed=5, late={1: 40})
    cfg = EnvConfig(window=5, max_weight=0.4, action_prior="vol_target", prior_lookback=10, prior_vol_target=0.3)
    config = {"experiment": {"env": {"window": 5, "max_weight": 0.4, "action_prior": "vol_target",
                                     "prior_lookback": 10, "prior_vol_target": 0.3}},
              "obs_layout": {"window": 5, "n_assets": 4, "n_features": 3}}
    manifest = {"tickers": list(store.tickers), "categories": list(store.categories),
                "feature_names": list(store.feature_names), "norm": {"mean": [0.0] * 3, "std": [1.0] * 3}}
    spec = ServingSpec.from_documents(config, manifest)
    assert spec.prior_env == cfg
    assert '"prior_lookback": 10' in spec.to_metadata()["action_prior"]
    table = prior_table(cfg, store.returns, store.listed, store.tickers)
    for t in (30, 45, 89):  # asset 1 lists on day 40: before, across and after its lookback
        np.testing.assert_allclose(spec.prior_at(store.close[: t + 1], store.listed[: t + 1]), table[t], rtol=1e-12)
    with pytest.raises(DataError, match="needs 11 days of prices"):
        spec.prior_at(store.close[:10], store.listed[:10])
    plain = ServingSpec.from_documents({"obs_layout": config["obs_layout"]}, manifest)
    assert plain.prior_env is None and plain.prior_at(store.close, store.listed) is None
    assert plain.to_metadata()["action_prior"] == "null"


def test_serving_tilt_matches_the_env_step_including_zero_scores():
    """``tilt`` (serving's side) gives the env's target for a policy output, and all cash when the scores are 0."""
    store, cfg, env = prior_env()
    env.reset(seed=0, options={"start": 30})
    a = np.array([0.1, 0.4, 0.2, 0.2, 0.1])
    _, _, _, _, info = env.step(a.astype(np.float32))
    np.testing.assert_allclose(tilt(a.astype(np.float32), env.core.market.prior[30]), info["target_weights"],
                               rtol=1e-6)
    _, _, _, _, info = env.step(np.zeros(5, dtype=np.float32))
    np.testing.assert_array_equal(tilt(np.zeros(5), env.core.market.prior[31]), [0, 0, 0, 0, 1])
    np.testing.assert_allclose(info["target_weights"], [0, 0, 0, 0, 1], atol=1e-15)
