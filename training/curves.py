"""Learning curves and validation: one ``EpisodeRecord`` per finished training episode (the measures of
``training.metrics``, same names and signs as every report), CSV/PNG writers, and the deterministic
validation run of a policy over a span (``evaluate_policy``).

Every measure comes from ``training.metrics`` through ``training.rollout.MarketContext.path_metrics``, the
code the backtester uses, so a training curve, ``validation.json`` and a backtest report agree: Sharpe and
Sortino on the excess return over the run's risk-free leg, annualised with the universe's periods a year;
``max_drawdown``, ``var_95`` and ``cvar_95`` as returns (negative = loss). The behaviour diagnostics
(``active_share``, ``regime_response``, ``hedge_response``, ``turnover``, ``cost_drag``) are in the curves too,
so a run stuck at its initial policy (active share ~1/(N+1), regime response ~0) is visible while it trains.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.atomic_files import atomic_path
from training import metrics as M
from training.rollout import MarketContext, run_episode, torch_policy

if TYPE_CHECKING:
    from data.market import FeatureStore
    from training.config import ExperimentConfig


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished training episode: what the learning curves plot.

    ``timestep`` is the global env step count when the episode ended; ``reward`` the sum of the env's
    rewards; ``nav`` the final NAV relative to the start (1.0 = flat); the other fields are the
    ``training.metrics`` measures of the episode's daily net returns and weights under the same names as
    in ``metrics.json`` (NaN where undefined, e.g. the diagnostics when the tracker has no market context).
    """

    timestep: int
    episode: int
    length: int
    reward: float
    nav: float
    sharpe: float
    sortino: float
    max_drawdown: float
    var_95: float
    cvar_95: float
    turnover: float
    cost_drag: float
    active_share: float
    regime_response: float
    hedge_response: float


#: The per-episode measures plotted, written to TensorBoard (``episode/<name>``) and to ``curves.csv``.
CURVE_METRICS: tuple[str, ...] = ("reward", "nav", "sharpe", "sortino", "max_drawdown", "var_95", "cvar_95",
                                  "turnover", "cost_drag", "active_share", "regime_response", "hedge_response")
CURVE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord))
_INT_COLUMNS = ("timestep", "episode", "length")
_OLD_NAMES = {"var95": "var_95", "cvar95": "cvar_95"}  # curves.csv written before the one metrics module


def episode_record(timestep: int, episode: int, rewards: np.ndarray, returns: np.ndarray,
                   context: MarketContext | None = None, days: np.ndarray | None = None,
                   weights: np.ndarray | None = None, turnover: np.ndarray | None = None,
                   cost: np.ndarray | None = None) -> EpisodeRecord:
    """Summarise one episode. ``rewards`` (L,) env rewards, ``returns`` (L,) daily net portfolio returns.

    With a ``context`` and the episode's decision ``days`` (L,), post-trade ``weights`` (L, N+1),
    ``turnover`` (L,) and ``cost`` (L,) (fractions of NAV), every measure is
    ``context.path_metrics`` (the backtester's); without, the return measures use rf = 0 and 365 periods
    and turnover/cost/diagnostics are NaN.
    """
    r = np.asarray(returns, dtype=np.float64)
    if context is not None and days is not None and weights is not None:
        m = context.path_metrics(days, r, weights, turnover, cost)
    else:
        m = M.summarize(r, 0.0, M.PERIODS_7D)
        m.update(turnover=math.nan, cost_drag=math.nan, active_share=math.nan, regime_response=math.nan,
                 hedge_response=math.nan)
    return EpisodeRecord(
        timestep=int(timestep), episode=int(episode), length=int(r.size), reward=float(np.sum(rewards)),
        nav=float(np.prod(1.0 + r)),
        **{name: float(m[name]) for name in CURVE_COLUMNS if name not in (*_INT_COLUMNS, "reward", "nav")},
    )


