"""Feature drift of served observations against the training manifest's statistics.

The manifest stores, per feature f, the mean and standard deviation of the *raw* feature on the training
span; the store's features are ``(raw - mean) / std`` clipped to ``[-clip, clip]``. So on the training
distribution each normalised feature has mean 0 and variance 1. The reference distribution is the
training span's own quantiles when the export wrote them (``drift_reference.json``), else the standard
normal (the manifest holds moments only, no histogram). Two statistics per feature,
computed over a rolling buffer of the latest served rows (one row per listed asset per request: the
last day of the window):

- PSI (population stability index) over ``n_bins`` bins of equal reference probability:
  ``sum_b (a_b - e_b) * ln(a_b / e_b)`` with ``e_b`` the reference share (``1 / n_bins`` without ties)
  and ``a_b`` the incoming share (both floored at ``eps``). Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift.
- KS: the Kolmogorov-Smirnov statistic ``sup_x |F_n(x) - F_ref(x)|`` and its p-value.

A check is "drifted" when the largest PSI exceeds ``psi_threshold`` or the largest KS statistic exceeds
``ks_threshold``. When ``persist_checks`` consecutive checks drift, retraining is recommended and the
configured trigger fires once: a request file (JSON) is written atomically and/or a command is started
(argument list, no shell).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import stats

from data.atomic_files import atomic_write_text
from data.market import DataError


@dataclass(frozen=True)
class DriftConfig:
    """Drift detection and retrain trigger settings.

    - ``buffer_rows``: rows (asset-days) kept for the statistics; ``min_rows`` before any check.
    - ``check_every``: run a check every this many requests, and at most once per ``min_interval_s``
      seconds (a check over 2,000 rows x 82 features costs ~30 ms of CPU); ``background``: in a worker
      thread (a check due while one runs is skipped), so a request never waits for the statistics.
    - ``retrain_command``: run when drift persists (split with ``shlex``; empty = none).
    - ``retrain_request_file``: JSON written when drift persists (empty = none).
    """

    n_bins: int = 10
    psi_threshold: float = 0.25
    ks_threshold: float = 0.2
    buffer_rows: int = 2000
    min_rows: int = 100
    check_every: int = 10
    min_interval_s: float = 5.0
    persist_checks: int = 3
    background: bool = True
    retrain_command: str = ""
    retrain_request_file: str = ""
    eps: float = 1e-4

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise DataError(f"drift n_bins must be at least 2, got {self.n_bins}")
        if self.min_rows < 1 or self.buffer_rows < self.min_rows:
            raise DataError("drift buffer_rows must be at least min_rows, and min_rows at least 1")
        if self.check_every < 1 or self.persist_checks < 1:
            raise DataError("drift check_every and persist_checks must be at least 1")


@dataclass(frozen=True)
class DriftReference:
    """The training distribution of each normalised feature, summarised by ``Q`` quantiles.

    ``quantiles`` (F, Q): feature f's quantiles at probability levels ``(k + 0.5) / Q``, k = 0..Q-1,
    computed on the training span (``from_sample``) or those of N(0, 1) (``standard_normal``) when only
    the manifest's mean/std are known.
    """

    quantiles: np.ndarray

    @classmethod
    def standard_normal(cls, n_features: int, q: int = 200) -> DriftReference:
        levels = (np.arange(q) + 0.5) / q
        return cls(np.tile(stats.norm.ppf(levels), (n_features, 1)))

    @classmethod
    def from_sample(cls, sample: np.ndarray, q: int = 200) -> DriftReference:
        """``sample`` (R, F) normalised rows from the training span."""
        levels = (np.arange(q) + 0.5) / q
        return cls(np.quantile(np.asarray(sample, dtype=float), levels, axis=0).T.copy())

    def to_dict(self) -> dict:
        # Full precision: rounding would move tied values (a feature often exactly c) off their bin.
        return {"quantiles": self.quantiles.tolist()}

    @classmethod
    def from_dict(cls, d: dict, n_features: int) -> DriftReference:
        q = np.asarray(d.get("quantiles"), dtype=float)
        if q.ndim != 2 or q.shape[0] != n_features or not np.isfinite(q).all():
            raise DataError(f"drift reference must hold finite quantiles for {n_features} features")
        return cls(q)


def psi_bins(ref: DriftReference, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature inner bin edges (F, n_bins-1) at the reference's ``k/n_bins`` quantiles and the
    reference share of each bin (F, n_bins): the fraction of the quantile grid falling in it (exactly
    ``1/n_bins`` for a continuous reference, uneven when it has ties, e.g. a feature often exactly 0)."""
    q = ref.quantiles
    levels = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    edges = np.quantile(q, levels, axis=1).T  # (F, n_bins-1)
    expected = np.stack([np.bincount(np.searchsorted(edges[f], q[f], side="right"), minlength=n_bins)
                         for f in range(q.shape[0])]) / q.shape[1]
    return edges, expected


