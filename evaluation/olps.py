"""On-line portfolio selection (OLPS): OLMAR, PAMR, ONS and Anticor, written from the papers.

Conventions (shapes: T days, N assets, no cash slot -- these algorithms are fully invested):

- ``relatives`` (T, N): price relatives ``x_s = p_{s+1} / p_s`` (1 + simple return) of day s.
- ``mask`` (T + 1, N) bool, optional: assets the portfolio chosen in row t may hold (listed and
  tradable). Entries outside the mask get weight 0 and their relatives are read as 1 (no information).
- :func:`olps_weights` returns ``weights`` (T + 1, N): row ``t`` is the portfolio chosen after seeing
  ``relatives[:t]`` only and held over ``relatives[t]`` -- no look-ahead. Row 0 is uniform over the mask.

Each algorithm is a frozen dataclass of its parameters (defaults from the paper) with a pure ``update``
method ``(state, b, hist, active) -> (b_next, state)``: ``b`` (N,) the portfolio chosen for the last
day, ``hist`` (t, N) the relatives seen so far (last row = the day just ended), ``active`` (N,) bool
the assets allowed in ``b_next``. ``state`` is whatever the algorithm carries (ONS: ``A`` and ``b``).

- :class:`OLMAR` -- Li & Hoi, "On-Line Portfolio Selection with Moving Average Reversion", ICML 2012
  (OLMAR-1: SMA window ``window``, reversion threshold ``eps``).
- :class:`PAMR` -- Li, Zhao, Hoi & Gopalkrishnan, "PAMR: Passive aggressive mean reversion strategy for
  portfolio selection", Machine Learning 2012 (variants PAMR, PAMR-1, PAMR-2).
- :class:`ONS` -- Agarwal, Hazan, Kale & Schapire, "Algorithms for portfolio management based on the
  Newton method", ICML 2006 (parameters ``delta``, ``beta``, ``eta``).
- :class:`Anticor` -- Borodin, El-Yaniv & Gogan, "Can we learn to beat the best stock", JAIR 2004
  (``Anticor_w`` with window ``window``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def simplex_projection(v: np.ndarray, total: float = 1.0) -> np.ndarray:
    """Euclidean projection of ``v`` (N,) onto ``{w >= 0, sum w = total}`` (Duchi et al. 2008, O(N log N))."""
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - total
    k = np.arange(1, v.shape[0] + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    theta = css[rho] / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def masked_simplex_projection(v: np.ndarray, active: np.ndarray) -> np.ndarray:
    """:func:`simplex_projection` over the ``active`` (N,) bool entries; the others are 0."""
    out = np.zeros(v.shape[0])
    if active.any():
        out[active] = simplex_projection(v[active])
    return out


def quadratic_simplex_projection(y: np.ndarray, a: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """``argmin_{p in simplex, p_i = 0 off active} (p - y)' A (p - y)`` for positive-definite ``A`` (N, N).

    The projection in the norm induced by ``A`` that ONS needs, solved exactly by a primal active-set
    method (Nocedal & Wright, Algorithm 16.3) on ``min 1/2 q'Hq - b'q``, ``H = A_SS``, ``b = (A y)_S``
    over the active entries S, from the uniform portfolio. Checked against an exhaustive enumeration of
    supports in the tests.
    """
    n = y.shape[0]
    act = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    idx = np.flatnonzero(act)
    out = np.zeros(n)
    if idx.size == 0:
        return out
    h = a[np.ix_(idx, idx)]
    b = (a @ y)[idx]
    k = idx.size
    q = np.full(k, 1.0 / k)
    fixed = np.zeros(k, dtype=bool)  # working set: q_i = 0
    tol = 1e-12 * max(1.0, float(np.abs(h).max()))
    for _ in range(50 * k + 50):
        free = np.flatnonzero(~fixed)
        m = free.size
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = h[np.ix_(free, free)]
        kkt[:m, m] = kkt[m, :m] = 1.0
        sol = np.linalg.solve(kkt, np.append(b[free], 1.0))
        step = np.zeros(k)
        step[free] = sol[:m] - q[free]
        if np.abs(step).max() <= 1e-13:
            lam = (h @ q - b) + sol[m]  # multipliers of the bounds q_i >= 0 in the working set
            lam[~fixed] = np.inf
            worst = int(np.argmin(lam))
            if lam[worst] >= -tol:
                break
            fixed[worst] = False
            continue
        down = (step < 0) & ~fixed
        ratios = np.where(down, q / np.where(down, -step, 1.0), np.inf)
        block = int(np.argmin(ratios))
        alpha = min(1.0, float(ratios[block]))
        q = q + alpha * step
        if alpha < 1.0:
            q[block] = 0.0
            fixed[block] = True
    q = np.clip(q, 0.0, None)
    out[idx] = q / q.sum()
    return out


def _masked(x: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Relatives with the inactive entries read as 1."""
    return np.where(active, x, 1.0)


