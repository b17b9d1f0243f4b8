"""Performance metrics: pure functions over a daily series of simple portfolio returns.

Conventions (every function follows them, skfolio-style):

- ``returns`` is a 1-D float array of shape (T,): the simple return of the portfolio from the close of
  day t to the close of day t+1, *after* costs (0.01 = +1%).
- ``rf`` is the risk-free simple return per period, a scalar or an array of shape (T,) aligned with
  ``returns``. Build it with :func:`risk_free_daily` (the universe's T-bill leg when it has one, else a
  configured annual rate de-annualised as ``(1 + rate) ** (1 / periods) - 1``, as quantstats does).
- ``periods`` is the number of return observations per year used to annualise: 365 when the portfolio
  holds assets quoted 7 days a week (crypto), 252 for a weekday-only portfolio (see
  :func:`periods_per_year`). Reports state which one they used.
- Weights are arrays of shape (T, N+1): the fraction of NAV in each of N assets plus cash (last column).
- Ratios follow quantstats' definitions so they can be checked against it: Sharpe and Sortino are the
  mean *excess* return over the (sample, ddof=1) standard deviation or the downside deviation
  ``sqrt(sum(min(x, 0)^2) / T)``, times ``sqrt(periods)``; the annualised return is the geometric one,
  ``(1 + total) ** (periods / T) - 1``; max drawdown is measured from an initial NAV of 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Periods per year for a portfolio that holds 7-day (crypto) assets and for a weekday-only one.
PERIODS_7D = 365
PERIODS_WEEKDAY = 252


def _as_1d(returns: np.ndarray, name: str = "returns") -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of daily returns, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def periods_per_year(calendars: Sequence[str]) -> int:
    """365 if any asset's calendar is ``"7d"`` (crypto, quoted every day), else 252 (weekday-only)."""
    return PERIODS_7D if any(c == "7d" for c in calendars) else PERIODS_WEEKDAY


def risk_free_daily(
    n_days: int, periods: int, annual_rate: float = 0.0, tbill_returns: np.ndarray | None = None
) -> np.ndarray:
    """Risk-free simple return per period, shape (n_days,).

    ``tbill_returns`` (n_days,): the daily simple returns of the universe's T-bill leg (BIL); used as is
    when given. Otherwise the constant ``(1 + annual_rate) ** (1 / periods) - 1``.
    """
    if tbill_returns is not None:
        rf = _as_1d(tbill_returns, "tbill_returns")
        if rf.shape[0] != n_days:
            raise ValueError(f"tbill_returns has {rf.shape[0]} days, expected {n_days}")
        return rf.copy()
    return np.full(n_days, (1.0 + float(annual_rate)) ** (1.0 / periods) - 1.0)


def excess_returns(returns: np.ndarray, rf: float | np.ndarray = 0.0) -> np.ndarray:
    """``returns - rf`` per period, shape (T,)."""
    r = _as_1d(returns)
    rf_arr = np.broadcast_to(np.asarray(rf, dtype=np.float64), r.shape)
    return r - rf_arr


def equity_curve(returns: np.ndarray, initial: float = 1.0) -> np.ndarray:
    """NAV after each period, shape (T,): ``initial * cumprod(1 + returns)``."""
    return initial * np.cumprod(1.0 + _as_1d(returns))


def total_return(returns: np.ndarray) -> float:
    """Compounded return over the whole series (0.25 = +25%)."""
    return float(np.prod(1.0 + _as_1d(returns)) - 1.0)


def final_value(returns: np.ndarray, initial: float = 1.0) -> float:
    """Final portfolio value starting from ``initial`` (in the same currency unit)."""
    return float(initial * (1.0 + total_return(returns)))


def annualised_return(returns: np.ndarray, periods: int) -> float:
    """Geometric annual growth rate ``(1 + total) ** (periods / T) - 1`` (quantstats' CAGR)."""
    r = _as_1d(returns)
    wealth = 1.0 + total_return(r)
    if wealth <= 0:
        return -1.0
    return float(wealth ** (periods / r.shape[0]) - 1.0)


