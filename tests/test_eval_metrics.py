"""The one metrics module (``training.metrics``, re-exported as ``evaluation.performance_metrics``) against
quantstats (same series, same periods, same rf) and hand computations, diagnostics included."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import quantstats.stats as qs_stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evaluation import performance_metrics
from training import metrics as pm

warnings.filterwarnings("ignore", module="quantstats")


def _series(seed: int = 0, n: int = 400, mu: float = 0.0008, sigma: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, n) * sigma / np.sqrt(2) + mu


def _pd(r: np.ndarray) -> pd.Series:
    return pd.Series(r, index=pd.date_range("2021-01-01", periods=r.shape[0], freq="D"))


@pytest.mark.parametrize("periods", [365, 252])
@pytest.mark.parametrize("seed", [0, 1])
def test_ratios_match_quantstats_with_annual_rf(periods, seed):
    r = _series(seed)
    annual = 0.04
    rf = pm.risk_free_daily(r.shape[0], periods, annual_rate=annual)
    s = _pd(r)
    assert pm.sharpe_ratio(r, rf, periods) == pytest.approx(qs_stats.sharpe(s, rf=annual, periods=periods), rel=1e-10)
    assert pm.sortino_ratio(r, rf, periods) == pytest.approx(
        qs_stats.sortino(s, rf=annual, periods=periods), rel=1e-10
    )
    assert pm.annualised_volatility(r, periods) == pytest.approx(qs_stats.volatility(s, periods=periods), rel=1e-12)
    assert pm.annualised_return(r, periods) == pytest.approx(qs_stats.cagr(s, periods=periods), rel=1e-10)
    assert pm.calmar_ratio(r, periods) == pytest.approx(qs_stats.calmar(s, periods=periods), rel=1e-10)


def test_ratios_match_quantstats_with_daily_tbill_series():
    r = _series(3)
    tbill = np.abs(np.random.default_rng(9).normal(0.00012, 0.00003, r.shape[0]))
    rf = pm.risk_free_daily(r.shape[0], 365, tbill_returns=tbill)
    # quantstats takes the excess series directly when rf varies by day
    ex = _pd(r - tbill)
    assert pm.sharpe_ratio(r, rf, 365) == pytest.approx(qs_stats.sharpe(ex, rf=0.0, periods=365), rel=1e-10)
    assert pm.sortino_ratio(r, rf, 365) == pytest.approx(qs_stats.sortino(ex, rf=0.0, periods=365), rel=1e-10)
    # rf actually matters: the excess Sharpe is lower than the raw one for a positive rf
    assert pm.sharpe_ratio(r, rf, 365) < pm.sharpe_ratio(r, 0.0, 365)


def test_drawdown_var_cvar_hit_rate_total_match_quantstats():
    r = _series(5)
    s = _pd(r)
    assert pm.max_drawdown(r) == pytest.approx(qs_stats.max_drawdown(s), rel=1e-10)
    assert pm.conditional_value_at_risk(r) == pytest.approx(
        qs_stats.conditional_value_at_risk(s, method="historical"), rel=1e-10
    )
    assert pm.value_at_risk(r) == pytest.approx(float(s.quantile(0.05)), rel=1e-12)
    assert pm.hit_rate(r) == pytest.approx(qs_stats.win_rate(s), rel=1e-12)
    assert pm.total_return(r) == pytest.approx(qs_stats.comp(s), rel=1e-10)


def test_hand_computed_example():
    r = np.array([0.10, -0.20, 0.05, 0.0])
    # NAV: 1.1, 0.88, 0.924, 0.924
    assert pm.final_value(r, 100.0) == pytest.approx(92.4)
    assert pm.total_return(r) == pytest.approx(-0.076)
    assert pm.max_drawdown(r) == pytest.approx(0.88 / 1.1 - 1.0)
    assert pm.mean_log_return(r) == pytest.approx(np.log(0.924) / 4)
    assert pm.std(r) == pytest.approx(np.std(r, ddof=1))
    assert pm.hit_rate(r) == pytest.approx(2 / 3)
    assert pm.hit_rate(np.array([0.1, -0.2, 0.05, 1e-17, -1e-16])) == pytest.approx(2 / 3)  # round-off is flat
    assert pm.annualised_return(r, 4) == pytest.approx(-0.076)
    np.testing.assert_allclose(pm.drawdown_series(r), [0.0, -0.2, -0.16, -0.16])
    # loss on day one is a drawdown from the initial NAV of 1
    assert pm.max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)
    # CVaR of 20 returns at 95%: the worst one (the quantile sits between the two worst)
    twenty = np.linspace(-0.1, 0.09, 20)
    assert pm.value_at_risk(twenty) == pytest.approx(-0.1 + 0.95 * 0.01)
    assert pm.conditional_value_at_risk(twenty) == pytest.approx(-0.1)


def test_category_weights_by_hand():
    w = np.array([[0.2, 0.3, 0.1, 0.4], [0.0, 0.5, 0.5, 0.0]])
    cats = ("growth", "stable", "growth")
    avg = pm.average_weight_by_category(w, cats)
    assert avg == pytest.approx({"growth": 0.4, "stable": 0.4, "cash": 0.2})
    np.testing.assert_allclose(pm.average_weight(w), [0.1, 0.4, 0.3, 0.2])


def test_periods_and_risk_free():
    assert pm.periods_per_year(["weekday", "7d"]) == 365
    assert pm.periods_per_year(["weekday", "weekday"]) == 252
    rf = pm.risk_free_daily(3, 365, annual_rate=0.05)
    assert (1 + rf[0]) ** 365 == pytest.approx(1.05)
    with pytest.raises(ValueError):
        pm.risk_free_daily(3, 365, tbill_returns=np.zeros(4))


def test_summarize_keys_and_bad_input():
    r = _series(1, n=50)
    out = pm.summarize(r, 0.0, 365, daily_turnover=np.full(50, 0.02))
    assert [k for k, _, _ in pm.METRIC_COLUMNS] == list(out)
    assert out["turnover"] == pytest.approx(0.02) and out["cost_drag"] == 0.0
    out = pm.summarize(r, 0.0, 365, daily_cost=np.full(50, 0.0001))
    assert out["cost_drag"] == pytest.approx(0.0365)
    with pytest.raises(ValueError):
        pm.sharpe_ratio(np.array([0.01, np.nan]), 0.0, 365)
    with pytest.raises(ValueError):
        pm.total_return(np.zeros((2, 2)))


returns_st = arrays(np.float64, st.integers(2, 60), elements=st.floats(-0.5, 0.5, allow_subnormal=False))


@settings(max_examples=60, deadline=None)
@given(returns_st)
def test_invariants(r):
    mdd = pm.max_drawdown(r)
    assert -1.0 <= mdd <= 0.0
    assert pm.conditional_value_at_risk(r) <= pm.value_at_risk(r) + 1e-12
    assert 0.0 <= pm.hit_rate(r) <= 1.0
    assert pm.final_value(r) == pytest.approx(pm.equity_curve(r)[-1])
    # shifting every return and rf by the same constant does not change excess-return Sharpe
    assert pm.sharpe_ratio(r + 0.001, 0.001, 365) == pytest.approx(pm.sharpe_ratio(r, 0.0, 365), abs=1e-6)
    # scaling returns leaves the zero-rf Sharpe unchanged (up to rounding)
    if np.std(r, ddof=1) > 1e-6:
        assert pm.sharpe_ratio(0.5 * r, 0.0, 365) == pytest.approx(pm.sharpe_ratio(r, 0.0, 365), rel=1e-6, abs=1e-9)


def test_evaluation_name_is_the_same_module():
    """One definition: the evaluation layer's module re-exports training.metrics' functions unchanged."""
    for name in ("sharpe_ratio", "sortino_ratio", "max_drawdown", "value_at_risk", "summarize", "active_share"):
        assert getattr(performance_metrics, name) is getattr(pm, name)


def test_sortino_without_a_losing_day_is_nan_and_sharpe_without_dispersion_is_zero():
    assert np.isnan(pm.sortino_ratio(np.full(10, 0.01), 0.0, 365))
    assert pm.sharpe_ratio(np.full(10, 0.01), 0.0, 365) == 0.0
    rows = pm.sharpe_ratio_rows(np.array([[0.01, -0.01, 0.02], [0.01, 0.01, 0.01]]), 1)
    assert rows[0] == pytest.approx(pm.sharpe_ratio(np.array([0.01, -0.01, 0.02]), 0.0, 1)) and rows[1] == 0.0
    # an all-cash policy's returns are float residue of the NAV accounting, not a risk-return trade-off:
    # found at -0.98 and +1.17 in the crypto4 study before the threshold
    for scale in (3e-14, 1.6e-12):  # accounting residue; 1e-10 weights left in risky assets
        residue = np.random.default_rng(0).normal(-2e-14, scale, 364)
        assert pm.sharpe_ratio(residue, 0.0, 365) == 0.0 and np.isnan(pm.sortino_ratio(residue, 0.0, 365))
    # the quietest real series (a T-bill ETF, daily std about 1e-4) keeps its Sharpe
    bill = np.random.default_rng(1).normal(1e-4, 1e-4, 364)
    assert pm.sharpe_ratio(bill, 0.0, 365) == pytest.approx(bill.mean() / bill.std(ddof=1) * np.sqrt(365))


def test_active_share_by_hand():
    # 3 assets + cash; asset 2 is not listed on day 0, so equal weight is (1/2, 1/2, 0, 0) then (1/3,1/3,1/3,0)
    listed = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(pm.equal_weights(listed), [[0.5, 0.5, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]])
    w = np.array([[0.5, 0.5, 0.0, 0.0],       # equal weight: 0
                  [0.0, 0.0, 0.0, 1.0]])      # all cash: 0.5 * (1/3 * 3 + 1) = 1
    assert pm.active_share(w, listed) == pytest.approx(0.5)
    # a policy stuck at uniform weights over N assets + cash scores 1 / (N + 1)
    n = 18
    uniform = np.full((4, n + 1), 1 / (n + 1))
    assert pm.active_share(uniform, np.ones((4, n), bool)) == pytest.approx(1 / (n + 1))
    with pytest.raises(ValueError):
        pm.active_share(np.ones((2, 3)), listed)


def test_trailing_volatility_and_volatile_days_by_hand():
    market = np.array([0.0, 0.01, -0.01, 0.03, 0.0, 0.0])
    vol = pm.trailing_volatility(market, window=2)
    # day t uses market[t-2:t]: nothing known at days 0, 1; then std of pairs, ddof=1
    expected = [0, 0, np.std([0.0, 0.01], ddof=1), np.std([0.01, -0.01], ddof=1), np.std([-0.01, 0.03], ddof=1),
                np.std([0.03, 0.0], ddof=1)]
    np.testing.assert_allclose(vol, expected)
    np.testing.assert_array_equal(pm.volatile_days(vol, 0.34), [False, False, False, False, True, True])
    np.testing.assert_array_equal(pm.volatile_days(np.zeros(5), 0.1), [True, False, False, False, False])  # ties: earlier
    ret = np.array([[0.1, 0.3, 0.5], [0.2, 0.0, 0.5]])
    cats = ("growth", "hedge", "stable")
    listed = np.array([[True, True, True], [True, False, True]])
    np.testing.assert_allclose(pm.equal_weight_risky_return(ret, listed, cats), [0.2, 0.2])


def test_regime_and_hedge_response_by_hand():
    cats = ("growth", "hedge", "stable")
    # 4 days; day 1 and 3 volatile. stable+cash: 0.3, 0.7, 0.3, 0.5 -> (0.7+0.5)/2 - 0.3 = 0.3
    w = np.array([[0.6, 0.1, 0.2, 0.1], [0.1, 0.2, 0.4, 0.3], [0.6, 0.1, 0.1, 0.2], [0.2, 0.3, 0.5, 0.0]])
    volatile = np.array([False, True, False, True])
    assert pm.regime_response(w, cats, volatile) == pytest.approx(0.3)
    # hedge: (0.2 + 0.3)/2 - 0.1 = 0.15
    assert pm.hedge_response(w, cats, volatile) == pytest.approx(0.15)
    # a constant allocation responds to nothing; no volatile day (or all) gives 0
    const = np.tile(w[0], (4, 1))
    assert pm.regime_response(const, cats, volatile) == pytest.approx(0.0)
    assert pm.regime_response(w, cats, np.zeros(4, bool)) == 0.0
    assert pm.hedge_response(w[:, [0, 2, 3]], ("growth", "stable"), volatile) == 0.0  # no hedge category
    d = pm.diagnostics(w, np.ones((4, 3), bool), cats, volatile)
    assert list(d) == [k for k, _, _ in pm.DIAGNOSTIC_COLUMNS]
    assert d["active_share"] == pytest.approx(np.mean(0.5 * np.abs(w - [1 / 3, 1 / 3, 1 / 3, 0]).sum(axis=1)))


def test_fold_to_periods_by_hand():
    dates = np.arange(np.datetime64("2024-01-05"), np.datetime64("2024-01-09"))  # Fri, Sat, Sun, Mon
    r = np.array([0.1, 0.0, 0.1, -0.5])
    rf, turn, cost = np.full(4, 0.001), np.array([0.2, 0.0, 0.0, 0.1]), np.array([0.01, 0, 0, 0.02])
    same = pm.fold_to_periods(dates, r, rf, turn, cost, 365)
    np.testing.assert_allclose(same[0], r)
    fr, frf, ft, fc = pm.fold_to_periods(dates, r, rf, turn, cost, 252)
    np.testing.assert_allclose(fr, [1.1 * 1.0 * 1.1 - 1, -0.5])
    np.testing.assert_allclose(frf, [1.001 ** 3 - 1, 0.001])
    np.testing.assert_allclose(ft, [0.2, 0.1])
    np.testing.assert_allclose(fc, [0.01, 0.02])


def test_defensive_share_by_hand_and_regime_response_uses_it():
    cats = ("growth", "stable", "growth")
    w = np.array([[0.5, 0.2, 0.2, 0.1],    # stable 0.2 + cash 0.1
                  [0.0, 0.0, 0.4, 0.6]])   # cash 0.6
    np.testing.assert_allclose(pm.defensive_share(w, cats), [0.3, 0.6])
    np.testing.assert_allclose(pm.defensive_share(w[:, [0, 2, 3]], ("growth", "growth")), [0.1, 0.6])  # no stable
    assert pm.regime_response(w, cats, np.array([False, True])) == pytest.approx(0.3)