@dataclass(frozen=True)
class OLMAR:
    """OLMAR-1 (Li & Hoi 2012, Algorithm 1 with the SMA predictor of eq. 4).

    Predicted relative ``x~_{t+1} = (1/w) sum_{i=0}^{w-1} p_{t-i} / p_t``; step
    ``lambda = max(0, (eps - b.x~) / ||x~ - mean(x~)||^2)``; ``b_{t+1} = proj(b + lambda (x~ - mean(x~)))``.
    Before ``window`` days of history the portfolio is kept.
    """

    window: int = 5
    eps: float = 10.0

    def init_state(self, n: int) -> Any:
        return None

    def update(self, state: Any, b: np.ndarray, hist: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, Any]:
        if hist.shape[0] < self.window:
            return masked_simplex_projection(b, active), state
        x = np.where(active, hist[-self.window + 1:] if self.window > 1 else hist[:0], 1.0)
        # p_{t-i} / p_t = 1 / prod_{j<i} x_{t-j}: cumulative products of the last relatives, newest first.
        back = np.cumprod(1.0 / x[::-1], axis=0) if x.shape[0] else np.zeros((0, b.shape[0]))
        pred = (1.0 + back.sum(axis=0)) / self.window
        return olmar_step(b, pred, self.eps, active), state


def olmar_step(b: np.ndarray, pred: np.ndarray, eps: float, active: np.ndarray) -> np.ndarray:
    """One OLMAR update of ``b`` (N,) towards the predicted relatives ``pred`` (N,) over ``active``."""
    pa = pred[active]
    dev = np.zeros_like(b)
    dev[active] = pa - pa.mean()
    denom = float(dev @ dev)
    lam = 0.0 if denom <= 0 else max(0.0, (eps - float(b @ np.where(active, pred, 0.0))) / denom)
    return masked_simplex_projection(b + lam * dev, active)


@dataclass(frozen=True)
class PAMR:
    """PAMR (Li et al. 2012, Algorithm 1): loss ``l = max(0, b.x_t - eps)``, step
    ``tau = l / ||x_t - mean(x_t)||^2`` (PAMR), ``min(C, ...)`` (PAMR-1) or
    ``l / (||x_t - mean||^2 + 1 / (2C))`` (PAMR-2); ``b_{t+1} = proj(b - tau (x_t - mean(x_t)))``.
    """

    eps: float = 0.5
    variant: int = 0
    C: float = 500.0

    def __post_init__(self) -> None:
        if self.variant not in (0, 1, 2):
            raise ValueError(f"PAMR.variant must be 0, 1 or 2, got {self.variant}")

    def init_state(self, n: int) -> Any:
        return None

    def update(self, state: Any, b: np.ndarray, hist: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, Any]:
        if hist.shape[0] == 0:
            return masked_simplex_projection(b, active), state
        x = _masked(hist[-1], active)
        dev = np.zeros_like(b)
        dev[active] = x[active] - x[active].mean()
        loss = max(0.0, float(b @ x) - self.eps)
        denom = float(dev @ dev)
        if self.variant == 0:
            tau = loss / denom if denom > 0 else 0.0
        elif self.variant == 1:
            tau = min(self.C, loss / denom) if denom > 0 else 0.0
        else:
            tau = loss / (denom + 0.5 / self.C)
        return masked_simplex_projection(b - tau * dev, active), state


@dataclass(frozen=True)
class ONS:
    """Online Newton Step (Agarwal et al. 2006, Figure 1 with the paper's ``delta=1/8, beta=1``).

    Gradient ``g_t = x_t / (p_t . x_t)``; ``A_t = A_{t-1} + g g'`` (``A_0 = I``);
    ``b_t = b_{t-1} + (1 + 1/beta) g``; ``p_{t+1} = (1 - eta) Proj^{A_t}(delta A_t^{-1} b_t) + eta / N``.
    """

    delta: float = 0.125
    beta: float = 1.0
    eta: float = 0.0

    def init_state(self, n: int) -> Any:
        return (np.eye(n), np.zeros(n))

    def update(self, state: Any, b: np.ndarray, hist: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, Any]:
        if hist.shape[0] == 0:
            return masked_simplex_projection(b, active), state
        a_mat, b_vec = state
        x = np.where(active, hist[-1], 0.0)
        grad = x / max(float(b @ x), 1e-12)
        a_mat = a_mat + np.outer(grad, grad)
        b_vec = b_vec + (1.0 + 1.0 / self.beta) * grad
        p = quadratic_simplex_projection(self.delta * np.linalg.solve(a_mat, b_vec), a_mat, active)
        if self.eta:
            p = (1.0 - self.eta) * p + self.eta * active / max(int(active.sum()), 1)
        return p, (a_mat, b_vec)


