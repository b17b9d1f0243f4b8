"""Training-side metric helpers and learning-curve writers: hand-computed cases, skfolio cross-checks,
property tests, and the walk-forward fold arithmetic (pure date logic)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from data.market import DataError
from training.curves import (
    EpisodeTracker,
    cvar,
    max_drawdown,
    plot_curves,
    read_curves_csv,
    sharpe_ratio,
    sortino_ratio,
    value_at_risk,
    write_curves_csv,
)
from training.walk_forward import expanding_folds

returns_strategy = arrays(
    np.float64, st.integers(5, 200), elements=st.floats(-0.5, 0.5, allow_nan=False, allow_subnormal=False)
)


def test_sharpe_and_sortino_by_hand():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    mean = 0.005
    sd = math.sqrt(((0.005) ** 2 + (0.025) ** 2 + (0.025) ** 2 + (0.005) ** 2) / 3)
    assert sharpe_ratio(r, periods_per_year=1) == pytest.approx(mean / sd)
    assert sharpe_ratio(r) == pytest.approx(mean / sd * math.sqrt(365))
    downside = math.sqrt(0.02**2 / 4)
    assert sortino_ratio(r, periods_per_year=1) == pytest.approx(mean / downside)
    # The risk-free leg is subtracted day by day.
    rf = np.array([0.001, 0.001, 0.001, 0.001])
    assert sharpe_ratio(r, rf, 1) == pytest.approx((mean - 0.001) / sd)
    assert sharpe_ratio(np.full(10, 0.01)) == 0.0  # zero volatility
    assert sortino_ratio(np.full(10, 0.01)) == 0.0  # no losing day


def test_drawdown_var_cvar_by_hand():
    # NAV: 1.1, 0.88, 0.968, 1.2 -> worst trough 0.88 from peak 1.1 = 20% loss
    r = np.array([0.1, -0.2, 0.1, 0.2396694214876033])
    assert max_drawdown(r) == pytest.approx(0.2)
    assert max_drawdown(np.array([-0.1])) == pytest.approx(0.1)  # the start is a peak
    assert max_drawdown(np.array([0.05, 0.05])) == 0.0
    # 20 days, level 0.9: k = 2 worst days form the tail; VaR = third largest loss.
    r = -np.arange(20, dtype=np.float64) / 100.0  # losses 0.00 .. 0.19
    assert value_at_risk(r, 0.9) == pytest.approx(0.17)
    assert cvar(r, 0.9) == pytest.approx((0.19 + 0.18) / 2)
    # Fractional tail: 20 days at 0.95 -> one full day.
    assert cvar(r, 0.95) == pytest.approx(0.19)
    assert cvar(r, 0.975) == pytest.approx(0.19)  # half a day of the worst loss


@settings(max_examples=60, deadline=None)
@given(returns_strategy, st.sampled_from([0.9, 0.95, 0.99]))
def test_tail_and_drawdown_match_skfolio(r, level):
    from skfolio.measures import cvar as sk_cvar
    from skfolio.measures import get_drawdowns
    from skfolio.measures import max_drawdown as sk_mdd
    from skfolio.measures import value_at_risk as sk_var

    assert value_at_risk(r, level) == pytest.approx(sk_var(r, beta=level), abs=1e-12)
    assert cvar(r, level) == pytest.approx(sk_cvar(r, beta=level), abs=1e-12)
    assert max_drawdown(r) == pytest.approx(sk_mdd(get_drawdowns(r, compounded=True)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(returns_strategy)
def test_metric_invariants(r):
    assert 0.0 <= max_drawdown(r) <= 1.0
    assert cvar(r) >= value_at_risk(r) - 1e-12
    # Sharpe is invariant to scaling the returns by a positive constant (rf = 0).
    assert sharpe_ratio(2.0 * r) == pytest.approx(sharpe_ratio(r), rel=1e-9, abs=1e-9)


def test_sharpe_matches_quantstats_convention():
    """Cross-check with quantstats' Sharpe (ddof=1, sqrt(periods) annualisation)."""
    qs_stats = pytest.importorskip("quantstats.stats")
    import pandas as pd

    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.02, 300)
    s = pd.Series(r, index=pd.date_range("2021-01-01", periods=300, freq="D"))
    assert sharpe_ratio(r) == pytest.approx(float(qs_stats.sharpe(s, periods=365)), rel=1e-9)


def test_episode_tracker_csv_png_roundtrip(tmp_path):
    tracker = EpisodeTracker(n_envs=2)
    rng = np.random.default_rng(1)
    t = 0
    for step in range(30):
        t += 2
        done = np.array([step % 10 == 9, step % 15 == 14])
        tracker.step(t, rng.normal(size=2), rng.normal(0, 0.01, 2), done)
    assert [r.length for r in tracker.records] == [10, 15, 10, 10, 15][: len(tracker.records)]
    assert tracker.episodes == len(tracker.records) == 5
    write_curves_csv(tracker.records, tmp_path / "curves.csv")
    back = read_curves_csv(tmp_path / "curves.csv")
    assert back == tracker.records
    plot_curves(back, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_expanding_folds_never_overlap():
    folds = expanding_folds("2019-01-01", "2023-06-30", [2023, 2021, 2022])
    assert [f.year for f in folds] == [2021, 2022, 2023]
    for f in folds:
        assert f.train_start == "2019-01-01"
        assert np.datetime64(f.train_end) < np.datetime64(f.val_start)
        assert np.datetime64(f.val_start) - np.datetime64(f.train_end) == np.timedelta64(1, "D")
    # expanding: each fold's training span contains the previous fold's training and validation spans
    for a, b in zip(folds, folds[1:]):
        assert a.val_end <= b.train_end
    assert folds[-1].val_end == "2023-06-30"
    with pytest.raises(DataError):
        expanding_folds("2019-01-01", "2023-12-31", [2019])
    with pytest.raises(DataError):
        expanding_folds("2019-01-01", "2023-12-31", [2025])