def psi(sample: np.ndarray, ref: DriftReference, n_bins: int = 10, eps: float = 1e-4,
        bins: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """PSI of each column of ``sample`` (R, F) against ``ref``; returns (F,).

    ``sum_b (a_b - e_b) ln(a_b / e_b)`` over the bins of ``psi_bins`` (pass ``bins`` to reuse them),
    with incoming shares ``a_b`` and reference shares ``e_b`` both floored at ``eps``.
    """
    x = np.asarray(sample, dtype=float)
    edges, expected = bins if bins is not None else psi_bins(ref, n_bins)
    actual = np.stack([np.bincount(np.searchsorted(edges[f], x[:, f], side="right"), minlength=n_bins)
                       for f in range(x.shape[1])]) / max(len(x), 1)
    exp, act = np.maximum(expected, eps), np.maximum(actual, eps)
    return ((act - exp) * np.log(act / exp)).sum(axis=1)


def ks(sample: np.ndarray, ref: DriftReference) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample KS statistic and asymptotic p-value of each column of ``sample`` (R, F) vs the
    reference grid (F, Q): ``D = sup_t |F_sample(t) - F_ref(t)|`` over all points of both sets, p from
    the Kolmogorov distribution at ``sqrt(R Q / (R + Q)) D`` (scipy's ``ks_2samp(method="asymp")``)."""
    x = np.sort(np.asarray(sample, dtype=float), axis=0)
    q = np.sort(ref.quantiles, axis=1)
    n, m = x.shape[0], q.shape[1]
    d = np.empty(x.shape[1])
    for f in range(x.shape[1]):
        pts = np.concatenate([x[:, f], q[f]])
        cdf_x = np.searchsorted(x[:, f], pts, side="right") / n
        cdf_q = np.searchsorted(q[f], pts, side="right") / m
        d[f] = np.abs(cdf_x - cdf_q).max()
    en = n * m / (n + m)
    return d, stats.kstwobign.sf(np.sqrt(en) * d)


@dataclass(frozen=True)
class DriftReport:
    """Result of one check: per-feature PSI and KS (F,), the worst feature, and the verdicts."""

    psi: np.ndarray
    ks_stat: np.ndarray
    ks_pvalue: np.ndarray
    rows: int
    drifted: bool
    consecutive: int
    retrain_recommended: bool


class DriftMonitor:
    """Rolling drift detector over normalised feature rows (thread-safe).

    ``feature_names`` (F,) label the metrics. Feed ``observe(rows)`` with (R, F) normalised rows.
    """

    def __init__(self, feature_names: tuple[str, ...], cfg: DriftConfig,
                 reference: DriftReference | None = None) -> None:
        self.feature_names = tuple(feature_names)
        self.cfg = cfg
        self.reference = reference or DriftReference.standard_normal(len(self.feature_names))
        self._bins = psi_bins(self.reference, cfg.n_bins)
        self._busy = threading.Lock()
        self._rows: deque[np.ndarray] = deque(maxlen=cfg.buffer_rows)
        self._lock = threading.Lock()
        self._requests = 0
        self._last_check = -np.inf
        self.consecutive = 0
        self.checks = 0
        self.triggered = False
        self.trigger_info: dict = {}
        self.last: DriftReport | None = None

    def observe(self, rows: np.ndarray) -> DriftReport | None:
        """Add rows (R, F); every ``check_every`` calls a check runs (returned when run inline)."""
        rows = np.asarray(rows, dtype=float).reshape(-1, len(self.feature_names))
        with self._lock:
            self._rows.extend(rows)
            self._requests += 1
            if self._requests % self.cfg.check_every or len(self._rows) < self.cfg.min_rows:
                return None
            now = time.monotonic()
            if now - self._last_check < self.cfg.min_interval_s:
                return None
            self._last_check = now
            sample = np.stack(self._rows)
        if not self.cfg.background:
            with self._busy:
                return self._check(sample)
        if self._busy.acquire(blocking=False):
            threading.Thread(target=self._check_and_release, args=(sample,), daemon=True).start()
        return None

    def _check_and_release(self, sample: np.ndarray) -> None:
        try:
            self._check(sample)
        finally:
            self._busy.release()

    def wait(self, timeout: float = 10.0) -> None:
        """Block until a background check in progress has finished (tests, shutdown)."""
        if self._busy.acquire(timeout=timeout):
            self._busy.release()

    def _check(self, sample: np.ndarray) -> DriftReport:
        p = psi(sample, self.reference, self.cfg.n_bins, self.cfg.eps, self._bins)
        k, kp = ks(sample, self.reference)
        drifted = bool(p.max() > self.cfg.psi_threshold or k.max() > self.cfg.ks_threshold)
        with self._lock:
            self.consecutive = self.consecutive + 1 if drifted else 0
            self.checks += 1
            recommend = self.consecutive >= self.cfg.persist_checks
            self.last = DriftReport(p, k, kp, sample.shape[0], drifted, self.consecutive, recommend)
            fire = recommend and not self.triggered
            self.triggered = self.triggered or fire
        if fire:
            self.trigger_info = self._fire(self.last)
        return self.last

    def _fire(self, rep: DriftReport) -> dict:
        worst = int(np.argmax(rep.psi))
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": f"feature drift persisted for {rep.consecutive} consecutive checks",
            "worst_feature": self.feature_names[worst], "worst_psi": float(rep.psi[worst]),
            "max_ks": float(rep.ks_stat.max()), "rows": rep.rows,
            "psi": {n: float(v) for n, v in zip(self.feature_names, rep.psi)},
        }
        info: dict = {"payload": payload}
        if self.cfg.retrain_request_file:
            path = os.path.abspath(self.cfg.retrain_request_file)
            atomic_write_text(path, json.dumps(payload, indent=2))  # parents created
            info["request_file"] = path
        if self.cfg.retrain_command:
            try:
                proc = subprocess.Popen(shlex.split(self.cfg.retrain_command), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                info["command_pid"] = proc.pid
            except OSError as err:
                info["command_error"] = str(err)
        return info

    def metrics(self) -> dict[str, float]:
        """Scalars for /metrics: max PSI, max KS, rows, consecutive drifted checks, retrain flag."""
        with self._lock:
            rep = self.last
            return {
                "drift_checks_total": float(self.checks),
                "drift_buffer_rows": float(len(self._rows)),
                "drift_psi_max": float(rep.psi.max()) if rep else 0.0,
                "drift_ks_max": float(rep.ks_stat.max()) if rep else 0.0,
                "drift_consecutive_checks": float(self.consecutive),
                "drift_retrain_recommended": 1.0 if (rep and rep.retrain_recommended) else 0.0,
                "drift_retrain_triggered": 1.0 if self.triggered else 0.0,
            }

    def per_feature(self) -> list[tuple[str, float, float]]:
        """(feature name, PSI, KS statistic) of the last check, or [] before the first check."""
        with self._lock:
            if self.last is None:
                return []
            return list(zip(self.feature_names, self.last.psi.tolist(), self.last.ks_stat.tolist()))