class EpisodeTracker:
    """Accumulates per-step rewards/returns of M parallel envs and emits an ``EpisodeRecord`` per episode.

    Call ``step(timestep, rewards (M,), returns (M,), dones (M,) bool, infos)`` after every vectorised env
    step; ``infos`` is the batched env's step info (``t`` (M,) the day after the decision,
    ``target_weights`` (M, N+1), ``turnover``, ``cost``, ``nav``, ``log_return`` (M,)). With a ``context``
    and ``infos`` the records hold the diagnostics and the excess-return ratios of the backtester.
    Each step stores the batch's arrays once (no per-env Python work); an env's episode is sliced out of
    them when it ends, and steps no open episode needs are dropped.
    """

    _KEYS = ("rewards", "returns", "days", "weights", "turnover", "cost")

    def __init__(self, n_envs: int, start_episode: int = 0, context: MarketContext | None = None) -> None:
        self.n_envs = int(n_envs)
        self.context = context
        self._steps: dict[str, list[np.ndarray]] = {k: [] for k in self._KEYS}
        self._offset = 0  # global index of self._steps[...][0]
        self._start = np.zeros(self.n_envs, dtype=np.int64)  # global step index where each env's episode began
        self.episodes = int(start_episode)
        self.records: list[EpisodeRecord] = []

    def step(self, timestep: int, rewards: np.ndarray, returns: np.ndarray, dones: np.ndarray,
             infos: dict[str, Any] | None = None) -> list[EpisodeRecord]:
        buf = self._steps
        buf["rewards"].append(np.asarray(rewards, dtype=np.float64).reshape(-1))
        buf["returns"].append(np.asarray(returns, dtype=np.float64).reshape(-1))
        full = self.context is not None and infos is not None
        if full:
            log_ret = np.asarray(infos["log_return"], np.float64)
            nav_before = np.asarray(infos["nav"], np.float64) / np.exp(log_ret)
            cost = np.asarray(infos["cost"], np.float64) / np.where(nav_before > 0, nav_before, np.inf)
            buf["days"].append(np.asarray(infos["t"], dtype=np.int64).reshape(-1) - 1)
            buf["weights"].append(np.array(infos["target_weights"], dtype=np.float64))
            buf["turnover"].append(np.asarray(infos["turnover"], dtype=np.float64).reshape(-1))
            buf["cost"].append(cost)
        now = self._offset + len(buf["rewards"])  # global index one past this step
        new: list[EpisodeRecord] = []
        for i in np.flatnonzero(np.asarray(dones, dtype=bool).reshape(-1)):
            lo = int(self._start[i]) - self._offset
            col = {k: np.array([row[i] for row in buf[k][lo:]]) for k in self._KEYS if buf[k]}
            self.episodes += 1
            extra = {}
            if full and len(col.get("days", ())) == len(col["rewards"]):
                extra = {"context": self.context, "days": col["days"], "weights": col["weights"],
                         "turnover": col["turnover"], "cost": col["cost"]}
            new.append(episode_record(timestep, self.episodes, col["rewards"], col["returns"], **extra))
            self._start[i] = now
        drop = int(self._start.min()) - self._offset
        if drop > 0:
            for k in self._KEYS:
                del buf[k][:drop]
            self._offset += drop
        self.records.extend(new)
        return new