@dataclass(frozen=True)
class Anticor:
    """Anticor_w (Borodin et al. 2004, Figure 1).

    With ``LX1``/``LX2`` the log relatives of the two most recent ``w``-day windows, ``Mcor(i, j)`` the
    correlation of ``LX1_i`` with ``LX2_j`` (sample moments, 0 where a deviation is 0), money moves from
    i to j when ``mean(LX2_i) > mean(LX2_j)`` and ``Mcor(i, j) > 0``, with claim
    ``Mcor(i, j) + A(i) + A(j)`` (``A(h) = -Mcor(h, h)`` when negative, else 0); i gives
    ``b^_t(i) * claim_ij / sum_j claim_ij`` where ``b^_t`` is the portfolio drifted over day t.
    Before ``2w`` days of history the portfolio is kept.
    """

    window: int = 30

    def init_state(self, n: int) -> Any:
        return None

    def update(self, state: Any, b: np.ndarray, hist: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, Any]:
        w = self.window
        if hist.shape[0] == 0:
            return masked_simplex_projection(b, active), state
        x_t = _masked(hist[-1], active)
        drifted = b * x_t / max(float(b @ x_t), 1e-12)
        if hist.shape[0] < 2 * w or w < 2:
            return masked_simplex_projection(drifted, active), state
        return anticor_transfer(drifted, np.log(_masked(hist[-2 * w:], active)), active), state


def anticor_transfer(b_hat: np.ndarray, log_rel: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Anticor's move from the drifted portfolio ``b_hat`` (N,) given ``log_rel`` (2w, N) log relatives."""
    w = log_rel.shape[0] // 2
    lx1, lx2 = log_rel[:w], log_rel[w:]
    mu1, mu2 = lx1.mean(axis=0), lx2.mean(axis=0)
    sd1, sd2 = lx1.std(axis=0, ddof=1), lx2.std(axis=0, ddof=1)
    cov = (lx1 - mu1).T @ (lx2 - mu2) / (w - 1)
    denom = np.outer(sd1, sd2)
    mcor = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    diag = np.diag(mcor)
    a_h = np.where(diag < 0, -diag, 0.0)
    pair = active[:, None] & active[None, :]
    claim = np.where((mu2[:, None] > mu2[None, :]) & (mcor > 0) & pair,
                     mcor + a_h[:, None] + a_h[None, :], 0.0)
    total = claim.sum(axis=1, keepdims=True)
    transfer = b_hat[:, None] * np.divide(claim, total, out=np.zeros_like(claim), where=total > 0)
    out = b_hat + transfer.sum(axis=0) - transfer.sum(axis=1)
    return masked_simplex_projection(out, active)  # only removes round-off: the moves conserve the sum


#: The algorithms by name, with the papers' default parameters (Anticor: window 10, so that a 60-day
#: replay makes 40 transfer steps; the paper runs w = 2..30).
ALGORITHMS: dict[str, Any] = {"olmar": OLMAR(), "pamr": PAMR(), "ons": ONS(), "anticor": Anticor(window=10)}


def olps_weights(algo: Any, relatives: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Run ``algo`` over ``relatives`` (T, N); return the portfolios (T + 1, N) (see the module docstring).

    Row t depends on ``relatives[:t]`` and ``mask[: t + 1]`` only. Raises ``ValueError`` on non-positive
    relatives of allowed assets or a mask of the wrong shape.
    """
    x = np.asarray(relatives, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"relatives must be (T, N), got shape {x.shape}")
    t_days, n = x.shape
    m = np.ones((t_days + 1, n), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != (t_days + 1, n):
        raise ValueError(f"mask must have shape {(t_days + 1, n)}, got {m.shape}")
    x = np.where(m[:-1] & m[1:], x, 1.0)  # a relative is only read while the asset is allowed
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("price relatives must be finite and positive")
    out = np.zeros((t_days + 1, n))
    out[0] = m[0] / max(int(m[0].sum()), 1)
    state = algo.init_state(n)
    for t in range(t_days):
        out[t + 1], state = algo.update(state, out[t], x[: t + 1], m[t + 1])
        if not out[t + 1].any() and m[t + 1].any():  # everything newly listed: start uniform
            out[t + 1] = m[t + 1] / m[t + 1].sum()
    return out
