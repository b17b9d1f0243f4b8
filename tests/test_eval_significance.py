"""Stationary bootstrap, Sharpe intervals, probabilistic and deflated Sharpe ratio."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from evaluation import significance as sig


def test_bootstrap_indices_are_blocks_of_consecutive_days():
    idx = sig.stationary_bootstrap_indices(50, 200, block=5.0, seed=1)
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    steps = (np.diff(idx, axis=1) % 50) == 1
    # a new block starts with probability 1/5, and a random start continues by chance 1/50 of the time
    assert 0.75 < steps.mean() < 0.85
    np.testing.assert_array_equal(idx, sig.stationary_bootstrap_indices(50, 200, block=5.0, seed=1))
    iid = sig.stationary_bootstrap_indices(50, 200, block=1.0, seed=1)
    assert ((np.diff(iid, axis=1) % 50) == 1).mean() < 0.05
    with pytest.raises(ValueError):
        sig.stationary_bootstrap_indices(1, 10)


def _coverage(level: float, reps: int = 60) -> float:
    mu, sd, n, periods = 0.001, 0.02, 400, 365
    true_sharpe = mu / sd * math.sqrt(periods)
    rng = np.random.default_rng(123)
    hits = 0
    for rep in range(reps):
        x = rng.normal(mu, sd, n)
        ci = sig.sharpe_confidence_interval(x, periods, level=level, n_boot=300, seed=rep)
        hits += ci.low <= true_sharpe <= ci.high
    return hits / reps


def test_bootstrap_interval_covers_true_sharpe_at_about_nominal_rate():
    cover95 = _coverage(0.95)
    assert 0.85 <= cover95 <= 1.0
    # the interval is not trivially wide: a 50% interval covers about half the time
    cover50 = _coverage(0.50)
    assert 0.3 <= cover50 <= 0.7


def test_difference_interval_detects_a_real_edge_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    common = rng.normal(0.0, 0.02, 1500)
    better = common + 0.002 + rng.normal(0.0, 0.002, 1500)
    same = common + rng.normal(0.0, 0.002, 1500)
    real = sig.sharpe_difference_interval(better, common, 365, n_boot=400)
    assert real.low > 0 and real.excludes_zero
    fake = sig.sharpe_difference_interval(same, common, 365, n_boot=400)
    assert fake.low < 0 < fake.high
    with pytest.raises(ValueError):
        sig.sharpe_difference_interval(better, common[:-1], 365)


def test_mean_difference_over_folds_matches_single_fold_and_narrows_with_more_folds():
    rng = np.random.default_rng(1)
    folds = []
    for _ in range(3):
        common = rng.normal(0.0, 0.02, 365)
        folds.append((common + rng.normal(0.0, 0.004, 365), common))
    one = sig.mean_sharpe_difference_interval(folds[:1], 365, n_boot=300, seed=5)
    ref = sig.sharpe_difference_interval(*folds[0], 365, n_boot=300, seed=5)
    assert (one.estimate, one.low, one.high) == pytest.approx((ref.estimate, ref.low, ref.high), abs=1e-12)
    three = sig.mean_sharpe_difference_interval(folds, 365, n_boot=300, seed=5)
    points = [sig.sharpe_difference_interval(a, b, 365, n_boot=10).estimate for a, b in folds]
    assert three.estimate == pytest.approx(np.mean(points), abs=1e-12)
    # averaging three independent spans shrinks the interval (about 1/sqrt(3) of one span's width)
    assert three.high - three.low < 0.8 * (one.high - one.low)
    with pytest.raises(ValueError):
        sig.mean_sharpe_difference_interval([], 365)
    with pytest.raises(ValueError):
        sig.mean_sharpe_difference_interval([(folds[0][0], folds[0][1][:-1])], 365)


def test_psr_matches_formula_and_normal_case():
    rng = np.random.default_rng(7)
    x = rng.standard_t(5, 800) * 0.01 + 0.001
    sr = x.mean() / x.std(ddof=1)
    g3, g4 = stats.skew(x), stats.kurtosis(x, fisher=False)
    expected = stats.norm.cdf((sr - 0.02) * math.sqrt(799) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert sig.probabilistic_sharpe_ratio(x, 0.02) == pytest.approx(expected, rel=1e-12)
    # zero benchmark and zero Sharpe -> one half
    assert sig.psr_from_moments(0.0, 0.0, 100, 0.0, 3.0) == pytest.approx(0.5)


def test_deflated_sharpe_paper_example():
    # Bailey & Lopez de Prado (2014): annualised SR 2.5 over T = 1250 days, N = 100 trials with annualised
    # variance 1/2 of the trial Sharpes, skew -3, kurtosis 10 -> DSR ~ 0.9004.
    sr = 2.5 / math.sqrt(250)
    sr0 = sig.expected_max_sharpe(100, 0.5 / 250)
    assert sig.psr_from_moments(sr, sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=1e-3)
    assert sig.expected_max_sharpe(1, 1.0) == 0.0


def test_deflated_sharpe_falls_with_more_trials():
    rng = np.random.default_rng(3)
    x = rng.normal(0.001, 0.02, 700)
    one, sr0_one = sig.deflated_sharpe_ratio(x, 1)
    many, sr0_many = sig.deflated_sharpe_ratio(x, 200)
    assert sr0_one == 0.0 and sr0_many > 0
    assert one == pytest.approx(sig.probabilistic_sharpe_ratio(x, 0.0))
    assert many < one


def test_find_tuning_trials(tmp_path):
    assert sig.find_tuning_trials(tmp_path) == (1, None, ())
    (tmp_path / "other.json").write_text("{not json")
    (tmp_path / "small.json").write_text(json.dumps({"n_trials": 3}))
    trials = [{"number": 0, "state": "COMPLETE", "value": 1.5}, {"number": 1, "state": "PRUNED", "value": 0.2},
              {"number": 2, "state": "COMPLETE", "value": 0.5}, {"number": 3, "state": "FAIL", "value": None}]
    (tmp_path / "trials.json").write_text(json.dumps({"n_trials": 40, "best_value": 1.5, "trials": trials}))
    n, path, sharpes = sig.find_tuning_trials(tmp_path, tmp_path / "missing")
    assert n == 40 and path.name == "trials.json" and sharpes == (1.5, 0.5)
