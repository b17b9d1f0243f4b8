"""Is the agent's Sharpe ratio real? Stationary bootstrap intervals and the probabilistic/deflated Sharpe.

- :func:`stationary_bootstrap_indices` draws Politis & Romano (1994) resamples: blocks of geometric length
  (mean ``block``) starting at uniform random days, wrapping around the end, so serial dependence
  (volatility clustering) survives the resampling.
- :func:`sharpe_confidence_interval` and :func:`sharpe_difference_interval` are percentile intervals over
  those resamples; the difference resamples both series with the *same* indices (paired days).
- :func:`probabilistic_sharpe_ratio` (Bailey & Lopez de Prado, 2012) is the probability that the true
  Sharpe exceeds a benchmark, given the sample length, skewness and kurtosis of the returns;
  :func:`deflated_sharpe_ratio` (2014) uses as benchmark the Sharpe expected from the best of
  ``n_trials`` unskilled trials.

Inputs are 1-D arrays of per-period *excess* returns (return minus the risk-free rate), shape (T,);
Sharpe ratios inside the PSR/DSR formulas are per period (not annualised); intervals are annualised with
``periods`` (365 or 252).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from training.metrics import sharpe_ratio_rows

EULER_GAMMA = 0.5772156649015329


def default_block_length(n: int) -> float:
    """Mean block length ``n ** (1/3)`` (at least 1), the usual rate for the stationary bootstrap."""
    return max(1.0, float(n) ** (1.0 / 3.0))


def stationary_bootstrap_indices(
    n: int, n_boot: int, block: float | None = None, seed: int = 0
) -> np.ndarray:
    """Politis-Romano stationary bootstrap indices, shape (n_boot, n), int64 in [0, n).

    Each position starts a new block with probability ``1 / block`` (a uniformly random day); otherwise it
    continues the previous block with the next day, wrapping from ``n - 1`` to 0.
    """
    if n < 2:
        raise ValueError("the bootstrap needs at least 2 observations")
    block = default_block_length(n) if block is None else float(block)
    if block < 1.0:
        raise ValueError(f"mean block length must be >= 1, got {block}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_boot, n))
    new_block = rng.random((n_boot, n)) < 1.0 / block
    new_block[:, 0] = True
    pos = np.arange(n)
    # position of the most recent block start at or before each t
    last_start = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
    first_day = np.take_along_axis(starts, last_start, axis=1)
    return (first_day + (pos - last_start)) % n


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile interval at ``level`` (0.95 = 95%)."""

    estimate: float
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def sharpe_confidence_interval(
    excess: np.ndarray, periods: int, level: float = 0.95, n_boot: int = 1000,
    block: float | None = None, seed: int = 0,
) -> Interval:
    """Annualised Sharpe of ``excess`` (T,) with a stationary-bootstrap percentile interval."""
    x = np.asarray(excess, dtype=np.float64)
    idx = stationary_bootstrap_indices(x.shape[0], n_boot, block, seed)
    boot = sharpe_ratio_rows(x[idx], periods)
    point = float(sharpe_ratio_rows(x[None, :], periods)[0])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(point, float(lo), float(hi), level)


def sharpe_difference_interval(
    excess_a: np.ndarray, excess_b: np.ndarray, periods: int, level: float = 0.95,
    n_boot: int = 1000, block: float | None = None, seed: int = 0,
) -> Interval:
    """Sharpe(a) - Sharpe(b), annualised, with a paired stationary-bootstrap percentile interval.

    Both series (T,) are resampled with the same day indices, so their correlation is kept.
    """
    a = np.asarray(excess_a, dtype=np.float64)
    b = np.asarray(excess_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"series must have the same length, got {a.shape} and {b.shape}")
    idx = stationary_bootstrap_indices(a.shape[0], n_boot, block, seed)
    diff = sharpe_ratio_rows(a[idx], periods) - sharpe_ratio_rows(b[idx], periods)
    point = float(sharpe_ratio_rows(a[None, :], periods)[0] - sharpe_ratio_rows(b[None, :], periods)[0])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return Interval(point, float(lo), float(hi), level)


