"""Learning curves: episode records with the one metrics module's measures and diagnostics (hand-computed
cases), CSV/PNG round trip, and the walk-forward fold arithmetic (pure date logic)."""

import math

import numpy as np
import pytest

from data.market import DataError
from training import metrics as M
from training.curves import (
    CURVE_COLUMNS,
    EpisodeTracker,
    episode_record,
    plot_curves,
    read_curves_csv,
    write_curves_csv,
)
from training.rollout import MarketContext
from training.walk_forward import expanding_folds


def _context(n_days=40, periods=365):
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n_days)
    vol = np.zeros(n_days)
    vol[[10, 15]] = 1.0  # the two volatile days in days 5..24
    return MarketContext(dates, np.ones((n_days, 2), bool), ("growth", "stable"), vol, np.full(n_days, 0.0001),
                         "0.01% a day", periods)


def _same(a, b):
    return all((x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_episode_record_uses_the_metrics_module_and_diagnostics_by_hand():
    ctx = _context()
    days = np.arange(5, 25)
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 20)
    w = np.tile([0.5, 0.5, 0.0], (20, 1))
    w[[5, 10]] = [0.0, 0.6, 0.4]  # days 10 and 15: all stable + cash
    turnover, cost = np.full(20, 0.1), np.full(20, 0.0002)
    rec = episode_record(100, 1, np.ones(20), r, ctx, days, w, turnover, cost)
    assert rec.length == 20 and rec.reward == 20.0 and rec.nav == pytest.approx(np.prod(1 + r))
    assert rec.sharpe == pytest.approx(M.sharpe_ratio(r, 0.0001, 365))  # excess over the context's rf
    assert rec.max_drawdown == pytest.approx(M.max_drawdown(r)) and rec.max_drawdown <= 0
    assert rec.var_95 == pytest.approx(M.value_at_risk(r)) and rec.cvar_95 == pytest.approx(M.conditional_value_at_risk(r))
    assert rec.turnover == pytest.approx(0.1) and rec.cost_drag == pytest.approx(0.0002 * 365)
    # active share: 18 days at equal weight (0), 2 days 0.5*(0.5+0.1+0.4) = 0.5 -> mean 0.05
    assert rec.active_share == pytest.approx(2 * 0.5 / 20)
    # stable+cash 1.0 on the 2 volatile days, 0.5 on the others
    assert rec.regime_response == pytest.approx(0.5)
    assert rec.hedge_response == 0.0
    # without a context: no rf, no diagnostics
    bare = episode_record(100, 1, np.ones(20), r)
    assert bare.sharpe == pytest.approx(M.sharpe_ratio(r, 0.0, 365)) and math.isnan(bare.active_share)


def test_episode_tracker_reads_the_batched_env_infos():
    ctx = _context()
    tracker = EpisodeTracker(n_envs=2, context=ctx)
    w0, w1 = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.0, 1.0])
    for k in range(4):
        infos = {"t": np.array([6 + k, 21 + k]), "target_weights": np.array([w0, w1]),
                 "turnover": np.array([0.0, 0.0]), "nav": np.array([1.0, 2.0]), "log_return": np.array([0.0, 0.0]),
                 "cost": np.array([0.001, 0.0])}
        new = tracker.step(2 * (k + 1), [0.0, 0.0], [0.0, 0.0], [k == 3, k == 3], infos)
    assert len(new) == 2
    assert new[0].active_share == 0.0 and new[1].active_share == pytest.approx(1.0)
    assert new[0].cost_drag == pytest.approx(0.001 * 365) and new[1].cost_drag == 0.0


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
    assert (tmp_path / "curves.csv").read_text().splitlines()[0] == ",".join(CURVE_COLUMNS)
    back = read_curves_csv(tmp_path / "curves.csv")
    assert all(_same(a.__dict__.values(), b.__dict__.values()) for a, b in zip(back, tracker.records))
    plot_curves(back, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_written_before_the_metrics_module_still_read(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("timestep,episode,length,reward,nav,sharpe,sortino,max_drawdown,var95,cvar95\n"
                   "10,1,5,0.1,1.01,0.5,0.7,0.02,0.01,0.015\n")
    (rec,) = read_curves_csv(old)
    assert rec.var_95 == 0.01 and rec.cvar_95 == 0.015 and math.isnan(rec.active_share)


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
