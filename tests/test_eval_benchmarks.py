"""Benchmark rules: feasibility, trailing data only, optimisers against SciPy, and the env path against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.market import FeatureStore
from environments.config import EnvConfig
from evaluation import benchmarks as bm
from evaluation.backtester import run_benchmarks

OPTIMISERS = ("min_variance", "markowitz", "max_sharpe")


def _history(seed: int, n_days: int = 60, n_assets: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.003, 0.05, n_assets)
    common = rng.normal(0.0, 0.01, (n_days, 1))
    return rng.normal(0.0008, 1.0, (n_days, n_assets)) * scale + common + np.linspace(-0.001, 0.002, n_assets)


def test_cap_weights_water_filling_by_hand():
    np.testing.assert_allclose(bm.cap_weights(np.array([4.0, 1.0, 1.0]), 0.5), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(bm.cap_weights(np.array([1.0, 0.0, 0.0]), 0.5), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(bm.cap_weights(np.array([8.0, 1.0, 1.0, 0.0]), 0.45), [0.45, 0.275, 0.275, 0.0])
    np.testing.assert_allclose(bm.cap_weights(np.ones(4), 1.0), [0.25] * 4)


def test_momentum_and_risk_parity_by_hand():
    cfg = bm.EvaluationConfig(lookback=10, momentum_days=5)
    hist = np.zeros((10, 6))
    hist[-5:] = [0.02, 0.01, -0.01, 0.03, 0.0, 0.05]
    cand = np.array([True, True, True, True, True, False])  # the best asset is not a candidate
    w = bm.rule_momentum(hist, cand, 0.0, cfg, 0.5)
    # top third of 5 candidates = 2 assets: asset 3 (+3%/day) and asset 0 (+2%/day)
    np.testing.assert_allclose(w, [0.5, 0, 0, 0.5, 0, 0])
    hist = np.zeros((10, 6))
    hist[-5:] = -0.01
    assert bm.rule_momentum(hist, cand, 0.0, cfg, 0.5).sum() == 0.0  # nothing rose: all cash
    rng = np.random.default_rng(0)
    hist = rng.normal(0, 1, (40, 3)) * np.array([0.01, 0.02, 0.04])
    vol = hist.std(axis=0, ddof=1)
    w = bm.rule_risk_parity(hist, np.ones(3, bool), 0.0, cfg, 1.0)
    np.testing.assert_allclose(w, (1 / vol) / (1 / vol).sum())


@pytest.mark.parametrize("kind", OPTIMISERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skfolio_agrees_with_scipy(kind, seed):
    hist = _history(seed)
    a = bm.skfolio_optimum(kind, hist, 0.5, risk_aversion=2.0, rf=0.0001)
    b = bm.scipy_optimum(kind, hist, 0.5, risk_aversion=2.0, rf=0.0001)
    assert a.sum() == pytest.approx(1.0, abs=1e-6) and b.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_min_variance_prefers_the_quiet_asset():
    hist = _history(4)
    w = bm.scipy_optimum("min_variance", hist, 1.0)
    assert w.argmax() == 0  # lowest volatility by construction


def _check_feasible(w: np.ndarray, cand: np.ndarray, cap: float) -> None:
    assert w.shape == (cand.shape[0] + 1,)
    assert np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(w[:-1] <= cap + 1e-9)
    assert np.all(w[:-1][~cand] == 0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_listed=st.integers(1, 5), cap=st.sampled_from([0.3, 0.5, 1.0]),
       optimiser=st.sampled_from(["skfolio", "scipy"]))
def test_every_benchmark_target_is_feasible(seed, n_listed, cap, optimiser):
    rng = np.random.default_rng(seed)
    n_days, n = 80, 5
    returns = rng.normal(0.0005, 0.02, (n_days, n))
    listed = np.ones((n_days, n), dtype=bool)
    late = rng.permutation(n)[: n - n_listed]
    listed[: rng.integers(40, 79), late] = False  # some assets list late, inside the lookback window
    returns[~listed] = 0.0
    tickers = ("BTC-USD", "ETH-USD", "SPY", "GLD", "BIL")
    cfg = bm.EvaluationConfig(lookback=30, momentum_days=10, optimiser=optimiser)
    t = n_days - 1
    for name in bm.BENCHMARKS:
        w = bm.benchmark_target(name, t, returns, listed, tickers, 0.0001, cfg, cap)
        cand = bm.candidates_at(name, t, listed, tickers, cfg.lookback)
        _check_feasible(w, cand, 1.0 if bm.BENCHMARKS[name].buy_and_hold else cap)


def test_targets_use_trailing_data_only():
    rng = np.random.default_rng(5)
    n_days, n = 120, 4
    returns = rng.normal(0.0005, 0.02, (n_days, n))
    listed = np.ones((n_days, n), dtype=bool)
    listed[:50, 2] = False
    returns[~listed] = 0.0
    tickers = ("BTC-USD", "ETH-USD", "SOL-USD", "SPY")
    cfg = bm.EvaluationConfig(lookback=30)
    for t in (60, 90):
        future = returns.copy()
        future[t:] = rng.normal(0.05, 0.2, (n_days - t, n))  # includes returns[t], earned after t's close
        for name in bm.BENCHMARKS:
            a = bm.benchmark_target(name, t, returns, listed, tickers, 0.0, cfg, 0.5)
            b = bm.benchmark_target(name, t, future, listed, tickers, 0.0, cfg, 0.5)
            np.testing.assert_array_equal(a, b, err_msg=name)
    # and the past does matter (the test can fail): change the window, the optimiser moves
    past = returns.copy()
    past[60:90] = rng.normal(0.0, 0.05, (30, n))
    a = bm.benchmark_target("min_variance", 90, returns, listed, tickers, 0.0, cfg, 0.5)
    b = bm.benchmark_target("min_variance", 90, past, listed, tickers, 0.0, cfg, 0.5)
    assert np.abs(a - b).max() > 1e-3


def test_config_validation():
    with pytest.raises(ValueError, match="unknown benchmark"):
        bm.EvaluationConfig(benchmarks=["nope"])
    with pytest.raises(ValueError, match="optimiser"):
        bm.EvaluationConfig(optimiser="cvx")
    with pytest.raises(ValueError, match="BTC"):
        bm.benchmark_target("btc_bh", 5, np.zeros((10, 2)), np.ones((10, 2), bool), ("ETH-USD", "SPY"), 0.0,
                            bm.EvaluationConfig(), 0.5)


# ----------------------------------------------------------------- the env path against numpy
def _store(seed: int = 0, n_days: int = 70) -> FeatureStore:
    """Hand-built store: two 7-day cryptos and one weekday ETF (closed Sat/Sun, carried price)."""
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n_days)
    weekday = ((dates.astype(np.int64) + 3) % 7) < 5
    daily = rng.normal(0.001, [0.03, 0.04, 0.01], (n_days, 3))
    daily[~weekday, 2] = 0.0  # the ETF does not move on closed days
    close = 100.0 * np.cumprod(1.0 + daily, axis=0)
    returns = np.zeros_like(close)
    returns[:-1] = close[1:] / close[:-1] - 1.0
    tradable = np.ones((n_days, 3), dtype=bool)
    tradable[:, 2] = weekday
    volume = rng.uniform(5e7, 2e8, (n_days, 3)) * tradable  # dollar volume, 0 on closed days
    return FeatureStore(
        dates=dates, tickers=("BTC-USD", "ETH-USD", "SPY"), categories=("growth", "growth", "traditional"),
        feature_names=("f",), features=np.zeros((n_days, 3, 1), np.float32), close=close, returns=returns,
        volume=volume, tradable=tradable, listed=np.ones((n_days, 3), dtype=bool), norm_mean=np.zeros(1),
        norm_std=np.ones(1), train_end=dates[10], source="synthetic",
    )


def _numpy_equal_weight(store: FeatureStore, first: int, last: int, every: int, nav0: float) -> np.ndarray:
    """Direct computation of equal-weight rebalanced NAV with the env's documented cost rules."""
    fee = np.array([10.0, 10.0, 1.0]) * 1e-4  # growth / traditional defaults (bps)
    slip = np.array([5.0, 5.0, 1.0]) * 1e-4
    vol = store.volume
    w = np.array([0.0, 0.0, 0.0, 1.0])
    nav = [nav0]
    last_trade = None
    for t in range(first, last):
        lo = max(t - 20 + 1, 0)
        open_days = vol[lo : t + 1] > 0
        adv = np.where(open_days.any(0), (vol[lo : t + 1] * open_days).sum(0) / np.maximum(open_days.sum(0), 1), 0)
        if (last_trade is None or t - last_trade >= every) and store.tradable[t].all():
            target = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])
            last_trade = t
        else:
            target = w.copy()
        traded = np.abs(target[:3] - w[:3]) * nav[-1]
        cost = fee @ traded + (slip * traded * np.sqrt(traded / (0.01 * adv))) @ np.ones(3)
        post = nav[-1] - cost
        growth = np.append(1.0 + store.returns[t], 1.0)
        nav.append(post * float(target @ growth))
        w = target * growth / float(target @ growth)
    return np.array(nav)