def std(returns: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) of the per-period returns (not annualised)."""
    r = _as_1d(returns)
    return float(np.std(r, ddof=1)) if r.shape[0] > 1 else 0.0


def annualised_volatility(returns: np.ndarray, periods: int) -> float:
    """``std(returns, ddof=1) * sqrt(periods)``."""
    return std(returns) * float(np.sqrt(periods))


def mean_log_return(returns: np.ndarray) -> float:
    """Mean of ``log(1 + r)`` per period (the second paper's "mean log return")."""
    r = _as_1d(returns)
    if np.any(r <= -1.0):
        return float("-inf")
    return float(np.mean(np.log1p(r)))


def sharpe_ratio(returns: np.ndarray, rf: float | np.ndarray, periods: int) -> float:
    """Annualised Sharpe ratio of excess returns: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods)``.

    0.0 when the excess return has zero dispersion.
    """
    ex = excess_returns(returns, rf)
    if ex.shape[0] < 2:
        return 0.0
    sd = float(np.std(ex, ddof=1))
    if sd <= 1e-15:
        return 0.0
    return float(np.mean(ex) / sd * np.sqrt(periods))


def sortino_ratio(returns: np.ndarray, rf: float | np.ndarray, periods: int) -> float:
    """Annualised Sortino ratio of excess returns, downside deviation ``sqrt(sum(min(x,0)^2)/T)``.

    ``nan`` when no excess return is negative (as quantstats).
    """
    ex = excess_returns(returns, rf)
    downside = float(np.sqrt(np.sum(np.minimum(ex, 0.0) ** 2) / ex.shape[0]))
    if downside == 0.0:
        return float("nan")
    return float(np.mean(ex) / downside * np.sqrt(periods))


def drawdown_series(returns: np.ndarray) -> np.ndarray:
    """Drawdown after each period as a fraction of the running peak NAV (<= 0), shape (T,).

    The running peak starts at the initial NAV of 1, so a loss on day one is a drawdown.
    """
    nav = equity_curve(returns)
    peak = np.maximum.accumulate(np.maximum(nav, 1.0))
    return nav / peak - 1.0


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough fall of NAV, as a non-positive fraction (-0.3 = a 30% drawdown)."""
    return float(np.min(np.minimum(drawdown_series(returns), 0.0)))


def calmar_ratio(returns: np.ndarray, periods: int) -> float:
    """Annualised return over the absolute max drawdown; ``nan`` without a drawdown."""
    mdd = max_drawdown(returns)
    if mdd == 0.0:
        return float("nan")
    return annualised_return(returns, periods) / abs(mdd)


def value_at_risk(returns: np.ndarray, confidence: float = 0.95) -> float:
    """Historical one-period VaR as a return: the ``1 - confidence`` quantile (linear interpolation).

    Negative numbers are losses: -0.04 means a 5%-worst day loses at least 4%.
    """
    return float(np.quantile(_as_1d(returns), 1.0 - confidence))


def conditional_value_at_risk(returns: np.ndarray, confidence: float = 0.95) -> float:
    """Historical CVaR (expected shortfall): mean of the returns at or below the historical VaR."""
    r = _as_1d(returns)
    return float(np.mean(r[r <= value_at_risk(r, confidence)]))


def hit_rate(returns: np.ndarray, tol: float = 1e-12) -> float:
    """Fraction of periods with a positive return among periods with a non-zero return (0 if none).

    Returns within ``tol`` of 0 count as zero (a flat day whose NAV moved by floating-point round-off),
    so the figure does not depend on the last bit of the accounting.
    """
    r = _as_1d(returns)
    moved = np.abs(r) > tol
    nonzero = int(np.count_nonzero(moved))
    return float(np.count_nonzero(r[moved] > 0) / nonzero) if nonzero else 0.0


def average_weight(weights: np.ndarray) -> np.ndarray:
    """Mean weight of each column over time, shape (N+1,) for weights of shape (T, N+1)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be (T, N+1), got shape {w.shape}")
    return w.mean(axis=0)


def weight_by_category(weights: np.ndarray, categories: Sequence[str]) -> dict[str, np.ndarray]:
    """Weight in each category over time: ``{category: (T,)}``, plus ``"cash"`` for the last column.

    ``weights`` (T, N+1) with N = ``len(categories)``; categories keep their first-seen order.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(categories) + 1:
        raise ValueError(f"weights must be (T, {len(categories) + 1}), got shape {w.shape}")
    cats = np.asarray(categories)
    out: dict[str, np.ndarray] = {}
    for cat in dict.fromkeys(categories):
        out[cat] = w[:, :-1][:, cats == cat].sum(axis=1)
    out["cash"] = w[:, -1].copy()
    return out


def average_weight_by_category(weights: np.ndarray, categories: Sequence[str]) -> dict[str, float]:
    """Mean over time of :func:`weight_by_category`: ``{category: fraction of NAV}`` (plus ``"cash"``)."""
    return {k: float(v.mean()) for k, v in weight_by_category(weights, categories).items()}


#: The metrics of :func:`summarize`, in table order, with a label and a format kind for reports.
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("annual_return", "Annual return", "pct"),
    ("annual_volatility", "Annual vol", "pct"),
    ("sharpe", "Sharpe (excess)", "num"),
    ("sortino", "Sortino (excess)", "num"),
    ("max_drawdown", "Max DD", "pct"),
    ("calmar", "Calmar", "num"),
    ("var_95", "VaR 95", "pct"),
    ("cvar_95", "CVaR 95", "pct"),
    ("final_value", "Final value", "num"),
    ("mean_log_return", "Mean log ret", "sci"),
    ("std", "Std (daily)", "sci"),
    ("turnover", "Turnover/day", "pct"),
    ("hit_rate", "Hit rate", "pct"),
)


def summarize(
    returns: np.ndarray,
    rf: float | np.ndarray,
    periods: int,
    daily_turnover: np.ndarray | None = None,
    initial: float = 1.0,
) -> dict[str, float]:
    """Every scalar metric of one strategy, keyed as in :data:`METRIC_COLUMNS`.

    ``daily_turnover`` (T,): one-way turnover per day (see :func:`turnover`); its mean is reported.
    """
    r = _as_1d(returns)
    return {
        "total_return": total_return(r),
        "annual_return": annualised_return(r, periods),
        "annual_volatility": annualised_volatility(r, periods),
        "sharpe": sharpe_ratio(r, rf, periods),
        "sortino": sortino_ratio(r, rf, periods),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r, periods),
        "var_95": value_at_risk(r, 0.95),
        "cvar_95": conditional_value_at_risk(r, 0.95),
        "final_value": final_value(r, initial),
        "mean_log_return": mean_log_return(r),
        "std": std(r),
        "turnover": float(np.mean(daily_turnover)) if daily_turnover is not None else 0.0,
        "hit_rate": hit_rate(r),
    }


def weekday_groups(dates: np.ndarray) -> np.ndarray:
    """Group id per day (T,) for folding a 7-day calendar onto trading days: each day joins the last
    weekday on or before it (a Friday decision's weekend days join Friday); leading weekend days join
    the first group."""
    d = np.asarray(dates, dtype="datetime64[D]")
    weekday = ((d.astype(np.int64) + 3) % 7) < 5  # 1970-01-01 was a Thursday
    return np.maximum(np.cumsum(weekday) - 1, 0)


def compound_by_group(returns: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Compound simple returns (T,) within consecutive groups (T,) -> (G,) per-group returns."""
    r = np.asarray(returns, dtype=np.float64)
    g = np.asarray(groups)
    log_growth = np.bincount(g, weights=np.log1p(np.maximum(r, -1.0 + 1e-15)))
    return np.expm1(log_growth)
