"""Pure reward helpers over arrays of M portfolios (used by ``environments.accounting``).

- ``rolling_vol``: sample standard deviation of the most recent daily log returns (daily units).
- ``differential_sharpe``: Moody & Saffell's differential Sharpe ratio (1998, 2001), the first-order
  term of the exponentially weighted Sharpe ratio's change for a decay ``eta``.
"""

from __future__ import annotations

import numpy as np

#: Below this EMA variance the differential Sharpe ratio is defined as 0 (the very first step).
DSR_MIN_VARIANCE = 1e-12


def rolling_vol(log_returns: np.ndarray, n_returns: np.ndarray) -> np.ndarray:
    """Sample std (ddof=1) of the last ``n_returns[m]`` entries of each row, 0 when fewer than 2.

    ``log_returns`` (M, K), newest last; ``n_returns`` (M,) ints in [0, K]. Returns (M,) in the
    units of the input (daily log return).
    """
    k = log_returns.shape[1]
    valid = np.arange(k)[None, :] >= (k - n_returns)[:, None]
    count = np.maximum(n_returns, 1)
    mean = (log_returns * valid).sum(axis=1) / count
    dev = (log_returns - mean[:, None]) * valid
    var = (dev * dev).sum(axis=1) / np.maximum(n_returns - 1, 1)
    return np.where(n_returns >= 2, np.sqrt(var), 0.0)


def differential_sharpe(
    ret: np.ndarray, a_prev: np.ndarray, b_prev: np.ndarray, eta: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differential Sharpe ratio ``D_t`` and updated EMAs.

    With ``R_t`` the step's simple return (M,), ``A``/``B`` the EMAs of ``R`` and ``R**2`` before
    the step, ``dA = R_t - A``, ``dB = R_t**2 - B``:

        D_t = (B * dA - 0.5 * A * dB) / (B - A**2) ** 1.5      (0 when B - A**2 <= 1e-12)
        A_t = A + eta * dA,   B_t = B + eta * dB

    ``D_t`` is ``dS_t/d eta`` at ``eta = 0`` for ``S_t = A_t / sqrt(B_t - A_t**2)``. Returns
    ``(D_t, A_t, B_t)``, each (M,).
    """
    d_a = ret - a_prev
    d_b = ret * ret - b_prev
    var = b_prev - a_prev * a_prev
    ok = var > DSR_MIN_VARIANCE
    safe = np.where(ok, var, 1.0)
    dsr = np.where(ok, (b_prev * d_a - 0.5 * a_prev * d_b) / safe**1.5, 0.0)
    return dsr, a_prev + eta * d_a, b_prev + eta * d_b
