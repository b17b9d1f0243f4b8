"""Learning curves and validation: per-episode risk metrics, CSV/PNG writers, the small metric helpers
behind them, and the deterministic validation run of a policy over a span (``evaluate_policy``).

The evaluation layer (to the right of ``training/``) owns the full metric suite; training needs a handful
of them while it runs, to draw learning curves and to select models on validation. They are pure
functions over 1-D numpy arrays of *daily simple returns* (fraction of NAV per day, the env's net
portfolio return after costs). Annualisation uses ``periods_per_year`` (365: the 7-day crypto calendar).

Conventions (same as skfolio): ``max_drawdown``, ``value_at_risk`` and ``cvar`` are reported as positive
losses (0.25 = a 25% loss); the ratios are annualised.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from data.market import FeatureStore
    from training.config import ExperimentConfig

PERIODS_PER_YEAR = 365


def _as_1d(returns: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def sharpe_ratio(
    returns: np.ndarray, risk_free: np.ndarray | float = 0.0, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """Annualised Sharpe ratio of daily excess returns ``returns - risk_free``.

    ``returns`` (T,) daily simple returns; ``risk_free`` scalar or (T,) daily T-bill return over the same
    days. ``mean / std(ddof=1) * sqrt(periods_per_year)``; 0.0 for fewer than 2 days or zero volatility.
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    excess = r - np.broadcast_to(np.asarray(risk_free, dtype=np.float64), r.shape)
    excess = excess[np.isfinite(excess)]
    if excess.size < 2:
        return 0.0
    sd = float(np.std(excess, ddof=1))
    if sd <= 1e-12:
        return 0.0
    return float(np.mean(excess) / sd * math.sqrt(periods_per_year))


