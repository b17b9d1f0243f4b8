"""One deterministic pass of a policy through the environment, and its metrics: the code that training's
validation and the backtester share, so that ``validation.json`` and the backtester's agent row are the
same numbers for the same span.

- :class:`StrategyResult`: one strategy's daily path (returns, NAV, weights, turnover, costs).
- :func:`run_episode`: step a ``CryptoHedgeFundEnv`` over its whole fixed span with a policy.
- :func:`torch_policy`: a ``policy_module()`` (obs -> weights) as such a policy.
- :func:`risk_free_series`: the daily risk-free leg of a store (T-bill ticker, else a constant rate).
- :class:`MarketContext` and :func:`strategy_metrics`: every measure of ``training.metrics`` (returns, risk,
  turnover, cost drag and the behaviour diagnostics) for one result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training import metrics as M

if TYPE_CHECKING:
    from data.config import DataConfig
    from data.market import FeatureStore
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv

#: ``policy(t, obs, weights) -> action (N+1,)``: t the decision day, obs the env observation,
#: weights the current drifted weights (N+1,), cash last.
Policy = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StrategyResult:
    """One strategy's path over the decision days ``t_0 .. t_{T-1}`` (T decisions).

    - ``dates`` (T,): the decision days; ``returns[k]`` is earned from the close of ``dates[k]`` to the
      next day's close, net of fees and slippage (simple return).
    - ``nav`` (T+1,): NAV relative to the start (1.0 at the first decision).
    - ``weights`` (T, N+1): post-trade weights at each decision, cash last.
    - ``turnover`` (T,): sum of |risky weight change| per decision (fraction of NAV).
    - ``cost`` (T,): fee + slippage as a fraction of the pre-trade NAV.
    - ``interventions``: how many days each env intervention (weight_cap, closed_asset, ...) fired.
    """

    name: str
    label: str
    dates: np.ndarray
    returns: np.ndarray
    nav: np.ndarray
    weights: np.ndarray
    turnover: np.ndarray
    cost: np.ndarray
    interventions: dict[str, int]
    seconds: float = 0.0


def run_episode(env: CryptoHedgeFundEnv, policy: Policy, name: str, label: str) -> StrategyResult:
    """Step ``env`` over its whole fixed span (``core.first .. core.last``) with ``policy``, all cash at the
    start. After a liquidation or bankruptcy the rest of the span is flat cash at the final NAV."""
    t_start = time.perf_counter()
    start, end = env.core.first, env.core.last
    obs, info = env.reset(options={"start": start, "end": end})
    n_steps = end - start
    n1 = env.n_assets + 1
    nav = np.empty(n_steps + 1)
    nav[0] = info["nav"]
    weights = np.empty((n_steps, n1))
    turnover = np.empty(n_steps)
    cost = np.empty(n_steps)
    counts: dict[str, int] = {}
    w = info["weights"]
    for k in range(n_steps):
        action = policy(start + k, obs, w)
        obs, _, terminated, truncated, info = env.step(action)
        w = info["weights"]
        nav[k + 1] = info["nav"]
        weights[k] = info["target_weights"]
        turnover[k] = info["turnover"]
        cost[k] = info["cost"] / nav[k] if nav[k] > 0 else 0.0
        for item in info["interventions"]:
            counts[item] = counts.get(item, 0) + 1
        if terminated:
            nav[k + 2 :] = nav[k + 1]
            weights[k + 1 :] = np.eye(n1)[-1]
            turnover[k + 1 :] = 0.0
            cost[k + 1 :] = 0.0
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(nav[:-1] > 0, nav[1:] / nav[:-1] - 1.0, 0.0)
    dates = np.asarray(env.core.dates[start:end], dtype="datetime64[D]")
    return StrategyResult(name, label, dates, returns, nav / nav[0], weights, turnover, cost, counts,
                          time.perf_counter() - t_start)


def torch_policy(module: Any, device: str = "cpu") -> Policy:
    """Wrap a ``policy_module()`` (obs float32 [B, obs_dim] -> weights [B, N+1]) as an env policy on ``device``."""
    import torch

    module.eval().to(device)

    def act(t: int, obs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.as_tensor(obs, dtype=torch.float32)[None, :].to(device))
        return np.clip(out[0].double().cpu().numpy(), 0.0, None)

    return act


def periods_of(store: FeatureStore) -> int:
    """Periods per year of a store's universe (365 with any 7-day asset, else 252)."""
    from data.universe import calendar_of

    return M.periods_per_year([calendar_of(t) for t in store.tickers])