def mean_sharpe_difference_interval(
    pairs: list[tuple[np.ndarray, np.ndarray]], periods: int, level: float = 0.95, n_boot: int = 1000,
    block: float | None = None, seed: int = 0,
) -> Interval:
    """Mean over K spans (e.g. walk-forward folds) of Sharpe(a_k) - Sharpe(b_k), with a percentile interval.

    ``pairs``: K tuples of paired series (T_k,) each. Every span is resampled with its own paired stationary
    bootstrap (the spans are treated as independent); resample j of the mean is the mean of the K spans'
    resample j. With K = 1 this equals :func:`sharpe_difference_interval` (same seed).
    """
    if not pairs:
        raise ValueError("need at least one pair of series")
    diffs, points = [], []
    for k, (ea, eb) in enumerate(pairs):
        a, b = np.asarray(ea, dtype=np.float64), np.asarray(eb, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"series must have the same length, got {a.shape} and {b.shape}")
        idx = stationary_bootstrap_indices(a.shape[0], n_boot, block, seed + k)
        diffs.append(sharpe_ratio_rows(a[idx], periods) - sharpe_ratio_rows(b[idx], periods))
        points.append(sharpe_ratio_rows(a[None, :], periods)[0] - sharpe_ratio_rows(b[None, :], periods)[0])
    mean = np.mean(diffs, axis=0)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(mean, [alpha, 1.0 - alpha])
    return Interval(float(np.mean(points)), float(lo), float(hi), level)


def _moments(excess: np.ndarray) -> tuple[float, float, float, int]:
    """Per-period Sharpe, skewness, (non-excess) kurtosis and length of ``excess``."""
    x = np.asarray(excess, dtype=np.float64)
    n = x.shape[0]
    sd = float(np.std(x, ddof=1))
    sr = float(np.mean(x) / sd) if sd > 1e-15 else 0.0
    if sd <= 1e-15:
        return sr, 0.0, 3.0, n
    return sr, float(stats.skew(x)), float(stats.kurtosis(x, fisher=False)), n


def psr_from_moments(sr: float, sr_benchmark: float, n: int, skew: float, kurtosis: float) -> float:
    """PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)), per-period SRs."""
    var_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if n < 2 or var_term <= 0:
        return float("nan")
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var_term)
    return float(stats.norm.cdf(z))


def probabilistic_sharpe_ratio(excess: np.ndarray, sr_benchmark: float = 0.0) -> float:
    """Probability that the true per-period Sharpe of ``excess`` (T,) exceeds ``sr_benchmark`` (per period)."""
    sr, skew, kurt, n = _moments(excess)
    return psr_from_moments(sr, sr_benchmark, n, skew, kurt)


def expected_max_sharpe(n_trials: int, trials_variance: float) -> float:
    """Expected maximum per-period Sharpe of ``n_trials`` unskilled trials whose Sharpes have this variance.

    ``sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))`` with g the Euler-Mascheroni
    constant; 0 for a single trial.
    """
    if n_trials <= 1:
        return 0.0
    return math.sqrt(max(trials_variance, 0.0)) * (
        (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n_trials)
        + EULER_GAMMA * stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    excess: np.ndarray, n_trials: int, trials_variance: float | None = None
) -> tuple[float, float]:
    """(DSR, SR0): PSR of ``excess`` (T,) against SR0, the expected best per-period Sharpe of ``n_trials``.

    ``trials_variance``: variance of the per-period Sharpes across trials. When unknown, the sampling
    variance of this Sharpe estimate is used, ``(1 - skew SR + (kurt - 1)/4 SR^2) / (T - 1)``, i.e. trials
    that differ only by estimation noise.
    """
    sr, skew, kurt, n = _moments(excess)
    if trials_variance is None:
        trials_variance = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr, 0.0) / max(n - 1, 1)
    sr0 = expected_max_sharpe(n_trials, trials_variance)
    return psr_from_moments(sr, sr0, n, skew, kurt), sr0


def find_tuning_trials(*folders: str | Path) -> tuple[int, Path | None, tuple[float, ...]]:
    """Tuning trials recorded next to a run: ``(n_trials, file, trial_sharpes)``, ``(1, None, ())`` if none.

    Looks in each folder for ``*.json`` files holding an integer ``"n_trials"`` (``trials.json`` written by
    ``training/hyperparameter_tuning.py``) and takes the largest count. ``trial_sharpes`` are the
    annualised validation Sharpes of the finished trials (``trials[i]["value"]`` or ``["sharpe"]``), used
    for the variance of the trials' Sharpes in the deflated Sharpe ratio.
    """
    best: tuple[int, Path | None, tuple[float, ...]] = (1, None, ())
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            n = doc.get("n_trials") if isinstance(doc, dict) else None
            if isinstance(n, int) and not isinstance(n, bool) and n > best[0]:
                sharpes = []
                for trial in doc.get("trials") or []:
                    if not isinstance(trial, dict) or trial.get("state", "COMPLETE") != "COMPLETE":
                        continue
                    value = trial.get("value", trial.get("sharpe"))
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        sharpes.append(float(value))
                best = (n, path, tuple(sharpes))
    return best