def sortino_ratio(
    returns: np.ndarray, risk_free: np.ndarray | float = 0.0, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """Annualised Sortino ratio: mean excess return over the downside deviation ``sqrt(mean(min(x,0)^2))``.

    Shapes as in ``sharpe_ratio``. 0.0 when there are fewer than 2 days or no losing day.
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    excess = r - np.broadcast_to(np.asarray(risk_free, dtype=np.float64), r.shape)
    excess = excess[np.isfinite(excess)]
    if excess.size < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside <= 1e-12:
        return 0.0
    return float(np.mean(excess) / downside * math.sqrt(periods_per_year))


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the compounded NAV ``cumprod(1 + r)`` starting at 1, as a positive
    fraction (0.3 = the NAV fell 30% below its running peak). ``returns`` (T,) daily simple returns."""
    r = _as_1d(returns)
    if r.size == 0:
        return 0.0
    nav = np.cumprod(1.0 + r)
    peak = np.maximum(np.maximum.accumulate(nav), 1.0)
    return float(max(0.0, -np.min(nav / peak - 1.0)))


def _tail(returns: np.ndarray, level: float) -> tuple[float, float]:
    """(VaR, CVaR) of the empirical loss distribution at confidence ``level`` (equal weights)."""
    losses = np.sort(-_as_1d(returns))[::-1]  # largest loss first
    n = losses.size
    if n == 0:
        return 0.0, 0.0
    tail_mass = (1.0 - level) * n  # how many observations the tail holds (may be fractional)
    if abs(tail_mass - round(tail_mass)) < 1e-9:
        tail_mass = float(round(tail_mass))
    k = int(math.floor(tail_mass))
    var = float(losses[min(k, n - 1)])
    if tail_mass <= 0.0:
        return var, float(losses[0])
    frac = tail_mass - k
    total = float(losses[:k].sum()) + (frac * float(losses[k]) if k < n else 0.0)
    return var, total / tail_mass


def value_at_risk(returns: np.ndarray, level: float = 0.95) -> float:
    """Historical daily value at risk at confidence ``level``: the smallest loss exceeded with
    probability at most ``1 - level`` (with n days and integer k = (1-level)n, the (k+1)-th largest loss).
    ``returns`` (T,) daily simple returns; result is a positive loss fraction."""
    return _tail(returns, level)[0]


def cvar(returns: np.ndarray, level: float = 0.95) -> float:
    """Historical daily conditional VaR (expected shortfall): the mean loss over the worst ``1 - level``
    probability mass of days (Rockafellar-Uryasev). ``returns`` (T,); result is a positive loss fraction."""
    return _tail(returns, level)[1]


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished training episode: what the learning curves plot.

    ``timestep`` is the global env step count when the episode ended; ``reward`` the sum of the env's
    rewards; ``nav`` the final NAV relative to the start (1.0 = flat); the risk metrics are over the
    episode's daily net portfolio returns (see the module docstring for conventions).
    """

    timestep: int
    episode: int
    length: int
    reward: float
    nav: float
    sharpe: float
    sortino: float
    max_drawdown: float
    var95: float
    cvar95: float


def episode_record(
    timestep: int, episode: int, rewards: np.ndarray, returns: np.ndarray, risk_free: np.ndarray | float = 0.0
) -> EpisodeRecord:
    """Summarise one episode. ``rewards`` (L,) env rewards, ``returns`` (L,) daily net portfolio returns."""
    r = _as_1d(returns)
    return EpisodeRecord(
        timestep=int(timestep),
        episode=int(episode),
        length=int(r.size),
        reward=float(np.sum(rewards)),
        nav=float(np.prod(1.0 + r)) if r.size else 1.0,
        sharpe=sharpe_ratio(returns, risk_free),
        sortino=sortino_ratio(returns, risk_free),
        max_drawdown=max_drawdown(r),
        var95=value_at_risk(r),
        cvar95=cvar(r),
    )


class EpisodeTracker:
    """Accumulates per-step rewards/returns of M parallel envs and emits an ``EpisodeRecord`` per episode.

    Call ``step(timestep, rewards (M,), returns (M,), dones (M,) bool)`` after every vectorised env step.
    """

    def __init__(self, n_envs: int, start_episode: int = 0) -> None:
        self.n_envs = int(n_envs)
        self._rewards: list[list[float]] = [[] for _ in range(self.n_envs)]
        self._returns: list[list[float]] = [[] for _ in range(self.n_envs)]
        self.episodes = int(start_episode)
        self.records: list[EpisodeRecord] = []

    def step(self, timestep: int, rewards: np.ndarray, returns: np.ndarray, dones: np.ndarray) -> list[EpisodeRecord]:
        new: list[EpisodeRecord] = []
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        returns = np.asarray(returns, dtype=np.float64).reshape(-1)
        dones = np.asarray(dones, dtype=bool).reshape(-1)
        for i in range(self.n_envs):
            self._rewards[i].append(float(rewards[i]))
            self._returns[i].append(float(returns[i]))
            if dones[i]:
                self.episodes += 1
                rec = episode_record(timestep, self.episodes, np.array(self._rewards[i]), np.array(self._returns[i]))
                new.append(rec)
                self._rewards[i].clear()
                self._returns[i].clear()
        self.records.extend(new)
        return new


CURVE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord))


def write_curves_csv(records: Sequence[EpisodeRecord], path: str | Path) -> None:
    """Write the episode records to ``path`` as CSV (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CURVE_COLUMNS))
        writer.writeheader()
        for rec in records:
            writer.writerow(asdict(rec))
    os.replace(tmp, path)


def read_curves_csv(path: str | Path) -> list[EpisodeRecord]:
    """Read records written by ``write_curves_csv`` (used by ``--resume`` to keep the curve whole)."""
    out: list[EpisodeRecord] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.append(
                EpisodeRecord(
                    **{
                        name: (int(row[name]) if name in ("timestep", "episode", "length") else float(row[name]))
                        for name in CURVE_COLUMNS
                    }
                )
            )
    return out