@pytest.mark.parametrize("every", [1, 3])
def test_equal_weight_through_env_matches_numpy(every):
    store = _store()
    env_cfg = EnvConfig(window=5, max_weight=0.5)
    cfg = bm.EvaluationConfig(rebalance_every=every, lookback=10, momentum_days=5)
    res = run_benchmarks(store, env_cfg, cfg, np.zeros(store.n_days), None, None, names=["equal_weight"])[0]
    first, last = 4, store.n_days - 1
    expected = _numpy_equal_weight(store, first, last, every, env_cfg.initial_nav) / env_cfg.initial_nav
    np.testing.assert_allclose(res.nav, expected, rtol=1e-12)
    assert res.cost.sum() > 0
    # no trade on a weekend (the ETF is closed): rebalances wait for a day when all assets trade
    weekend = ~store.tradable[first:last, 2]
    assert np.all(res.turnover[weekend] < 1e-12)  # holding = the drifted weights (round-off only)
    assert (res.turnover > 1e-9).sum() > 3


def test_buy_and_hold_trades_once_and_lifts_the_cap():
    store = _store(1)
    env_cfg = EnvConfig(window=5, max_weight=0.5)
    cfg = bm.EvaluationConfig(lookback=10, momentum_days=5)
    btc, ew = run_benchmarks(store, env_cfg, cfg, np.zeros(store.n_days), None, None,
                             names=["btc_bh", "equal_weight_bh"])
    assert btc.weights[0, 0] == pytest.approx(1.0)  # all in BTC despite the 50% cap
    assert (btc.turnover > 1e-9).sum() == 1 and (ew.turnover > 1e-9).sum() == 1
    # after the purchase NAV follows BTC exactly
    np.testing.assert_allclose(btc.nav[2:] / btc.nav[1], np.cumprod(1 + store.returns[5:-1, 0]), rtol=1e-12)