def write_curves_csv(records: Sequence[EpisodeRecord], path: str | Path) -> None:
    """Write the episode records to ``path`` as CSV (full float precision; temp file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CURVE_COLUMNS))
        writer.writeheader()
        for rec in records:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(rec).items()})


def read_curves_csv(path: str | Path) -> list[EpisodeRecord]:
    """Read records written by ``write_curves_csv`` (used by ``--resume`` to keep the curve whole); columns
    an older run did not write read as NaN, its ``var95``/``cvar95`` as ``var_95``/``cvar_95``."""
    out: list[EpisodeRecord] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            row = {_OLD_NAMES.get(k, k): v for k, v in row.items()}
            out.append(EpisodeRecord(**{
                name: (int(row[name]) if name in _INT_COLUMNS else float(row.get(name, "nan") or "nan"))
                for name in CURVE_COLUMNS
            }))
    return out


def plot_curves(records: Sequence[EpisodeRecord], path: str | Path, title: str = "learning curves") -> None:
    """Twelve panels against the env step: reward, Sharpe, Sortino, max drawdown, VaR 95, CVaR 95, final NAV,
    turnover, cost drag, active share, regime response, hedge response.

    The raw points are overlaid with the mean per env step smoothed by a rolling mean (~10% of the steps).
    Written as PNG via a temp file + rename. Draws on a bare ``Figure`` (no pyplot), so the caller's
    matplotlib backend (a notebook's inline backend, say) is left alone.
    """
    from matplotlib.figure import Figure

    panels = [
        ("reward", "episode reward"), ("sharpe", "Sharpe (excess, ann.)"), ("sortino", "Sortino (excess, ann.)"),
        ("max_drawdown", "max drawdown (<= 0)"), ("var_95", "daily VaR 95% (return)"),
        ("cvar_95", "daily CVaR 95% (return)"), ("nav", "final NAV"), ("turnover", "turnover / day"),
        ("cost_drag", "cost drag / year"), ("active_share", "active share vs equal weight"),
        ("regime_response", "regime response (stable+cash)"), ("hedge_response", "hedge response"),
    ]
    fig = Figure(figsize=(16, 9))
    axes = fig.subplots(3, 4, sharex=True)
    x = np.array([r.timestep for r in records], dtype=np.float64)
    # Parallel envs finish episodes on the same step: the line is the mean per step, then a rolling mean.
    steps, group = np.unique(x, return_inverse=True)
    k = max(1, steps.size // 10)
    for ax, (name, label) in zip(axes.ravel(), panels):
        y = np.array([getattr(r, name) for r in records], dtype=np.float64)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], ".", alpha=0.35, markersize=3)
            sums = np.bincount(group[ok], weights=y[ok], minlength=steps.size)
            counts = np.bincount(group[ok], minlength=steps.size)
            has = counts > 0
            per_step = sums[has] / counts[has]
            xs = steps[has]
            if xs.size >= k > 1:
                ax.plot(xs[k - 1 :], np.convolve(per_step, np.ones(k) / k, mode="valid"), "-", linewidth=1.5)
            else:
                ax.plot(xs, per_step, "-", linewidth=1.5)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("env steps")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:  # PNG whatever the name ends with
        fig.savefig(tmp, dpi=80)


# -- validation of a deterministic policy ---------------------------------------------------------------
def evaluate_policy(policy: Any, store: FeatureStore, cfg: ExperimentConfig, start: str, end: str) -> dict[str, Any]:
    """Run the deterministic ``policy`` (obs (B, obs_dim) -> weights (B, N+1)) once over ``[start, end]``.

    Exactly the backtester's agent run (``training.rollout.run_episode`` with the same env, costs and span,
    all cash at the start) and its metrics (``MarketContext.path_metrics``: the ``training.metrics``
    measures under the names of ``metrics.json``). Returns the metrics mapping plus the daily ``dates``,
    ``returns``, ``risk_free`` and ``weights`` under ``series``.
    """
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from training.config import costs_of

    context = MarketContext.from_store(store, cfg.data)
    env = CryptoHedgeFundEnv.from_store(store, cfg.env, start, end, costs_of(cfg))
    result = run_episode(env, torch_policy(policy), "agent", f"{cfg.algo} agent")
    days = context.day_index(result.dates)
    metrics: dict[str, Any] = {
        "start": str(result.dates[0]),
        "end": str(context.dates[days[-1] + 1]),
        "n_days": int(result.returns.size),
        **context.path_metrics(days, result.returns, result.weights, result.turnover, result.cost),
        "mean_cash_weight": float(result.weights[:, -1].mean()),
        "periods_per_year": context.periods,
        "risk_free": context.risk_free_label,
        "units": "training.metrics conventions: sharpe/sortino annualised on net returns in excess of the "
                 "risk-free leg; max_drawdown, var_95, cvar_95 are returns (negative = loss; VaR/CVaR daily, "
                 "historical); turnover = mean daily sum |risky weight change|; cost_drag = fees + slippage "
                 "per year as a fraction of NAV",
        "synthetic": store.synthetic,
    }
    metrics["series"] = {"dates": [str(d) for d in result.dates], "returns": result.returns.tolist(),
                         "risk_free": context.risk_free[days].tolist(), "weights": result.weights.tolist()}
    return metrics


#: Validation measures written to TensorBoard (``validation/<name>``) during and after training.
VALIDATION_METRICS: tuple[str, ...] = ("sharpe", "sortino", "max_drawdown", "total_return", "turnover", "cost_drag",
                                       "active_share", "regime_response", "hedge_response")