def risk_free_series(store: FeatureStore, data_cfg: DataConfig, periods: int) -> tuple[np.ndarray, str]:
    """Daily risk-free return per store day (T,) and a label: the T-bill leg's return (0 before it is
    listed) when the universe has ``data.risk_free`` (e.g. BIL), else the configured annual rate
    de-annualised geometrically (:func:`training.metrics.risk_free_daily`)."""
    ticker = (data_cfg.risk_free or "").strip().upper()
    if ticker and ticker in store.tickers:
        i = store.tickers.index(ticker)
        return np.where(store.listed[:, i], store.returns[:, i], 0.0), f"{ticker} daily return"
    rate = data_cfg.risk_free_rate
    return M.risk_free_daily(store.n_days, periods, annual_rate=rate), f"{rate:.2%} a year (constant)"


@dataclass(frozen=True)
class MarketContext:
    """What the metrics need from a store, computed once: ``dates`` (T,), ``listed`` (T, N) bool,
    ``categories`` (N,), ``volatility`` (T,) = trailing 20-day volatility of the equal-weight risky return
    known at each day's close (``training.metrics.trailing_volatility``), the daily risk-free leg
    ``risk_free`` (T,) with its label, and the annualisation ``periods``."""

    dates: np.ndarray
    listed: np.ndarray
    categories: tuple[str, ...]
    volatility: np.ndarray
    risk_free: np.ndarray
    risk_free_label: str
    periods: int

    @classmethod
    def from_store(cls, store: FeatureStore, data_cfg: DataConfig) -> MarketContext:
        periods = periods_of(store)
        rf, label = risk_free_series(store, data_cfg, periods)
        market = M.equal_weight_risky_return(store.returns, store.listed, store.categories)
        return cls(np.asarray(store.dates, dtype="datetime64[D]"), np.asarray(store.listed, dtype=bool),
                   tuple(store.categories), M.trailing_volatility(market), rf, label, periods)

    def day_index(self, dates: np.ndarray) -> np.ndarray:
        """Store day index (T,) of each of ``dates`` (T,)."""
        return np.searchsorted(self.dates, np.asarray(dates, dtype="datetime64[D]"))

    def path_metrics(self, days: np.ndarray, returns: np.ndarray, weights: np.ndarray, turnover: np.ndarray,
                     cost: np.ndarray) -> dict[str, float]:
        """Every measure of one daily path on store days ``days`` (T,): ``returns`` (T,) net simple returns,
        ``weights`` (T, N+1) post-trade weights, ``turnover`` (T,), ``cost`` (T,) as fractions of NAV.

        ``training.metrics.summarize`` of the per-period series (folded onto weekdays when ``periods`` is
        252) against the risk-free leg, then the diagnostics of the daily weights, with the volatile days
        the top decile of ``volatility`` among these days. Keys: ``METRIC_COLUMNS`` then
        ``DIAGNOSTIC_COLUMNS``.
        """
        days = np.asarray(days, dtype=np.int64)
        r, rf, turn, c = M.fold_to_periods(self.dates[days], returns, self.risk_free[days], turnover, cost,
                                           self.periods)
        out = M.summarize(r, rf, self.periods, daily_turnover=turn, daily_cost=c)
        volatile = M.volatile_days(self.volatility[days])
        out.update(M.diagnostics(weights, self.listed[days], self.categories, volatile))
        return out


def strategy_metrics(result: StrategyResult, context: MarketContext) -> dict[str, float]:
    """Every measure of one strategy (:meth:`MarketContext.path_metrics` of its path)."""
    return context.path_metrics(context.day_index(result.dates), result.returns, result.weights,
                                result.turnover, result.cost)