def test_weekday_only_portfolio_is_annualised_on_trading_days():
    from data.universe import calendar_of
    from evaluation import performance_metrics as pm
    from evaluation.backtester import strategy_row

    store = _store(2)
    etf = FeatureStore(**{**store.__dict__, "tickers": ("SPY", "GLD"), "categories": ("traditional", "traditional"),
                          "features": store.features[:, 1:], "close": store.close[:, 1:],
                          "returns": np.repeat(store.returns[:, 2:], 2, axis=1) * [1.0, 0.5],
                          "volume": np.repeat(store.volume[:, 2:], 2, axis=1),
                          "tradable": np.repeat(store.tradable[:, 2:], 2, axis=1), "listed": store.listed[:, 1:]})
    periods = pm.periods_per_year([calendar_of(t) for t in etf.tickers])
    assert periods == 252
    res = run_benchmarks(etf, EnvConfig(window=5), bm.EvaluationConfig(lookback=10, momentum_days=5),
                         np.zeros(etf.n_days), None, None, names=["equal_weight"])[0]
    from training.rollout import MarketContext

    context = MarketContext(etf.dates.astype("datetime64[D]"), etf.listed, etf.categories, np.zeros(etf.n_days),
                            np.zeros(etf.n_days), "zero", periods)
    row = strategy_row(res, context, etf.tickers, "benchmark")
    weekdays = int((((res.dates.astype(np.int64) + 3) % 7) < 5).sum())
    # weekend days are folded into the previous weekday: same total, T = number of trading days
    assert row["metrics"]["total_return"] == pytest.approx(pm.total_return(res.returns), rel=1e-12)
    folded = pm.compound_by_group(res.returns, pm.weekday_groups(res.dates))
    assert folded.shape[0] == weekdays
    assert row["metrics"]["annual_return"] == pytest.approx(pm.annualised_return(folded, 252))
    assert row["metrics"]["sharpe"] == pytest.approx(pm.sharpe_ratio(folded, 0.0, 252))


