"""The rule a residual policy tilts (``EnvConfig.action_prior``), and the portfolio rules it is built from.

With a prior ``p_t`` the env hands ``a * p_t`` to its target step instead of the action ``a`` (the step
normalises scores), so an agent whose latent is zero -- uniform weights -- trades to the rule and what
it learns is a multiplicative departure from it. The table is built once per env from data known at
each day's close: ``p_t`` reads only ``returns[s]`` for ``s < t``.

``cap_weights``, ``listed_through`` and ``vol_target_weights`` are defined here, below the evaluation
layer, because the env needs them; ``evaluation.benchmarks`` builds its equal-weight and vol-target
benchmarks from these same functions (one definition of each rule).
"""

from __future__ import annotations

import numpy as np

from data.config import DataConfig
from data.universe import calendar_of, periods_per_year
from environments.config import EnvConfig

#: The ``EnvConfig`` fields the prior reads (``prior_row``): what an export records so the rule can be rebuilt.
PRIOR_FIELDS: tuple[str, ...] = ("action_prior", "prior_vol_target", "prior_lookback", "prior_floor", "max_weight")
#: The T-bill leg that takes what vol-targeting frees (``DataConfig.risk_free``'s default ticker).
TBILL_TICKER = DataConfig.risk_free


def cap_weights(scores: np.ndarray, max_weight: float) -> np.ndarray:
    """Non-negative ``scores`` (N,) -> weights proportional to them, each <= ``max_weight``, sum <= 1.

    Water-filling: assets over the cap are fixed at it and the rest of the budget is re-spread over the
    others in proportion to their scores; the budget nobody can absorb stays in cash (sum < 1).
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    w = np.zeros_like(s)
    free = s > 0
    budget = 1.0
    while free.any() and budget > 1e-12:
        trial = budget * s[free] / s[free].sum()
        over = trial > max_weight + 1e-12
        if not over.any():
            w[free] = trial
            break
        idx = np.flatnonzero(free)[over]
        w[idx] = max_weight
        free[idx] = False
        budget = 1.0 - w.sum()
    return w


def listed_through(listed: np.ndarray, t: int, lookback: int) -> np.ndarray:
    """Assets (N,) bool listed on every day of ``[t - lookback, t]``; ``listed`` (T, N) bool."""
    return listed[max(t - lookback, 0) : t + 1].all(axis=0)


def vol_target_weights(
    history: np.ndarray, candidates: np.ndarray, max_weight: float, target: float,
    tickers: tuple[str, ...] = (), tbill: str = TBILL_TICKER,
) -> np.ndarray:
    """Vol-targeted equal weight (N,): equal weight over ``candidates`` (capped), the sleeve without the
    T-bill leg scaled by ``min(1, target / vol)``; what the scaling frees goes to the T-bill leg (when a
    candidate) up to ``max_weight``, the rest to cash (sum < 1).

    ``history`` (L, N): trailing daily simple returns. ``vol``: annualised sample volatility (ddof=1) of
    the sleeve's return ``history @ sleeve`` (``periods_per_year`` of ``tickers``' calendars, 365 without
    tickers). Fewer than two days of history, or no sleeve, gives plain equal weight.
    """
    w = cap_weights(candidates.astype(np.float64), max_weight)
    leg = [i for i, tk in enumerate(tickers) if tk == tbill and candidates[i]]
    sleeve = w.copy()
    sleeve[leg] = 0.0
    if history.shape[0] < 2 or not sleeve.any():
        return w
    periods = periods_per_year([calendar_of(tk) for tk in tickers]) if tickers else 365
    vol = float(np.std(history @ sleeve, ddof=1)) * np.sqrt(periods)
    scale = min(1.0, target / vol) if vol > 0 else 1.0
    out = scale * sleeve
    if leg:
        out[leg[0]] = min(max_weight, w[leg[0]] + (1.0 - scale) * float(sleeve.sum()))
    return out


def prior_row(cfg: EnvConfig, returns: np.ndarray, listed: np.ndarray, tickers: tuple[str, ...], t: int) -> np.ndarray:
    """Day ``t``'s prior (N+1,), cash last: ``(1 - floor) * v_t + floor * u_t`` (see :func:`prior_table`).

    Reads ``returns[t - cfg.prior_lookback : t]`` and ``listed[t - cfg.prior_lookback : t + 1]`` only.
    """
    n = returns.shape[1]
    history = returns[max(t - cfg.prior_lookback, 0) : t]
    rule = vol_target_weights(history, listed_through(listed, t, cfg.prior_lookback), min(cfg.max_weight, 1.0),
                              cfg.prior_vol_target, tuple(tickers))
    out = np.empty(n + 1)
    out[:n] = rule
    out[n] = max(1.0 - float(rule.sum()), 0.0)
    uniform = np.append(listed[t], True) / (int(listed[t].sum()) + 1)
    return (1.0 - cfg.prior_floor) * out + cfg.prior_floor * uniform


def prior_table(cfg: EnvConfig, returns: np.ndarray, listed: np.ndarray, tickers: tuple[str, ...]) -> np.ndarray | None:
    """The prior ``p`` (T, N+1), cash last, rows on the simplex; None when ``cfg.action_prior`` is "none".

    ``returns`` (T, N): ``returns[s]`` = simple return from close s to close s+1. ``listed`` (T, N) bool.
    ``p_t = (1 - floor) * v_t + floor * u_t``: ``v_t`` is the backtester's vol-target benchmark at day t
    (``vol_target_weights`` over the assets listed through the last ``cfg.prior_lookback`` days, on the
    returns before t, target ``cfg.prior_vol_target``, cap ``cfg.max_weight``, the rest in cash) and
    ``u_t`` is 1/(K+1) on the K assets listed at t and on cash.
    """
    if cfg.action_prior == "none":
        return None
    listed = np.asarray(listed, dtype=bool)
    return np.stack([prior_row(cfg, returns, listed, tickers, t) for t in range(returns.shape[0])])


def tilt(policy: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """A residual policy's weights (N+1,) from its output ``policy`` (N+1,) and the day's ``prior`` (N+1,):
    the env's scores ``policy * prior`` normalised, for callers outside the env such as serving; all cash
    when the scores sum to 0, as the env's target step does."""
    scores = np.asarray(policy, np.float64) * prior
    total = float(scores.sum())
    if total > 0:
        return scores / total
    out = np.zeros_like(scores)
    out[-1] = 1.0
    return out
