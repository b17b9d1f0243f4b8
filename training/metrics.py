"""The one metrics module: pure functions over numpy arrays, one definition per measure (skfolio-style).

It sits in ``training/`` because that is the lowest layer both of its users can import: training's
validation and learning curves (``training.curves``) and the evaluation layer (backtester, reports,
significance) above it; the study scripts in ``benchmarks/`` and the notebooks in ``research/`` import it
too. ``evaluation.performance_metrics`` re-exports it under the same names.

Conventions (every function follows them; the reports state them):

- ``returns`` is a 1-D float array of shape (T,): the simple return of the portfolio from the close of
  day t to the close of day t+1, *after* costs (0.01 = +1%). Empty input or NaN/inf raises ``ValueError``:
  a metric is never silently computed over a subset of the days.
- ``rf`` is the risk-free simple return per period, a scalar or an array of shape (T,) aligned with
  ``returns``: the universe's T-bill leg when it has one, else a configured annual rate de-annualised
  geometrically, ``(1 + rate) ** (1 / periods) - 1`` (:func:`risk_free_daily`; as quantstats does).
- ``periods`` is the number of return observations per year: 365 when the portfolio holds an asset quoted
  7 days a week (crypto), 252 for a weekday-only one (:func:`periods_per_year`; weekend days are then
  folded into the previous weekday, :func:`fold_to_periods`).
- Signs follow quantstats: ``max_drawdown``, ``value_at_risk`` and ``conditional_value_at_risk`` are
  *returns*, so a loss is negative (-0.22 = a 22% drawdown; VaR -0.04 = the 5%-worst day loses 4% or more).
  VaR is the historical ``1 - confidence`` quantile (linear interpolation), CVaR the mean of the returns at
  or below it (quantstats' ``method="historical"``).
- Sharpe and Sortino are annualised ratios of the *excess* return ``r - rf``: mean over the sample std
  (ddof=1), or over the downside deviation ``sqrt(sum(min(x, 0)^2) / T)``, times ``sqrt(periods)``.
  Sharpe is 0.0 when the excess return has zero dispersion; Sortino is NaN (undefined, ``null`` in JSON)
  when no day has a negative excess return. The annual return is the geometric one (quantstats' CAGR).
- Weights are arrays of shape (T, N+1): the fraction of NAV in each of N assets plus cash (last column).
- Diagnostics (what the policy *does*): :func:`active_share` (distance from equal weight),
  :func:`regime_response` / :func:`hedge_response` (defensive / hedge share on volatile days minus the
  rest), turnover and :func:`cost_drag`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.universe import PERIODS_7D, PERIODS_WEEKDAY, periods_per_year  # noqa: F401 (re-exported)

#: Trailing window (days) of the volatility that defines volatile days, and the share of days called volatile.
REGIME_WINDOW = 20
REGIME_TOP_FRACTION = 0.1


def _as_1d(returns: np.ndarray | Sequence[float], name: str = "returns") -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of daily returns, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# -- annualisation and the risk-free leg ----------------------------------------------------------------
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


def fold_to_periods(dates: np.ndarray, returns: np.ndarray, rf: np.ndarray, turnover: np.ndarray,
                    cost: np.ndarray, periods: int) -> tuple[np.ndarray, ...]:
    """Daily series on the 7-day calendar as per-period series: unchanged for 365 periods a year; for 252,
    returns and rf compounded and turnover and cost summed over each weekday and its following weekend.

    ``dates``, ``returns``, ``rf``, ``turnover``, ``cost``: (T,). Returns (returns, rf, turnover, cost).
    """
    if periods != PERIODS_WEEKDAY:
        return (np.asarray(returns, np.float64), np.asarray(rf, np.float64), np.asarray(turnover, np.float64),
                np.asarray(cost, np.float64))
    g = weekday_groups(dates)
    return (compound_by_group(returns, g), compound_by_group(rf, g), np.bincount(g, weights=turnover),
            np.bincount(g, weights=cost))


def excess_returns(returns: np.ndarray, rf: float | np.ndarray = 0.0) -> np.ndarray:
    """``returns - rf`` per period, shape (T,)."""
    r = _as_1d(returns)
    rf_arr = np.broadcast_to(np.asarray(rf, dtype=np.float64), r.shape)
    return r - rf_arr


# -- return and risk measures ---------------------------------------------------------------------------
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
    """Sample standard deviation (ddof=1) of the per-period returns (not annualised); 0.0 for one period."""
    r = _as_1d(returns)
    return float(np.std(r, ddof=1)) if r.shape[0] > 1 else 0.0


def annualised_volatility(returns: np.ndarray, periods: int) -> float:
    """``std(returns, ddof=1) * sqrt(periods)``."""
    return std(returns) * float(np.sqrt(periods))


def mean_log_return(returns: np.ndarray) -> float:
    """Mean of ``log(1 + r)`` per period (the second paper's "mean log return"); -inf after a total loss."""
    r = _as_1d(returns)
    if np.any(r <= -1.0):
        return float("-inf")
    return float(np.mean(np.log1p(r)))


#: Per-period dispersion at or below which a return series counts as riskless (Sharpe 0, Sortino undefined):
#: the float residue of NAV accounting and the 1e-10 weights a saturated softmax leaves in risky assets give
#: 1e-14..2e-12 a day (an all-cash SAC policy scored Sharpes of -0.98 and +1.17 from them); the quietest real
#: asset (a T-bill ETF) has about 1e-4.
ZERO_DISPERSION = 1e-9


def sharpe_ratio_rows(excess: np.ndarray, periods: int) -> np.ndarray:
    """Annualised Sharpe of each row of per-period excess returns ``excess`` (B, T) -> (B,):
    ``mean / std(ddof=1) * sqrt(periods)``; 0.0 for a row with fewer than 2 periods or zero dispersion
    (std <= ``ZERO_DISPERSION``: an all-cash policy's float residue must not score a Sharpe of +-1).
    The vectorised form of :func:`sharpe_ratio` (bootstrap resamples use it)."""
    x = np.asarray(excess, dtype=np.float64)
    out = np.zeros(x.shape[0])
    if x.shape[1] < 2:
        return out
    sd = x.std(axis=1, ddof=1)
    ok = sd > ZERO_DISPERSION
    out[ok] = x.mean(axis=1)[ok] / sd[ok] * np.sqrt(periods)
    return out


def sharpe_ratio(returns: np.ndarray, rf: float | np.ndarray, periods: int) -> float:
    """Annualised Sharpe ratio of excess returns: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods)``.

    ``returns`` (T,), ``rf`` scalar or (T,). 0.0 for fewer than 2 periods or zero dispersion.
    """
    return float(sharpe_ratio_rows(excess_returns(returns, rf)[None, :], periods)[0])


def sortino_ratio(returns: np.ndarray, rf: float | np.ndarray, periods: int) -> float:
    """Annualised Sortino ratio of excess returns, downside deviation ``sqrt(sum(min(x,0)^2)/T)``.

    ``returns`` (T,), ``rf`` scalar or (T,). NaN when no excess return is negative (as quantstats) or the
    downside deviation is float residue (<= ``ZERO_DISPERSION``).
    """
    ex = excess_returns(returns, rf)
    downside = float(np.sqrt(np.sum(np.minimum(ex, 0.0) ** 2) / ex.shape[0]))
    if downside <= ZERO_DISPERSION:
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
    """Annualised return over the absolute max drawdown; NaN without a drawdown."""
    mdd = max_drawdown(returns)
    if mdd == 0.0:
        return float("nan")
    return annualised_return(returns, periods) / abs(mdd)


def value_at_risk(returns: np.ndarray, confidence: float = 0.95) -> float:
    """Historical one-period VaR as a return: the ``1 - confidence`` quantile (linear interpolation).

    Negative numbers are losses: -0.04 means the 5%-worst days lose at least 4%.
    """
    return float(np.quantile(_as_1d(returns), 1.0 - confidence))


def conditional_value_at_risk(returns: np.ndarray, confidence: float = 0.95) -> float:
    """Historical CVaR (expected shortfall) as a return: mean of the returns at or below the historical VaR."""
    r = _as_1d(returns)
    return float(np.mean(r[r <= value_at_risk(r, confidence)]))


def hit_rate(returns: np.ndarray, tol: float = 1e-12) -> float:
    """Fraction of periods with a positive return among periods with a non-zero return (0 if none).

    Returns within ``tol`` of 0 count as zero (a flat day whose NAV moved by floating-point round-off).
    """
    r = _as_1d(returns)
    moved = np.abs(r) > tol
    nonzero = int(np.count_nonzero(moved))
    return float(np.count_nonzero(r[moved] > 0) / nonzero) if nonzero else 0.0


# -- what the policy does: weights, trading and diagnostics ---------------------------------------------
def cost_drag(daily_cost: np.ndarray, periods: int) -> float:
    """Annual return lost to trading costs: ``mean(daily_cost) * periods``.

    ``daily_cost`` (T,): fees + slippage paid per period as a fraction of the pre-trade NAV.
    """
    c = _as_1d(daily_cost, "daily_cost")
    return float(np.mean(c) * periods)


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


def equal_weights(listed: np.ndarray) -> np.ndarray:
    """Equal-weight portfolio per day, shape (T, N+1): ``1 / n_t`` on each of the n_t listed assets, no cash
    (all cash on a day with no listed asset). ``listed`` (T, N) bool."""
    listed = np.asarray(listed, dtype=bool)
    n = listed.sum(axis=1, keepdims=True)
    risky = np.where(n > 0, listed / np.maximum(n, 1), 0.0)
    return np.concatenate([risky, (n == 0).astype(np.float64)], axis=1)


def active_share(weights: np.ndarray, listed: np.ndarray) -> float:
    """Mean over days of ``0.5 * sum_i |w[t,i] - w_ew[t,i]|`` over the N assets and cash.

    ``weights`` (T, N+1), cash last; ``listed`` (T, N) bool, the assets that exist on each day; the
    equal weight ``w_ew`` is :func:`equal_weights` (no cash). 0 = equal weight; 1 = nothing in common
    (e.g. all cash). A policy stuck at uniform weights over N assets + cash scores ``1 / (N + 1)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    ew = equal_weights(listed)
    if w.shape != ew.shape:
        raise ValueError(f"weights {w.shape} and listed {np.shape(listed)} do not describe the same days/assets")
    return float((0.5 * np.abs(w - ew).sum(axis=1)).mean())


def equal_weight_risky_return(returns: np.ndarray, listed: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Return per day (T,) of the equal-weight portfolio of the listed non-stable ("risky") assets.

    ``returns`` (T, N) simple returns, ``listed`` (T, N) bool; 0 on a day with no listed risky asset.
    """
    risky = np.array([c != "stable" for c in categories])
    on = np.asarray(listed, dtype=bool) & risky
    n = on.sum(axis=1)
    return np.where(n > 0, (np.asarray(returns, np.float64) * on).sum(axis=1) / np.maximum(n, 1), 0.0)


def trailing_volatility(market: np.ndarray, window: int = REGIME_WINDOW) -> np.ndarray:
    """Volatility known at each day's close, shape (T,): ``std(market[t-window:t], ddof=1)``.

    ``market[t]`` (T,) is the return from close t to close t+1 (the store's convention), so the window
    ``[t-window, t)`` ends with the return *into* day t: no look-ahead. Days with fewer than 2 past
    returns get 0.
    """
    m = np.asarray(market, dtype=np.float64)
    out = np.zeros(m.shape[0])
    for t in range(2, m.shape[0]):
        out[t] = np.std(m[max(t - window, 0):t], ddof=1)
    return out


def volatile_days(volatility: np.ndarray, top_fraction: float = REGIME_TOP_FRACTION) -> np.ndarray:
    """Mask (T,) of the ``max(1, round(top_fraction * T))`` days with the highest ``volatility`` (T,); ties
    go to the earlier day."""
    v = np.asarray(volatility, dtype=np.float64)
    n_top = max(1, int(round(top_fraction * v.shape[0])))
    mask = np.zeros(v.shape[0], dtype=bool)
    mask[np.argsort(-v, kind="stable")[:n_top]] = True
    return mask


def _share_response(share: np.ndarray, volatile: np.ndarray) -> float:
    volatile = np.asarray(volatile, dtype=bool)
    if not volatile.any() or volatile.all():
        return 0.0
    return float(share[volatile].mean() - share[~volatile].mean())


def defensive_share(weights: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Stable-category + cash share of NAV per day (T,) for ``weights`` (T, N+1), cash last; ``1 -`` it is
    the risky exposure."""
    by_cat = weight_by_category(weights, categories)
    return by_cat.get("stable", np.zeros_like(by_cat["cash"])) + by_cat["cash"]


def regime_response(weights: np.ndarray, categories: Sequence[str], volatile: np.ndarray) -> float:
    """Stable + cash share of NAV on the volatile days minus the same share on the other days.

    ``weights`` (T, N+1) cash last; ``categories`` (N,); ``volatile`` (T,) bool (:func:`volatile_days` of
    the trailing volatility of the equal-weight risky return). Positive = the policy moves to stable/cash
    when volatility is high; 0 for a constant allocation (and when every day or no day is volatile).
    """
    return _share_response(defensive_share(weights, categories), volatile)


def hedge_response(weights: np.ndarray, categories: Sequence[str], volatile: np.ndarray) -> float:
    """Hedge-category share of NAV on the volatile days minus the same share on the other days
    (shapes as in :func:`regime_response`); 0 for a universe without a hedge category."""
    by_cat = weight_by_category(weights, categories)
    hedge = by_cat.get("hedge", np.zeros(np.shape(weights)[0]))
    return _share_response(hedge, volatile)


# -- one strategy, every measure ------------------------------------------------------------------------
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
    ("cost_drag", "Cost drag/yr", "pct"),
    ("hit_rate", "Hit rate", "pct"),
)
#: The diagnostics of :func:`diagnostics`, with a label and a format kind for reports.
DIAGNOSTIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("active_share", "Active share", "pct"),
    ("regime_response", "Regime response", "pct"),
    ("hedge_response", "Hedge response", "pct"),
)


def summarize(
    returns: np.ndarray,
    rf: float | np.ndarray,
    periods: int,
    daily_turnover: np.ndarray | None = None,
    initial: float = 1.0,
    daily_cost: np.ndarray | None = None,
) -> dict[str, float]:
    """Every scalar return/risk metric of one strategy, keyed as in :data:`METRIC_COLUMNS`.

    ``returns`` (T,) per period; ``rf`` scalar or (T,); ``daily_turnover`` (T,) traded notional over NAV
    per period (:func:`turnover`), its mean reported; ``daily_cost`` (T,) costs over pre-trade NAV per
    period, reported as :func:`cost_drag`. Missing turnover/cost count as 0.
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
        "cost_drag": cost_drag(daily_cost, periods) if daily_cost is not None else 0.0,
        "hit_rate": hit_rate(r),
    }


def diagnostics(weights: np.ndarray, listed: np.ndarray, categories: Sequence[str],
                volatile: np.ndarray) -> dict[str, float]:
    """The behaviour diagnostics of one weight path, keyed as in :data:`DIAGNOSTIC_COLUMNS`.

    ``weights`` (T, N+1) post-trade weights per decision day, cash last; ``listed`` (T, N) bool on the same
    days; ``categories`` (N,); ``volatile`` (T,) bool (:func:`volatile_days`).
    """
    return {
        "active_share": active_share(weights, listed),
        "regime_response": regime_response(weights, categories, volatile),
        "hedge_response": hedge_response(weights, categories, volatile),
    }
