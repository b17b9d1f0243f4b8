"""OLPS algorithms (evaluation/olps.py) against hand-worked cases, brute-force solvers and the papers'
invariants; the vol-targeted equal weight and OLPS rules of evaluation/benchmarks.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evaluation import benchmarks as bm
from evaluation import olps


def _brute_projection(y: np.ndarray, a: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Exact A-norm simplex projection by enumerating every support (KKT of the equality QP)."""
    idx = np.flatnonzero(active)
    best, best_f = None, np.inf
    for k in range(1, idx.size + 1):
        for sup in itertools.combinations(idx, k):
            s = np.array(sup)
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = 2.0 * a[np.ix_(s, s)]
            kkt[:k, k] = kkt[k, :k] = 1.0
            rhs = np.append(2.0 * (a @ y)[s], 1.0)
            q = np.linalg.solve(kkt, rhs)[:k]
            if np.any(q < -1e-12):
                continue
            p = np.zeros_like(y)
            p[s] = q
            f = float((p - y) @ a @ (p - y))
            if f < best_f:
                best, best_f = p, f
    return best


def test_simplex_projection_matches_brute_force():
    rng = np.random.default_rng(0)
    eye = np.eye(5)
    for _ in range(50):
        v = rng.normal(scale=2.0, size=5)
        got = olps.simplex_projection(v)
        np.testing.assert_allclose(got, _brute_projection(v, eye, np.ones(5, bool)), atol=1e-10)
        assert got.min() >= 0 and got.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(olps.simplex_projection(np.array([23.0, -22.0])), [1.0, 0.0])
    np.testing.assert_allclose(olps.simplex_projection(np.array([0.6, 0.6, -1.0])), [0.5, 0.5, 0.0])


def test_quadratic_projection_matches_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(30):
        g = rng.normal(size=(4, 4))
        a = np.eye(4) + g @ g.T
        y = rng.normal(scale=0.5, size=4)
        active = np.array([True, True, trial % 2 == 0, True])
        got = olps.quadratic_simplex_projection(y, a, active)
        np.testing.assert_allclose(got, _brute_projection(y, a, active), atol=1e-6)
        assert got[~active].sum() == 0


def test_olmar_hand_worked():
    # window 2: x~ = (1 + 1/x_t) / 2 = (1.5, 0.75) for x_t = (0.5, 2); mean 1.125; b.x~ = 1.125.
    # eps 1.2: lambda = 0.075 / (2 * 0.375^2) = 0.2667 -> b = (0.5 + 0.1, 0.5 - 0.1).
    hist = np.array([[1.0, 1.0], [0.5, 2.0]])
    act = np.ones(2, bool)
    b, _ = olps.OLMAR(window=2, eps=1.2).update(None, np.array([0.5, 0.5]), hist, act)
    np.testing.assert_allclose(b, [0.6, 0.4])
    assert b @ np.array([1.5, 0.75]) == pytest.approx(1.2)  # lands exactly on the margin (paper, eq. 5)
    b, _ = olps.OLMAR(window=2, eps=10.0).update(None, np.array([0.5, 0.5]), hist, act)
    np.testing.assert_allclose(b, [1.0, 0.0])  # aggressive step clipped to the corner by the projection
    b, _ = olps.OLMAR(window=2, eps=1.0).update(None, np.array([0.5, 0.5]), hist, act)
    np.testing.assert_allclose(b, [0.5, 0.5])  # b.x~ >= eps: passive


def test_pamr_hand_worked_and_variants():
    b0, x, act = np.array([0.5, 0.5]), np.array([[1.2, 0.8]]), np.ones(2, bool)
    # loss = 1.0 - 0.95 = 0.05; ||x - 1||^2 = 0.08; tau = 0.625; b = (0.5 - 0.125, 0.5 + 0.125)
    b, _ = olps.PAMR(eps=0.95).update(None, b0, x, act)
    np.testing.assert_allclose(b, [0.375, 0.625])
    assert b @ x[0] == pytest.approx(0.95)  # the unclipped step lands on the margin b.x = eps
    np.testing.assert_allclose(olps.PAMR(eps=1.5).update(None, b0, x, act)[0], b0)  # passive
    np.testing.assert_allclose(olps.PAMR(eps=0.5).update(None, b0, x, act)[0], [0.0, 1.0])
    np.testing.assert_allclose(olps.PAMR(eps=0.95, variant=1, C=0.1).update(None, b0, x, act)[0], [0.48, 0.52])
    tau2 = 0.05 / (0.08 + 0.5)
    np.testing.assert_allclose(olps.PAMR(eps=0.95, variant=2, C=1.0).update(None, b0, x, act)[0],
                               [0.5 - 0.2 * tau2, 0.5 + 0.2 * tau2])


def test_ons_hand_worked():
    # p = (1/2, 1/2), x = (2, 1): g = (4/3, 2/3); A = I + gg' = [[25, 8], [8, 13]] / 9; b = 2g = (8/3, 4/3)
    # A^-1 b = (24, 12) / 29, y = A^-1 b / 8 = (3, 1.5) / 29; the A-norm projection of y onto
    # {(q, 1 - q)} minimises along u = (1, -1): q = -u'A(d0) / u'Au = (188.5 / 261) / (22 / 9) = 13 / 44.
    algo = olps.ONS()
    p, (a_mat, b_vec) = algo.update(algo.init_state(2), np.array([0.5, 0.5]), np.array([[2.0, 1.0]]),
                                    np.ones(2, bool))
    np.testing.assert_allclose(a_mat, np.array([[25.0, 8.0], [8.0, 13.0]]) / 9)
    np.testing.assert_allclose(b_vec, [8 / 3, 4 / 3])
    np.testing.assert_allclose(p, [13 / 44, 31 / 44], atol=1e-7)


