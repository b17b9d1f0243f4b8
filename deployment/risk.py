"""The risk layer applied to every allocation a deployed policy serves.

Two stages, each recording what it changed as an ``Intervention``:

1. **Circuit breaker**: if the portfolio's one-day simple return (current weights times the assets'
   one-day returns) or any single asset's one-day return moves by more than a threshold (absolute
   value, fraction of NAV / of price), risky exposure is multiplied by ``breaker_scale`` and the
   released weight goes to the cash leg.
2. **Compliance**: long-only unless margin is on (negative weights are cut to 0; with margin, gross
   exposure is capped at ``max_gross``), a per-asset cap, per-category caps (a category over its cap is
   scaled down pro rata), and the weights sum to 1 (renormalised; any excess over a cap goes to cash,
   which is uncapped).

Weights are fractions of NAV, shape (N+1,), last slot = cash. "Risky" means every asset whose category
is not ``stable`` (the cash leg and stable assets are never scaled by the breaker).
An ``AuditLog`` appends one JSON line per answered request that needed an intervention.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from data.market import DataError

CASH = "CASH"


@dataclass(frozen=True)
class RiskConfig:
    """Thresholds of the risk layer (all fractions, not percent).

    - ``breaker_portfolio_move``: trip when |portfolio one-day return| exceeds this (0.10 = 10 %).
    - ``breaker_asset_move``: trip when any asset's |one-day return| exceeds this.
    - ``breaker_scale``: risky weights are multiplied by this when tripped (0 = all to cash).
    - ``max_asset_weight``: cap on any single non-cash asset.
    - ``category_caps``: ``{category: cap}`` on the summed weight of a category.
    - ``allow_margin``: if false, negative weights are removed; if true, gross exposure
      ``sum |w_i|`` over non-cash assets is capped at ``max_gross``.
    - ``tolerance``: numerical slack below which a difference is not reported as an intervention.
    """

    breaker_portfolio_move: float = 0.10
    breaker_asset_move: float = 0.25
    breaker_scale: float = 0.5
    max_asset_weight: float = 0.4
    category_caps: dict[str, float] = field(
        default_factory=lambda: {"growth": 0.8, "hedge": 0.3, "traditional": 0.8, "stable": 1.0}
    )
    allow_margin: bool = False
    max_gross: float = 1.5
    tolerance: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("breaker_portfolio_move", "breaker_asset_move", "max_asset_weight", "max_gross"):
            if not getattr(self, name) > 0:
                raise DataError(f"risk setting {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.breaker_scale <= 1.0:
            raise DataError(f"risk setting breaker_scale must lie in [0, 1], got {self.breaker_scale}")
        for cat, cap in self.category_caps.items():
            if not 0.0 <= cap <= 1.0 + 1e-12 and not self.allow_margin:
                raise DataError(f"category cap for '{cat}' must lie in [0, 1], got {cap}")


@dataclass(frozen=True)
class Intervention:
    """One change the risk layer made: which rule, on which asset/category, and why."""

    rule: str
    target: str
    before: float
    after: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RiskResult:
    """Weights after the risk layer (N+1,), the interventions made, and whether the breaker tripped."""

    weights: np.ndarray
    interventions: tuple[Intervention, ...]
    breaker_tripped: bool


def portfolio_move(current_weights: np.ndarray, asset_returns: np.ndarray) -> float:
    """One-day simple portfolio return: ``sum_i w_i r_i`` over the N assets (cash earns 0).

    ``current_weights`` (N+1,) fraction of NAV; ``asset_returns`` (N,) simple returns.
    """
    return float(np.dot(np.asarray(current_weights, float)[:-1], np.asarray(asset_returns, float)))


def circuit_breaker(
    weights: np.ndarray,
    categories: tuple[str, ...],
    tickers: tuple[str, ...],
    cfg: RiskConfig,
    asset_returns: np.ndarray | None,
    current_weights: np.ndarray | None,
) -> tuple[np.ndarray, list[Intervention], bool]:
    """Scale risky exposure down by ``cfg.breaker_scale`` if a one-day move exceeds a threshold.

    ``asset_returns`` (N,) are the assets' latest one-day simple returns (None: breaker not evaluated);
    non-finite entries are treated as 0. Returns (new weights (N+1,), interventions, tripped).
    """
    w = np.array(weights, dtype=float)
    if asset_returns is None:
        return w, [], False
    r = np.nan_to_num(np.asarray(asset_returns, float), nan=0.0, posinf=0.0, neginf=0.0)
    reasons = []
    big = np.flatnonzero(np.abs(r) > cfg.breaker_asset_move)
    for i in big:
        reasons.append(f"{tickers[i]} moved {r[i]:+.2%} in one day (limit {cfg.breaker_asset_move:.2%})")
    if current_weights is not None:
        pm = portfolio_move(current_weights, r)
        if abs(pm) > cfg.breaker_portfolio_move:
            reasons.append(f"portfolio moved {pm:+.2%} in one day (limit {cfg.breaker_portfolio_move:.2%})")
    if not reasons:
        return w, [], False
    risky = np.array([c != "stable" for c in categories] + [False])
    before = float(w[risky].sum())
    w[risky] *= cfg.breaker_scale
    w[-1] += before - float(w[risky].sum())
    after = float(w[risky].sum())
    return w, [Intervention("circuit_breaker", "risky_exposure", before, after, "; ".join(reasons))], True


def enforce_compliance(
    weights: np.ndarray, categories: tuple[str, ...], tickers: tuple[str, ...], cfg: RiskConfig
) -> tuple[np.ndarray, list[Intervention]]:
    """Long-only (or gross cap with margin), per-asset cap, per-category caps, sum to 1.

    ``weights`` (N+1,), last = cash. Non-finite entries become 0. Excess over any cap goes to cash.
    The result sums to 1 within float rounding and satisfies every cap.
    """
    tol = cfg.tolerance
    out: list[Intervention] = []
    w = np.array(weights, dtype=float)
    bad = ~np.isfinite(w)
    if bad.any():
        for i in np.flatnonzero(bad):
            out.append(Intervention("finite", _name(i, tickers), float("nan"), 0.0, "non-finite weight set to 0"))
        w[bad] = 0.0
    if not cfg.allow_margin:
        for i in np.flatnonzero(w < -tol):
            out.append(Intervention("long_only", _name(i, tickers), float(w[i]), 0.0,
                                    "short positions need margin, which is off"))
        w = np.maximum(w, 0.0)
    total = float(w.sum())
    if total <= tol:
        out.append(Intervention("sum_to_one", CASH, float(w[-1]), 1.0, "weights summed to 0; moved to cash"))
        w = np.zeros_like(w)
        w[-1] = 1.0
    elif abs(total - 1.0) > 1e-6:
        out.append(Intervention("sum_to_one", "portfolio", total, 1.0, f"weights summed to {total:.6f}"))
        w = w / total
    if cfg.allow_margin:
        gross = float(np.abs(w[:-1]).sum())
        if gross > cfg.max_gross + tol:
            net_before = float(w[:-1].sum())
            w[:-1] *= cfg.max_gross / gross
            w[-1] += net_before - float(w[:-1].sum())
            out.append(Intervention("gross_cap", "portfolio", gross, cfg.max_gross,
                                    f"gross exposure above {cfg.max_gross}"))
    cap = cfg.max_asset_weight
    for i in np.flatnonzero(np.abs(w[:-1]) > cap + tol):
        new = float(np.sign(w[i]) * cap)
        out.append(Intervention("asset_cap", tickers[i], float(w[i]), new, f"per-asset cap {cap:.2%}"))
        w[-1] += w[i] - new
        w[i] = new
    cats = np.array(categories)
    for cat, ccap in cfg.category_caps.items():
        idx = np.flatnonzero(cats == cat)
        if idx.size == 0:
            continue
        held = float(w[idx].sum())
        if held > ccap + tol:
            scaled = w[idx] * (ccap / held)
            w[-1] += held - float(scaled.sum())
            w[idx] = scaled
            out.append(Intervention("category_cap", cat, held, ccap, f"category '{cat}' cap {ccap:.2%}"))
    # Float rounding only (every step above preserved the sum): to cash, or to the largest weight when cash is
    # at 0 and the residual would make it negative (-2e-16 is still a short position).
    residual = 1.0 - float(w.sum())
    w[-1 if cfg.allow_margin or w[-1] + residual >= 0.0 else int(np.argmax(w))] += residual
    return w, out


def apply_risk(
    weights: np.ndarray,
    categories: tuple[str, ...],
    tickers: tuple[str, ...],
    cfg: RiskConfig,
    asset_returns: np.ndarray | None = None,
    current_weights: np.ndarray | None = None,
) -> RiskResult:
    """Breaker then compliance on one allocation ``weights`` (N+1,); see the module docstring."""
    w, acts, tripped = circuit_breaker(weights, categories, tickers, cfg, asset_returns, current_weights)
    w, more = enforce_compliance(w, categories, tickers, cfg)
    return RiskResult(w, tuple(acts + more), tripped)


def _name(i: int, tickers: tuple[str, ...]) -> str:
    return tickers[i] if i < len(tickers) else CASH


class AuditLog:
    """Append-only JSON-lines audit log of risk interventions (thread-safe, flushed per line)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = threading.Lock()

    def record(self, request_id: str, version: str, interventions: tuple[Intervention, ...], **extra) -> None:
        """Write one line ``{time, request_id, version, interventions, ...extra}`` if anything changed."""
        if not interventions:
            return
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": request_id, "version": version,
            "interventions": [i.to_dict() for i in interventions], **extra,
        })
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
