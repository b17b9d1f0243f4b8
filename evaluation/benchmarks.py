"""Classical benchmark portfolios as rules from trailing data to target weights.

Every rule sees only the past: at the close of day t it gets ``history`` = the simple returns of the
days that ended at or before t (``store.returns[t - L : t]``; ``store.returns[t]`` is the return *after*
t and is never passed), the assets it may buy, and the day's risk-free return. It returns risky target
weights (N,) with ``0 <= w_i <= max_weight`` and ``sum w <= 1``; the rest is cash. The backtester feeds
those targets to the same environment (costs, slippage, closed-market rules) as the agent: see
``evaluation.backtester.run_benchmarks``.

The rules (``BENCHMARKS``):

- ``equal_weight_bh``: equal weights over the assets listed at the start, bought once and held.
- ``equal_weight``: equal weights over the listed assets, rebalanced every ``rebalance_every`` days.
- ``min_variance``: long-only minimum variance (skfolio ``MeanRisk``, sample covariance).
- ``markowitz``: mean-variance utility ``w'mu - risk_aversion * w'Sigma w`` (the second paper's SciPy
  Markowitz; solved with skfolio, cross-checked against :func:`scipy_optimum` in the tests).
- ``max_sharpe``: tangency portfolio, maximising ``(w'mu - rf) / sqrt(w'Sigma w)``.
- ``momentum``: equal weights on the top third of assets by trailing ``momentum_days`` return, among
  those with a positive return; cash when none.
- ``risk_parity``: inverse-volatility weights.
- ``btc_bh``: all in BTC-USD, bought once and held.
- ``vol_target``: equal weight with the risky sleeve (every candidate but the T-bill leg) scaled down to
  ``vol_target`` annual volatility (trailing realised volatility of the sleeve), the rest in the T-bill
  leg ``tbill`` up to the cap, then cash (:func:`rule_vol_target`).
- ``olmar``, ``pamr``, ``ons``, ``anticor``: on-line portfolio selection (``evaluation.olps``), each
  replayed from uniform over the trailing ``lookback`` days, so the day-t portfolio is a function of
  that window only.

Estimators use the last ``lookback`` days and only assets listed for the whole window. Weights above
``max_weight`` are capped and the excess is spread over the uncapped assets in proportion to their
scores ("water-filling"); what cannot be placed goes to cash. Buy-and-hold rules run with the cap
lifted (they never trade after the first purchase; a cap would force sales).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from data.config import DataConfig
from data.market import DataError
from environments.action_prior import cap_weights, listed_through, vol_target_weights
from evaluation import olps

#: Ticker held by the single-asset buy-and-hold benchmark.
BTC_TICKER = "BTC-USD"


@dataclass(frozen=True)
class EvaluationConfig:
    """The YAML ``evaluation:`` section (all optional).

    - ``lookback``: trailing days used by the estimators (covariance, mean, volatility).
    - ``rebalance_every``: days between rebalances of the rebalanced benchmarks (1 = daily).
    - ``momentum_days``: horizon of the momentum signal; ``risk_aversion``: ``lambda`` of the Markowitz
      utility (daily units).
    - ``benchmarks``: names from ``BENCHMARKS`` to run (empty = all).
    - ``n_boot``/``bootstrap_block``: stationary-bootstrap resamples and mean block length (0 = n^(1/3)).
    - ``seed``: bootstrap seed.
    - ``optimiser``: ``"skfolio"`` (default, ``MeanRisk`` with the Clarabel conic solver) or ``"scipy"``
      (SLSQP with analytic gradients, several times faster; the two agree, see the tests).
    - ``vol_target``: annual volatility target of ``vol_target`` (decimal); ``tbill``: its T-bill leg
      (default: the data section's default ``risk_free`` ticker).
    """

    lookback: int = 60
    rebalance_every: int = 7
    momentum_days: int = 30
    risk_aversion: float = 1.0
    benchmarks: list[str] | None = None
    n_boot: int = 1000
    bootstrap_block: float = 0.0
    seed: int = 0
    optimiser: str = "skfolio"
    vol_target: float = 0.20
    tbill: str = DataConfig.risk_free

    def __post_init__(self) -> None:
        if self.lookback < 5:
            raise DataError(f"evaluation.lookback must be at least 5 days, got {self.lookback}")
        if self.rebalance_every < 1:
            raise DataError(f"evaluation.rebalance_every must be at least 1, got {self.rebalance_every}")
        if not 1 <= self.momentum_days <= self.lookback:
            raise DataError("evaluation.momentum_days must be between 1 and evaluation.lookback")
        if self.risk_aversion < 0:
            raise DataError(f"evaluation.risk_aversion must be non-negative, got {self.risk_aversion}")
        if self.n_boot < 10:
            raise DataError(f"evaluation.n_boot must be at least 10, got {self.n_boot}")
        if self.optimiser not in ("skfolio", "scipy"):
            raise DataError(f"evaluation.optimiser must be 'skfolio' or 'scipy', got '{self.optimiser}'")
        if not self.vol_target > 0:
            raise DataError(f"evaluation.vol_target must be positive, got {self.vol_target}")
        unknown = [b for b in (self.benchmarks or []) if b not in BENCHMARKS]
        if unknown:
            raise DataError(f"unknown benchmark '{unknown[0]}'; expected one of {', '.join(BENCHMARKS)}")


def clean_weights(w: np.ndarray, max_weight: float) -> np.ndarray:
    """Solver output (N,) -> feasible weights: negatives and round-off removed, capped, sum <= 1."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)
    w[w < 1e-9] = 0.0
    if w.sum() <= 0:
        return w
    return cap_weights(w / w.sum(), max_weight)


def _moments(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean (N,) and covariance (N, N), ddof=1, of ``history`` (L, N) daily simple returns."""
    return history.mean(axis=0), np.atleast_2d(np.cov(history, rowvar=False, ddof=1))


def scipy_optimum(
    kind: str, history: np.ndarray, max_weight: float, risk_aversion: float = 1.0, rf: float = 0.0
) -> np.ndarray:
    """Long-only optimum with SciPy SLSQP (the second paper's approach); fully invested, ``w_i <= cap``.

    ``kind``: ``"min_variance"`` (min w'Sigma w), ``"markowitz"`` (max w'mu - risk_aversion w'Sigma w) or
    ``"max_sharpe"`` (max (w'mu - rf) / sqrt(w'Sigma w)). ``history`` (L, N) daily simple returns.
    """
    mu, cov = _moments(history)
    n = mu.shape[0]

    def min_variance(w: np.ndarray) -> tuple[float, np.ndarray]:
        cw = cov @ w
        return float(w @ cw), 2.0 * cw

    def markowitz(w: np.ndarray) -> tuple[float, np.ndarray]:
        cw = cov @ w
        return float(-(w @ mu) + risk_aversion * (w @ cw)), -mu + 2.0 * risk_aversion * cw

    def max_sharpe(w: np.ndarray) -> tuple[float, np.ndarray]:
        cw = cov @ w
        sd = float(np.sqrt(max(w @ cw, 1e-18)))
        excess = float(w @ mu - rf)
        return -excess / sd, -(mu / sd - excess * cw / sd**3)

    objectives: dict[str, Callable[[np.ndarray], tuple[float, np.ndarray]]] = {
        "min_variance": min_variance, "markowitz": markowitz, "max_sharpe": max_sharpe,
    }
    if kind not in objectives:
        raise ValueError(f"unknown optimisation '{kind}'")
    fun = objectives[kind]
    scale = 1.0 / max(float(np.mean(np.diag(cov))), 1e-12) if kind == "min_variance" else 1.0

    def scaled(w: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fun(w)
        return scale * f, scale * g

    res = optimize.minimize(
        scaled, np.full(n, 1.0 / n), jac=True, method="SLSQP",
        bounds=[(0.0, max_weight)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return clean_weights(res.x, max_weight)


def skfolio_optimum(
    kind: str, history: np.ndarray, max_weight: float, risk_aversion: float = 1.0, rf: float = 0.0
) -> np.ndarray:
    """Same problems as :func:`scipy_optimum`, solved by skfolio's ``MeanRisk`` (variance risk measure).

    Falls back to the SciPy solution if the conic solver fails.
    """
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    objective = {
        "min_variance": ObjectiveFunction.MINIMIZE_RISK,
        "markowitz": ObjectiveFunction.MAXIMIZE_UTILITY,
        "max_sharpe": ObjectiveFunction.MAXIMIZE_RATIO,
    }[kind]
    model = MeanRisk(
        objective_function=objective, risk_measure=RiskMeasure.VARIANCE, risk_aversion=risk_aversion,
        min_weights=0.0, max_weights=max_weight, risk_free_rate=rf,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(history)
        return clean_weights(model.weights_, max_weight)
    except Exception:  # noqa: BLE001 - any solver failure falls back to SciPy
        return scipy_optimum(kind, history, max_weight, risk_aversion, rf)


# --- rules: (history (L, N), candidates (N,) bool, rf per day, cfg, max_weight) -> risky weights (N,) ---

Rule = Callable[[np.ndarray, np.ndarray, float, EvaluationConfig, float], np.ndarray]


def _on(candidates: np.ndarray, sub: np.ndarray) -> np.ndarray:
    w = np.zeros(candidates.shape[0])
    w[candidates] = sub
    return w


def rule_equal_weight(history, candidates, rf, cfg, max_weight):
    """1/k on each of the k candidate assets (capped)."""
    return cap_weights(candidates.astype(np.float64), max_weight)


def _optimiser(kind: str) -> Rule:
    def rule(history, candidates, rf, cfg, max_weight):
        k = int(candidates.sum())
        if k == 0:
            return np.zeros(candidates.shape[0])
        if k == 1 or history.shape[0] < 2:
            return rule_equal_weight(history, candidates, rf, cfg, max_weight)
        sub = history[:, candidates]
        cap = max(max_weight, 1.0 / k)  # a fully-invested optimum needs k * cap >= 1
        if kind == "max_sharpe" and float(sub.mean(axis=0).max()) <= rf:
            kind_now = "min_variance"  # no asset beats the risk-free rate: the tangency is undefined
        else:
            kind_now = kind
        solve = skfolio_optimum if cfg.optimiser == "skfolio" else scipy_optimum
        w = solve(kind_now, sub, cap, cfg.risk_aversion, rf)
        return cap_weights(_on(candidates, w), max_weight)

    rule.__doc__ = f"skfolio ``{kind}`` over the candidates' trailing returns (capped)."
    return rule


def rule_momentum(history, candidates, rf, cfg, max_weight):
    """Equal weight on the top third (at least one) by trailing ``momentum_days`` return, if positive."""
    growth = np.prod(1.0 + history[-cfg.momentum_days:], axis=0) - 1.0
    score = np.where(candidates, growth, -np.inf)
    k = max(1, int(np.ceil(candidates.sum() / 3)))
    top = np.argsort(-score, kind="stable")[:k]
    pick = np.zeros(candidates.shape[0], dtype=bool)
    pick[top] = True
    pick &= candidates & (growth > 0)
    return np.minimum(pick / max(k, 1), max_weight)


def rule_risk_parity(history, candidates, rf, cfg, max_weight):
    """Inverse trailing volatility, ``w_i ~ 1 / std_i`` (capped); a zero-vol asset counts as 1e-6."""
    vol = history.std(axis=0, ddof=1) if history.shape[0] > 1 else np.ones(candidates.shape[0])
    inv = np.where(candidates, 1.0 / np.maximum(vol, 1e-6), 0.0)
    return cap_weights(inv, max_weight)


def rule_vol_target(history, candidates, rf, cfg, max_weight, tickers=()):
    """``environments.action_prior.vol_target_weights`` at ``cfg.vol_target`` with T-bill leg ``cfg.tbill``:
    equal weight, the sleeve without the T-bill leg scaled by ``min(1, vol_target / vol)`` (trailing
    annualised volatility), what that frees in the T-bill leg up to the cap, the rest in cash. The same
    function is the prior of a residual policy (``EnvConfig.action_prior``)."""
    return vol_target_weights(history, candidates, max_weight, cfg.vol_target, tuple(tickers), cfg.tbill)


def _olps(name: str) -> Rule:
    def rule(history, candidates, rf, cfg, max_weight):
        if not candidates.any() or history.shape[0] < 1:
            return rule_equal_weight(history, candidates, rf, cfg, max_weight)
        b = olps.olps_weights(olps.ALGORITHMS[name], 1.0 + history[:, candidates])[-1]
        return cap_weights(_on(candidates, b), max_weight)

    rule.__doc__ = f"``evaluation.olps`` {name} replayed over the candidates' trailing relatives (capped)."
    return rule


@dataclass(frozen=True)
class Benchmark:
    """A named rule. ``buy_and_hold``: trade once, then hold (cap lifted); else rebalance periodically.
    ``needs_tickers``: the rule also takes ``tickers=`` (the universe's ticker tuple)."""

    name: str
    label: str
    rule: Rule
    buy_and_hold: bool = False
    uses_history: bool = True
    needs_tickers: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("equal_weight_bh", "Equal-weight buy & hold", rule_equal_weight, True, False),
        Benchmark("equal_weight", "Equal-weight rebalanced", rule_equal_weight, False, False),
        Benchmark("min_variance", "Minimum variance", _optimiser("min_variance")),
        Benchmark("markowitz", "Markowitz mean-variance", _optimiser("markowitz")),
        Benchmark("max_sharpe", "Max Sharpe", _optimiser("max_sharpe")),
        Benchmark("momentum", "30-day momentum", rule_momentum),
        Benchmark("risk_parity", "Inverse-vol risk parity", rule_risk_parity),
        Benchmark("btc_bh", "BTC buy & hold", rule_equal_weight, True, False),
        Benchmark("vol_target", "Vol-targeted equal weight", rule_vol_target, needs_tickers=True),
        Benchmark("olmar", "OLMAR", _olps("olmar")),
        Benchmark("pamr", "PAMR", _olps("pamr")),
        Benchmark("ons", "ONS", _olps("ons")),
        Benchmark("anticor", "Anticor", _olps("anticor")),
    )
}


def candidates_at(
    name: str, t: int, listed: np.ndarray, tickers: tuple[str, ...], lookback: int
) -> np.ndarray:
    """Assets benchmark ``name`` may hold at day ``t`` (N,) bool.

    History-based rules need the asset listed on every day of the trailing window ``[t - lookback, t]``;
    the others need it listed at t; ``btc_bh`` only ever holds BTC-USD.
    """
    bench = BENCHMARKS[name]
    if name == "btc_bh":
        mask = np.array([tk == BTC_TICKER for tk in tickers])
        return mask & listed[t]
    if bench.uses_history:
        return listed_through(listed, t, lookback)
    return listed[t].copy()


def benchmark_target(
    name: str, t: int, returns: np.ndarray, listed: np.ndarray, tickers: tuple[str, ...],
    rf: float, cfg: EvaluationConfig, max_weight: float,
) -> np.ndarray:
    """Target weights (N+1,) of benchmark ``name`` at the close of day ``t``, cash last.

    ``returns`` (T, N): ``returns[s]`` is the return from close s to close s+1, so only rows ``< t`` are
    known at t's close and only those are read. ``listed`` (T, N) bool. ``rf``: the day's risk-free
    return (per day). Raises ``DataError`` for BTC buy & hold in a universe without BTC-USD.
    """
    bench = BENCHMARKS[name]
    if name == "btc_bh" and BTC_TICKER not in tickers:
        raise DataError(f"the BTC buy & hold benchmark needs {BTC_TICKER} in the universe")
    cap = 1.0 if bench.buy_and_hold else max_weight
    cand = candidates_at(name, t, listed, tickers, cfg.lookback)
    history = returns[max(t - cfg.lookback, 0) : t]
    if bench.needs_tickers:
        risky = bench.rule(history, cand, rf, cfg, cap, tickers=tuple(tickers))
    else:
        risky = bench.rule(history, cand, rf, cfg, cap)
    out = np.zeros(returns.shape[1] + 1)
    out[:-1] = risky
    out[-1] = max(1.0 - float(risky.sum()), 0.0)
    return out
