"""The serving state and its request handlers (plain Python; ``inference_server.make_app`` is the HTTP glue).

``ServingApp`` holds the model registry and its loaded versions, the market state (optional), the
risk/audit/drift/performance monitors and the counters that /metrics exports. Handlers take parsed
JSON and return dicts, or raise ``HTTPError`` (4xx with one sentence). Thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.market import DataError
from deployment.deployed_fund import Allocation, DeployedCryptoHedgeFund, RequestError, read_json_config
from deployment.drift import DriftConfig, DriftMonitor, DriftReference
from deployment.json_body import numbers
from deployment.market_state import BarsError, MarketState
from deployment.monitoring import LATENCY_BUCKETS_MS
from deployment.registry import ModelRegistry, RegistryError
from deployment.risk import CASH, AuditLog, RiskConfig

MAX_REQUEST_ID = 128
#: A realised one-day simple return above this (+1000 %) is refused as a data error.
MAX_DAILY_RETURN = 10.0


@dataclass(frozen=True)
class ServingConfig:
    """Server settings (YAML ``deployment`` section). ``max_body_bytes``: largest binary body;
    ``max_json_bytes``: largest JSON body (parsed off the event loop, one at a time);
    ``compute_threads``: allocations computed at once (worker threads; about the number of cores)."""

    risk: RiskConfig = field(default_factory=RiskConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    max_stale_days: int = 4
    max_body_bytes: int = 8_000_000
    max_json_bytes: int = 3_000_000
    ab_seed: int = 0
    backend: str = "onnx"
    compute_threads: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.max_json_bytes <= self.max_body_bytes:
            raise DataError("deployment.max_json_bytes must be positive and at most max_body_bytes")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PerformanceMonitor:
    """Realised performance of one version's served weights against equal weight (simple returns).

    ``record(w, r)``: weights (N+1,) held over a day with asset returns (N,); cash earns 0.
    Cumulative returns compound: ``prod(1 + r_t) - 1``.
    """

    def __init__(self) -> None:
        self.days = 0
        self.growth = 1.0
        self.ew_growth = 1.0
        self.wins = 0

    def record(self, weights: np.ndarray, returns: np.ndarray) -> tuple[float, float]:
        port = float(np.dot(weights[:-1], returns))
        ew = float(np.mean(returns))
        self.days += 1
        self.growth *= 1.0 + port
        self.ew_growth *= 1.0 + ew
        self.wins += int(port > ew)
        return port, ew

    def summary(self) -> dict[str, float]:
        return {"days": self.days, "cumulative_return": self.growth - 1.0,
                "equal_weight_cumulative_return": self.ew_growth - 1.0,
                "excess_cumulative_return": self.growth - self.ew_growth,
                "win_rate": self.wins / self.days if self.days else 0.0}


class VersionState:
    """A loaded version: the fund, its drift monitor, performance, counters, last served weights and the
    market context and rule prior of the latest day (``context_seq`` = the snapshot they were computed from)."""

    def __init__(self, name: str, fund: DeployedCryptoHedgeFund, drift_cfg: DriftConfig, path: Path) -> None:
        self.name, self.fund = name, fund
        ref_file = path / "drift_reference.json"
        ref = None
        if ref_file.is_file():
            ref = DriftReference.from_dict(read_json_config(ref_file, "drift reference"),
                                           len(fund.spec.feature_names))
        self.drift = DriftMonitor(fund.spec.feature_names, drift_cfg, ref)
        self.perf = PerformanceMonitor()
        self.requests = 0
        self.last_weights: np.ndarray | None = None
        self.context: Any = None
        self.prior: np.ndarray | None = None  # the residual policy's rule weights on that day
        self.context_seq = -1
        self.context_lock = threading.Lock()


class ServingApp:
    """Everything the endpoints share; thread-safe. ``inference_server.make_app()`` wraps it in FastAPI."""

    def __init__(self, registry: ModelRegistry, cfg: ServingConfig, state_dir: Path,
                 market: MarketState | None = None, models_root: Path | None = None) -> None:
        self.registry, self.cfg, self.market = registry, cfg, market
        self.models_root = (models_root or state_dir).resolve()
        self.audit = AuditLog(state_dir / "audit.jsonl")
        self.rng = np.random.default_rng(cfg.ab_seed)
        self.lock = threading.Lock()
        self.versions: dict[str, VersionState] = {}
        self.status_counts: dict[tuple[str, int], int] = {}
        self.interventions: dict[str, int] = {}
        self.breaker_trips = self.bars_accepted = 0
        self.latency_count = 0
        self.latency_sum_ms = 0.0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS_MS)
        self.started = time.time()
        self.warnings: list[str] = []
        for name in registry.versions:
            in_use = name == registry.active or name in (registry.ab or {})
            try:
                self.load(name)
            except DataError as err:
                if in_use:
                    raise DataError(f"version '{name}' is in use but cannot be served: {err}") from None
                self.warnings.append(f"inactive version '{name}' cannot be loaded and is skipped: {err}")

    def _open(self, name: str, path: Path) -> VersionState:
        if not path.is_dir():
            raise DataError(f"its export directory '{path}' no longer exists")
        fund = DeployedCryptoHedgeFund.from_export(path, self.cfg.backend, risk=self.cfg.risk,
                                                   max_stale_days=self.cfg.max_stale_days)
        if self.market is not None and fund.spec.tickers != self.market.tickers:
            raise DataError(f"it trades {', '.join(fund.spec.tickers)}, not the market state's tickers")
        prior = fund.spec.prior_env
        if self.market is not None and prior is not None and prior.prior_rows > self.market.tail:
            raise DataError(f"it tilts the '{prior.action_prior}' rule, which reads {prior.prior_rows} days "
                            f"of prices, but the market state keeps {self.market.tail}; restart the server with "
                            "this version as --model")
        return VersionState(name, fund, self.cfg.drift, path)

    def load(self, name: str) -> VersionState:
        if name not in self.versions:
            self.versions[name] = self._open(name, self.registry.path_of(name))
        return self.versions[name]

    def _choose(self) -> tuple[str, VersionState]:
        with self.lock:
            u = float(self.rng.random())
        name = self.registry.choose(u)
        vs = self.versions.get(name)
        if vs is None:
            raise HTTPError(409, f"version '{name}' is not loaded")
        return name, vs

    # -- allocate ---------------------------------------------------------------------------------------
    def allocate(self, body: Any, raw_obs: np.ndarray | None = None) -> dict:
        if raw_obs is None and not isinstance(body, dict):
            raise HTTPError(400, "request body must be a JSON object")
        body = body or {}
        allowed = {"observation", "ohlcv", "current_weights", "last_returns", "as_of", "request_id"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise HTTPError(422, f"unknown field '{str(unknown[0])[:40]}'; allowed: {', '.join(sorted(allowed))}")
        rid = body.get("request_id")
        if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID):
            raise HTTPError(422, f"request_id must be a string of 1 to {MAX_REQUEST_ID} characters")
        rid = rid or uuid.uuid4().hex
        obs = raw_obs if raw_obs is not None else body.get("observation")
        name, vs = self._choose()
        date = None
        try:
            if obs is None and body.get("ohlcv") is None:
                alloc, date = self._allocate_streaming(vs, body)
            else:
                if raw_obs is None and obs is not None:
                    obs = obs if isinstance(obs, np.ndarray) else numbers(obs, "observation")
                    if "current_weights" in body:
                        raise HTTPError(422, "current_weights are part of the observation; do not send both")
                if body.get("last_returns") is not None and not isinstance(body["last_returns"], dict):
                    numbers(body["last_returns"], "last_returns")
                alloc = vs.fund.allocate(
                    observation=obs, ohlcv=body.get("ohlcv"), current_weights=body.get("current_weights"),
                    last_returns=body.get("last_returns"), as_of=body.get("as_of"))
        except RequestError as err:
            raise HTTPError(422, str(err)) from None
        self._served(vs, alloc, rid, name)
        out = {"request_id": rid, "version": name, "format_version": alloc.version, "weights": alloc.weights,
               "policy_weights": alloc.policy_weights, "breaker_tripped": alloc.breaker_tripped,
               "interventions": [i.to_dict() for i in alloc.interventions]}
        if date is not None:
            out["date"] = date
        return out

    def _allocate_streaming(self, vs: VersionState, body: dict) -> tuple[Allocation, str]:
        if self.market is None:
            raise HTTPError(409, "this server has no market state: send an observation, or start it with "
                                 "--history DIR or --source synthetic")
        extra = sorted(set(body) - {"current_weights", "request_id"})
        if extra:
            raise HTTPError(422, f"'{extra[0]}' is not used when allocating from the market state")
        snap = self.market.snapshot
        weights = self._streaming_weights(vs, body.get("current_weights"), snap.listed)
        with vs.context_lock:  # the market-only part: once per day and version
            if vs.context_seq != snap.seq:
                vs.context = vs.fund.market_context(snap.window)
                vs.prior = vs.fund.spec.prior_at(snap.tail_close, snap.tail_listed)  # None unless a residual policy
                vs.context_seq = snap.seq
                latest = snap.window[-1][snap.listed]
                if len(latest):
                    vs.drift.observe(latest)
            context, prior = vs.context, vs.prior
        mask = snap.tradable.astype(np.float32)
        return vs.fund.allocate_context(context, weights, mask, snap.last_returns, prior), str(snap.date)

    def _streaming_weights(self, vs: VersionState, current: Any, listed: np.ndarray) -> np.ndarray:
        tickers = vs.fund.spec.tickers
        n = len(tickers)
        if current is None:
            w = np.zeros(n + 1)
            w[-1] = 1.0
            return w
        if not isinstance(current, dict):
            raise HTTPError(422, "current_weights must map tickers and CASH to fractions of NAV")
        unknown = sorted(set(current) - set(tickers) - {CASH})
        if unknown:
            raise HTTPError(422, f"unknown ticker '{str(unknown[0])[:40]}' in current_weights")
        vals = [current.get(t, 0.0) for t in (*tickers, CASH)]
        numbers(vals, "current_weights")
        w = np.asarray(vals, dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise HTTPError(422, "current_weights must be non-negative fractions of NAV summing to 1")
        if (w[:-1][~listed] > 0).any():
            i = int(np.argmax((w[:-1] > 0) & ~listed))
            raise HTTPError(422, f"current_weights hold {tickers[i]}, which is not listed yet")
        return w

    def _served(self, vs: VersionState, alloc: Allocation, rid: str, name: str) -> None:
        w = np.array(list(alloc.weights.values()))
        with self.lock:
            vs.requests += 1
            vs.last_weights = w
            self.breaker_trips += int(alloc.breaker_tripped)
            for act in alloc.interventions:
                self.interventions[act.rule] = self.interventions.get(act.rule, 0) + 1
        if len(alloc.feature_rows):
            vs.drift.observe(alloc.feature_rows)
        self.audit.record(rid, alloc.version, alloc.interventions, variant=name)

    # -- market state -----------------------------------------------------------------------------------
    def bars(self, body: Any) -> dict:
        if self.market is None:
            raise HTTPError(409, "this server has no market state; start it with --history DIR or --source synthetic")
        try:
            added = self.market.append(body)
        except BarsError as err:
            raise HTTPError(err.status, str(err)) from None
        if added:
            with self.lock:
                self.bars_accepted += 1
        return {"added": added, **self.market_info()}

    def market_info(self, days: int | None = None) -> dict:
        if self.market is None:
            raise HTTPError(409, "this server has no market state; start it with --history DIR or --source synthetic")
        snap = self.market.snapshot
        out = {"date": str(snap.date), "tickers": list(snap.tickers), "categories": list(self.market.categories),
               "tradable": [t for t, ok in zip(snap.tickers, snap.tradable) if ok],
               "listed": [t for t, ok in zip(snap.tickers, snap.listed) if ok]}
        if days:
            out["rows"] = snap.rows(days)
            out["accounting"] = self.market.accounting
        return out

    # -- realised performance ---------------------------------------------------------------------------
    def performance(self, body: Any) -> dict:
        if not isinstance(body, dict) or set(body) != {"returns"} or not isinstance(body["returns"], dict):
            raise HTTPError(400, "body must be {\"returns\": {ticker: one-day simple return}}")
        out = {}
        with self.lock:
            served = [(n, vs) for n, vs in self.versions.items() if vs.last_weights is not None]
            if not served:
                raise HTTPError(409, "no allocation has been served yet, so there is nothing to evaluate")
            tickers = served[0][1].fund.spec.tickers
            returns = body["returns"]
            unknown = sorted(set(returns) - set(tickers))
            missing = [t for t in tickers if t not in returns]
            if unknown or missing:
                what = f"unknown ticker '{str(unknown[0])[:40]}'" if unknown else f"no return for '{missing[0]}'"
                raise HTTPError(422, f"realised returns: {what}")
            vals = numbers([returns[t] for t in tickers], "realised returns")
            r = np.asarray(vals, dtype=float)
            if not np.isfinite(r).all() or (r <= -1).any() or (r > MAX_DAILY_RETURN).any():
                raise HTTPError(422, f"realised returns must be simple one-day returns in (-1, {MAX_DAILY_RETURN:g}]")
            for name, vs in served:
                vs.perf.record(vs.last_weights, r)
                out[name] = vs.perf.summary()
        return {"versions": out}

    # -- registry ---------------------------------------------------------------------------------------
    def registry_action(self, action: str, body: Any, name: str | None = None) -> dict:
        body = body if isinstance(body, dict) else {}
        try:
            if action == "versions":
                self._register(body)
            elif action == "delete":
                self.registry.remove(str(name))
                with self.lock:
                    self.versions.pop(str(name), None)
            elif action == "activate":
                version = body.get("version")
                if not isinstance(version, str) or version not in self.versions:
                    self.registry.path_of(str(version)[:64])  # 404 for an unknown name
                    raise HTTPError(409, f"version '{version}' is registered but could not be loaded")
                self.registry.activate(version)
            elif action == "rollback":
                self.registry.rollback()
            elif action == "ab":
                split = body.get("split")
                if not isinstance(split, dict):
                    raise HTTPError(400, "A/B needs {\"split\": {version: weight, ...}}")
                missing = sorted(set(split) - set(self.versions))
                if missing:
                    self.registry.path_of(str(missing[0])[:64])
                self.registry.set_ab(split)
            elif action == "ab_clear":
                self.registry.clear_ab()
        except RegistryError as err:
            msg = str(err)
            raise HTTPError(404 if msg.startswith("unknown model version") else 409, msg) from None
        return self.registry_state()

    def _register(self, body: dict) -> None:
        name, path = body.get("name"), body.get("path")
        if not isinstance(name, str) or not isinstance(path, str) or set(body) != {"name", "path"}:
            raise HTTPError(400, "register needs exactly {\"name\": str, \"path\": export dir}")
        if name in self.registry.versions:
            raise HTTPError(409, f"version '{name[:64]}' is already registered")
        try:
            resolved = Path(path).resolve()
        except (OSError, ValueError, RuntimeError):
            raise HTTPError(422, "the export path cannot be resolved") from None
        if not resolved.is_relative_to(self.models_root):
            raise HTTPError(403, f"export directories must lie inside the models root '{self.models_root}'")
        if not resolved.is_dir():
            raise HTTPError(422, f"export directory '{path[:200]}' does not exist")
        try:  # load first: a version that cannot serve is never registered
            vs = self._open(name, resolved)
        except DataError as err:
            raise HTTPError(422, f"export '{path[:200]}' cannot be served: {err}") from None
        self.registry.register(name, resolved)
        with self.lock:
            self.versions[name] = vs

    def registry_state(self) -> dict:
        return {"active": self.registry.active, "ab": self.registry.ab,
                "versions": {k: v["path"] for k, v in self.registry.versions.items()},
                "loaded": sorted(self.versions),
                "market_split": {k: vs.fund.splitter is not None for k, vs in self.versions.items()},
                "requests": {k: vs.requests for k, vs in self.versions.items()}}

    def observe(self, route: str, status: int, ms: float) -> None:
        with self.lock:
            key = (route, status)
            self.status_counts[key] = self.status_counts.get(key, 0) + 1
            if route == "/v1/allocate" and status == 200:
                self.latency_count += 1
                self.latency_sum_ms += ms
                for i, b in enumerate(LATENCY_BUCKETS_MS):
                    if ms <= b:
                        self.latency_buckets[i] += 1


def build_state(models: list[str], names: list[str] | None, cfg: ServingConfig, state_dir: str | None,
                market: MarketState | None = None, models_root: str | None = None) -> ServingApp:
    """Register ``models`` (export dirs) in the registry at ``state_dir`` and load every version."""
    if not models:
        raise DataError("give at least one --model EXPORT_DIR")
    for m in models:
        if not (Path(m) / "config.json").is_file():
            raise DataError(f"'{m}' is not an export directory (no config.json); run deployment/model_export.py")
    names = names or [f"v{i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise DataError("give one --name per --model")
    root = Path(models_root) if models_root else Path(models[0]).resolve().parent
    if not root.is_dir():
        raise DataError(f"models root '{models_root}' is not a directory")
    sdir = Path(state_dir) if state_dir else Path(models[0]) / "serving"
    registry = ModelRegistry(sdir)
    for name, path in zip(names, models):
        registry.register(name, path)
    app = ServingApp(registry, cfg, sdir, market, root)
    for line in app.warnings:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return app