def test_ons_symmetric_market_keeps_uniform():
    # Invariant: with all relatives equal every gradient is a multiple of 1, so by symmetry p stays uniform.
    w = olps.olps_weights(olps.ONS(), np.full((6, 3), 1.01))
    np.testing.assert_allclose(w, np.full((7, 3), 1 / 3), atol=1e-7)


def test_anticor_hand_worked():
    # w = 2. Asset 0: LX1 = (0, .1), LX2 = (.1, .2); asset 1: LX1 = (0, -.1), LX2 = (0, .05).
    # Mcor(0,1) = corr((0,.1), (0,.05)) = 1 > 0 and mean LX2_0 = .15 > .025; Mcor(1,1) = -1 -> A(1) = 1,
    # Mcor(0,0) = 1 -> A(0) = 0; claim 0->1 = 1 + 0 + 1 = 2 is asset 0's only claim: it moves all of b^(0).
    logs = np.array([[0.0, 0.0], [0.1, -0.1], [0.1, 0.0], [0.2, 0.05]])
    b, _ = olps.Anticor(window=2).update(None, np.array([0.5, 0.5]), np.exp(logs), np.ones(2, bool))
    np.testing.assert_allclose(b, [0.0, 1.0])
    # Fewer than 2w days: the drifted portfolio b * x_t / b.x_t is kept.
    b, _ = olps.Anticor(window=2).update(None, np.array([0.5, 0.5]), np.exp(logs[:3]), np.ones(2, bool))
    x = np.exp(logs[2])
    np.testing.assert_allclose(b, 0.5 * x / (0.5 * x.sum()))


@pytest.mark.parametrize("name", sorted(olps.ALGORITHMS))
def test_no_look_ahead_and_mask(name):
    rng = np.random.default_rng(2)
    x = np.exp(rng.normal(0, 0.03, size=(40, 4)))
    mask = np.ones((41, 4), bool)
    mask[:15, 3] = False  # asset 3 listed from row 15 on
    algo = olps.ALGORITHMS[name] if name != "anticor" else olps.Anticor(window=3)
    w = olps.olps_weights(algo, x, mask)
    assert np.all(w >= -1e-12) and np.allclose(w.sum(axis=1), 1.0)
    assert np.all(w[:15, 3] == 0)
    x2 = x.copy()
    x2[25:] = np.exp(rng.normal(0, 0.03, size=(15, 4)))  # change the future after row 25
    np.testing.assert_allclose(olps.olps_weights(algo, x2, mask)[:26], w[:26])


def test_olps_rejects_bad_input():
    with pytest.raises(ValueError):
        olps.olps_weights(olps.PAMR(), np.array([[1.0, -0.5]]))
    with pytest.raises(ValueError):
        olps.olps_weights(olps.PAMR(), np.ones((3, 2)), np.ones((3, 2), bool))


def test_vol_target_rule_hand_worked():
    # Sleeve = assets 0, 1 at 1/3 each (BIL, asset 2, is the T-bill leg). Daily sleeve returns alternate
    # +-0.03 * 2/3 = +-0.02; sample sd over 4 days = 0.02 * sqrt(4/3); annual (365) = 0.4413.
    hist = np.array([[0.03, 0.03, 0.0], [-0.03, -0.03, 0.0]] * 2)
    cfg = bm.EvaluationConfig(vol_target=0.2)
    cand = np.ones(3, bool)
    tickers = ("BTC-USD", "ETH-USD", "BIL")
    w = bm.rule_vol_target(hist, cand, 0.0, cfg, 1.0, tickers=tickers)
    scale = 0.2 / (0.02 * np.sqrt(4 / 3) * np.sqrt(365))
    np.testing.assert_allclose(w, [scale / 3, scale / 3, 1 / 3 + (1 - scale) * 2 / 3])
    capped = bm.rule_vol_target(hist, cand, 0.0, cfg, 0.5, tickers=tickers)
    assert capped[2] == pytest.approx(0.5) and capped.sum() < 1  # the cap sends the rest to cash
    loose = bm.rule_vol_target(hist, cand, 0.0, bm.EvaluationConfig(vol_target=5.0), 1.0, tickers=tickers)
    np.testing.assert_allclose(loose, [1 / 3] * 3)  # under the target: plain equal weight
    # 252 periods for a weekday-only universe; no T-bill leg: the rest stays in cash
    w = bm.rule_vol_target(hist, cand, 0.0, cfg, 1.0, tickers=("SPY", "QQQ", "GLD"))
    sd = float(np.std(hist @ np.full(3, 1 / 3), ddof=1)) * np.sqrt(252)
    np.testing.assert_allclose(w, np.full(3, 1 / 3) * 0.2 / sd)
    with pytest.raises(bm.DataError):
        bm.EvaluationConfig(vol_target=0.0)


def test_olps_benchmark_rules_registered_and_feasible():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0005, 0.02, size=(120, 4))
    listed = np.ones((120, 4), bool)
    listed[:80, 1] = False
    cfg = bm.EvaluationConfig(lookback=30)
    for name in ("olmar", "pamr", "ons", "anticor", "vol_target"):
        w = bm.benchmark_target(name, 100, returns, listed, ("BTC-USD", "ETH-USD", "SPY", "BIL"), 0.0, cfg, 0.4)
        assert w.shape == (5,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
        assert np.all(w[:-1] <= 0.4 + 1e-12) and w[1] == 0.0  # ETH is not listed over the whole window