def plot_curves(records: Sequence[EpisodeRecord], path: str | Path, title: str = "learning curves") -> None:
    """Six panels against the env step: episode reward, Sharpe, Sortino, max drawdown, VaR95, CVaR95.

    The raw points are overlaid with the mean per env step smoothed by a rolling mean (~10% of the steps). Written as PNG via a
    temp file + rename. Draws on a bare ``Figure`` (no pyplot), so the caller's matplotlib backend (a
    notebook's inline backend, say) is left alone.
    """
    from matplotlib.figure import Figure

    panels = [
        ("reward", "episode reward"),
        ("sharpe", "Sharpe (ann.)"),
        ("sortino", "Sortino (ann.)"),
        ("max_drawdown", "max drawdown"),
        ("var95", "daily VaR 95%"),
        ("cvar95", "daily CVaR 95%"),
    ]
    fig = Figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3, sharex=True)
    x = np.array([r.timestep for r in records], dtype=np.float64)
    # Parallel envs finish episodes on the same step: the line is the mean per step, then a rolling mean.
    steps, group = np.unique(x, return_inverse=True)
    k = max(1, steps.size // 10)
    for ax, (name, label) in zip(axes.ravel(), panels):
        y = np.array([getattr(r, name) for r in records], dtype=np.float64)
        if y.size:
            ax.plot(x, y, ".", alpha=0.35, markersize=3)
            per_step = np.bincount(group, weights=y) / np.bincount(group)
            if steps.size >= k > 1:
                ax.plot(steps[k - 1 :], np.convolve(per_step, np.ones(k) / k, mode="valid"), "-", linewidth=1.5)
            else:
                ax.plot(steps, per_step, "-", linewidth=1.5)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("env steps")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


# -- validation of a deterministic policy ---------------------------------------------------------------
def risk_free_returns(cfg: ExperimentConfig, store: FeatureStore, days: np.ndarray) -> tuple[np.ndarray, str]:
    """Daily T-bill return (len(days),) earned from each decision day to the next, and its label.

    The ``data.risk_free`` ticker's return when it is in the store, else ``risk_free_rate / 365``.
    """
    if cfg.data.risk_free and cfg.data.risk_free in store.tickers:
        i = store.tickers.index(cfg.data.risk_free)
        return np.asarray(store.returns[days, i], dtype=np.float64), cfg.data.risk_free
    return np.full(days.shape, cfg.data.risk_free_rate / 365.0), f"{cfg.data.risk_free_rate:.2%}/yr constant"


def evaluate_policy(policy: Any, store: FeatureStore, cfg: ExperimentConfig, start: str, end: str) -> dict[str, Any]:
    """Run the deterministic ``policy`` (obs (B, obs_dim) -> weights (B, N+1)) once over ``[start, end]``.

    All cash at the start; same costs as training. Returns the metrics mapping (daily units noted per key)
    plus the ``returns``/``risk_free``/``dates`` arrays under ``series``.
    """
    import torch

    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from training.config import costs_of

    env = CryptoHedgeFundEnv.from_store(store, cfg.env, end=end, costs_bps=costs_of(cfg))
    obs, info = env.reset(options={"start": start, "end": end})
    days, rets, turns, costs, weights = [int(info["t"])], [], [], [], []
    nav0 = float(info["nav"])
    done = False
    with torch.no_grad():
        while not done:
            w = policy(torch.as_tensor(obs[None, :])).numpy()[0].astype(np.float64)
            obs, _, term, trunc, info = env.step(np.clip(w, 0.0, None))
            rets.append(float(np.expm1(info["log_return"])))
            turns.append(float(info["turnover"]))
            costs.append(float(info["cost"]))
            weights.append(np.asarray(info["target_weights"], dtype=np.float64))
            days.append(int(info["t"]))
            done = term or trunc
    r = np.asarray(rets)
    decision_days = np.asarray(days[:-1])
    rf, rf_label = risk_free_returns(cfg, store, decision_days)
    dates = store.dates.astype("datetime64[D]")
    w = np.asarray(weights)
    metrics = {
        "start": str(dates[decision_days[0]]),
        "end": str(dates[days[-1]]),
        "n_days": int(r.size),
        "sharpe": sharpe_ratio(r, rf),
        "sharpe_gross_of_rf": sharpe_ratio(r),
        "sortino": sortino_ratio(r, rf),
        "max_drawdown": max_drawdown(r),
        "var95": value_at_risk(r),
        "cvar95": cvar(r),
        "total_return": float(np.prod(1.0 + r) - 1.0),
        "annual_return": float(np.prod(1.0 + r) ** (365.0 / max(r.size, 1)) - 1.0),
        "annual_volatility": float(np.std(r, ddof=1) * np.sqrt(365.0)) if r.size > 1 else 0.0,
        "turnover": float(np.mean(turns)),
        "costs_fraction": float(np.sum(costs) / nav0),
        "mean_cash_weight": float(w[:, -1].mean()),
        "risk_free": rf_label,
        "units": "sharpe/sortino annualised (365 d) on daily net returns minus the T-bill leg; max_drawdown, "
        "var95, cvar95 positive fractions of NAV (VaR/CVaR daily); turnover = mean daily sum |risky weight change|; "
        "costs_fraction = fees + slippage over the initial NAV",
        "synthetic": store.synthetic,
    }
    metrics["series"] = {"dates": [str(dates[d]) for d in decision_days], "returns": r.tolist(), "risk_free": rf.tolist()}
    return metrics