def test_benchmark_env_config_keeps_costs_and_drops_leverage():
    from evaluation.backtester import benchmark_env_config

    agent_cfg = EnvConfig(margin=True, max_leverage=2.0, max_weight=1.5, drawdown_control=True, cost_scale=2.0)
    for bh in (False, True):
        cfg = benchmark_env_config(agent_cfg, bh)
        assert not cfg.margin and not cfg.drawdown_control and cfg.max_weight == 1.0
        assert cfg.cost_scale == 2.0 and cfg.slippage == agent_cfg.slippage
    assert benchmark_env_config(EnvConfig(max_weight=0.3), False).max_weight == 0.3
    assert benchmark_env_config(EnvConfig(max_weight=0.3), True).max_weight == 1.0


def test_allocation_insights_by_hand():
    from types import SimpleNamespace

    from data.config import DataConfig
    from evaluation.reports import allocation_insights
    from training.rollout import MarketContext

    n_days = 60
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n_days)
    returns = np.zeros((n_days, 3))
    returns[30:35, 0] = [0.2, -0.2, 0.2, -0.2, 0.2]  # a burst of volatility in the risky asset
    store = SimpleNamespace(dates=dates, categories=("growth", "hedge", "stable"), returns=returns,
                            listed=np.ones((n_days, 3), dtype=bool), tickers=("BTC-USD", "GLD", "USDT-USD"),
                            n_days=n_days)
    days = dates[25:55]  # 30 decision days; trailing vol is high on days 31..54 (window of 20 past days)
    weights = np.tile([0.6, 0.1, 0.2, 0.1], (30, 1))
    # the policy holds more hedge on the three days with the highest trailing volatility
    t = np.searchsorted(dates, days)
    past = np.array([np.std(returns[max(k - 20, 0):k, 0:2].mean(axis=1), ddof=1) if k >= 3 else 0 for k in t])
    top = np.argsort(-past, kind="stable")[:3]
    weights[top] = [0.3, 0.4, 0.2, 0.1]
    res = SimpleNamespace(label="hedger", dates=days, weights=weights)
    context = MarketContext.from_store(store, DataConfig(risk_free="", risk_free_rate=0.0))
    ins = allocation_insights([res], context)
    row = ins["rows"][0]
    assert ins["n_volatile"] == 3
    assert row["hedge_volatile"] == pytest.approx(0.4) and row["hedge_other"] == pytest.approx(0.1)
    assert row["defensive_volatile"] == pytest.approx(0.3) and row["defensive_other"] == pytest.approx(0.3)
    assert row["avg_by_category"]["hedge"] == pytest.approx((3 * 0.4 + 27 * 0.1) / 30)
    # the diagnostics are the differences of these columns, on the same volatile days
    from training import metrics as M

    volatile = M.volatile_days(context.volatility[t])
    assert M.hedge_response(weights, store.categories, volatile) == pytest.approx(0.3)
    assert M.regime_response(weights, store.categories, volatile) == pytest.approx(0.0)
