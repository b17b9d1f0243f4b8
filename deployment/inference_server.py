"""HTTP JSON allocation service (FastAPI + uvicorn) with a model registry, risk layer, drift and monitoring.

Command line::

    python deployment/inference_server.py --model EXPORT_DIR [--model EXPORT_DIR2 ...] [--host 127.0.0.1]
        [--port 8000] [--backend onnx|torchscript|pytorch] [--state-dir DIR] [--config YAML]

Each ``--model`` is registered as a version (named by ``--name`` or ``v1``, ``v2``, ...); the first is
active unless the registry in ``--state-dir`` (default ``EXPORT_DIR/serving``) already says otherwise.
``--config`` reads the YAML's ``deployment`` section (``ServingConfig``: ``risk``, ``drift``,
``max_stale_days``, ``max_body_bytes``, ``ab_seed``, ``backend``).

Endpoints:

- ``POST /v1/allocate``: JSON ``{"observation": [...] | "ohlcv": {ticker: {date, open, high, low, close,
  volume}}, "current_weights"?, "last_returns"?, "as_of"?, "request_id"?}`` or a raw little-endian float32
  observation with ``Content-Type: application/octet-stream``. Answers ``{weights, policy_weights,
  interventions, breaker_tripped, version (the registry version that answered), format_version, request_id}``.
- ``POST /v1/performance``: ``{"returns": {ticker: one-day simple return}}`` realised after the last
  answer; each version's last served weights earn them, compared with equal weight over the N assets.
- ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /v1/registry``,
  ``POST /v1/registry/versions {"name", "path"}``, ``POST /v1/registry/activate {"version"}``,
  ``POST /v1/registry/rollback``, ``POST /v1/registry/ab {"split": {version: weight}}``,
  ``DELETE /v1/registry/ab``.

Bad input gets a 4xx JSON ``{"error": sentence}`` (400 malformed, 404 unknown version, 409 registry
conflict, 413 body too large, 415 content type, 422 invalid values); the server keeps serving.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the endpoints' string annotations here

from data.config import from_mapping, load_yaml
from data.market import DataError
from deployment.deployed_fund import Allocation, DeployedCryptoHedgeFund, RequestError, read_json_config
from deployment.drift import DriftConfig, DriftMonitor, DriftReference
from deployment.registry import ModelRegistry, RegistryError
from deployment.risk import AuditLog, RiskConfig

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 1000)


@dataclass(frozen=True)
class ServingConfig:
    """Server settings (YAML ``deployment`` section). ``max_body_bytes``: largest accepted request body;
    ``compute_threads``: allocations computed at once (worker threads; about the number of cores)."""

    risk: RiskConfig = field(default_factory=RiskConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    max_stale_days: int = 4
    max_body_bytes: int = 8_000_000
    ab_seed: int = 0
    backend: str = "onnx"
    compute_threads: int = 2


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
    """A loaded version: the fund, its drift monitor, performance, counters and last served weights."""

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


class ServingApp:
    """Everything the endpoints share; thread-safe. ``make_app()`` wraps it in FastAPI."""

    def __init__(self, registry: ModelRegistry, cfg: ServingConfig, state_dir: Path) -> None:
        self.registry, self.cfg = registry, cfg
        self.audit = AuditLog(state_dir / "audit.jsonl")
        self.rng = np.random.default_rng(cfg.ab_seed)
        self.lock = threading.Lock()
        self.versions: dict[str, VersionState] = {}
        self.status_counts: dict[tuple[str, int], int] = {}
        self.interventions: dict[str, int] = {}
        self.breaker_trips = 0
        self.latency_count = 0
        self.latency_sum_ms = 0.0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS_MS)
        self.started = time.time()
        for name in registry.versions:
            self.load(name)

    def _open(self, name: str, path: Path) -> VersionState:
        fund = DeployedCryptoHedgeFund.from_export(path, self.cfg.backend, risk=self.cfg.risk,
                                                   max_stale_days=self.cfg.max_stale_days)
        return VersionState(name, fund, self.cfg.drift, path)

    def load(self, name: str) -> VersionState:
        if name not in self.versions:
            self.versions[name] = self._open(name, self.registry.path_of(name))
        return self.versions[name]

    # -- handlers (plain Python; FastAPI glue below) ----------------------------------------------------
    def allocate(self, body: Any, raw_obs: np.ndarray | None = None) -> dict:
        if raw_obs is None and not isinstance(body, dict):
            raise HTTPError(400, "request body must be a JSON object")
        body = body or {}
        allowed = {"observation", "ohlcv", "current_weights", "last_returns", "as_of", "request_id"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise HTTPError(422, f"unknown field '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
        with self.lock:
            u = float(self.rng.random())
        name = self.registry.choose(u)
        vs = self.versions.get(name) or self.load(name)
        obs = raw_obs if raw_obs is not None else body.get("observation")
        try:
            alloc: Allocation = vs.fund.allocate(
                observation=obs, ohlcv=body.get("ohlcv"), current_weights=body.get("current_weights"),
                last_returns=body.get("last_returns"), as_of=body.get("as_of"))
        except RequestError as err:
            raise HTTPError(422, str(err)) from None
        rid = str(body.get("request_id") or uuid.uuid4().hex)
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
        return {"request_id": rid, "version": name, "format_version": alloc.version, "weights": alloc.weights,
                "policy_weights": alloc.policy_weights, "breaker_tripped": alloc.breaker_tripped,
                "interventions": [i.to_dict() for i in alloc.interventions]}

    def performance(self, body: Any) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("returns"), dict):
            raise HTTPError(400, "body must be {\"returns\": {ticker: one-day simple return}}")
        out = {}
        with self.lock:
            for name, vs in self.versions.items():
                if vs.last_weights is None:
                    continue
                tickers = vs.fund.spec.tickers
                unknown = sorted(set(body["returns"]) - set(tickers))
                missing = [t for t in tickers if t not in body["returns"]]
                if unknown or missing:
                    what = f"unknown ticker '{unknown[0]}'" if unknown else f"no return for '{missing[0]}'"
                    raise HTTPError(422, f"realised returns: {what}")
                r = np.asarray([body["returns"][t] for t in tickers], dtype=float)
                if not np.isfinite(r).all() or (r <= -1).any():
                    raise HTTPError(422, "realised returns must be finite simple returns above -1")
                vs.perf.record(vs.last_weights, r)
                out[name] = vs.perf.summary()
        if not out:
            raise HTTPError(409, "no allocation has been served yet, so there is nothing to evaluate")
        return {"versions": out}

    def registry_action(self, action: str, body: Any) -> dict:
        body = body if isinstance(body, dict) else {}
        try:
            if action == "versions":
                name, path = body.get("name"), body.get("path")
                if not isinstance(name, str) or not isinstance(path, str):
                    raise HTTPError(400, "register needs {\"name\": str, \"path\": export dir}")
                if name in self.registry.versions:
                    raise HTTPError(409, f"version '{name}' is already registered")
                if not Path(path).is_dir():
                    raise HTTPError(422, f"export directory '{path}' does not exist")
                try:  # load first: a version that cannot serve is never registered
                    vs = self._open(name, Path(path).resolve())
                except DataError as err:
                    raise HTTPError(422, f"export '{path}' cannot be served: {err}") from None
                self.registry.register(name, path)
                self.versions[name] = vs
            elif action == "activate":
                self.registry.activate(str(body.get("version")))
            elif action == "rollback":
                self.registry.rollback()
            elif action == "ab":
                split = body.get("split")
                if not isinstance(split, dict):
                    raise HTTPError(400, "A/B needs {\"split\": {version: weight, ...}}")
                self.registry.set_ab(split)
            elif action == "ab_clear":
                self.registry.clear_ab()
        except RegistryError as err:
            msg = str(err)
            raise HTTPError(404 if msg.startswith("unknown model version") else 409, msg) from None
        return self.registry_state()

    def registry_state(self) -> dict:
        return {"active": self.registry.active, "ab": self.registry.ab,
                "versions": {k: v["path"] for k, v in self.registry.versions.items()},
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

    def metrics_text(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []

        def metric(name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {doc}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_num(v)}" for labels, v in samples)

        with self.lock:
            metric("fund_http_requests_total", "counter", "HTTP requests by route and status",
                   [(f'{{route="{r}",status="{s}"}}', n) for (r, s), n in sorted(self.status_counts.items())])
            metric("fund_variant_requests_total", "counter", "Allocations served per model version",
                   [(f'{{version="{k}"}}', vs.requests) for k, vs in self.versions.items()])
            metric("fund_ab_weight", "gauge", "Configured A/B traffic share per version",
                   [(f'{{version="{k}"}}', w) for k, w in (self.registry.ab or {}).items()])
            metric("fund_active_version", "gauge", "1 for the active version",
                   [(f'{{version="{k}"}}', float(k == self.registry.active)) for k in self.versions])
            metric("fund_risk_interventions_total", "counter", "Risk-layer interventions by rule",
                   [(f'{{rule="{k}"}}', n) for k, n in sorted(self.interventions.items())])
            metric("fund_circuit_breaker_trips_total", "counter", "Allocations scaled down by the breaker",
                   [("", self.breaker_trips)])
            cum = [(f'{{le="{b}"}}', c) for b, c in zip(LATENCY_BUCKETS_MS, self.latency_buckets)]
            out.append("# HELP fund_allocate_latency_ms Server-side /v1/allocate latency (ms)")
            out.append("# TYPE fund_allocate_latency_ms histogram")
            out.extend(f"fund_allocate_latency_ms_bucket{lb} {c}" for lb, c in cum)
            out.append(f'fund_allocate_latency_ms_bucket{{le="+Inf"}} {self.latency_count}')
            out.append(f"fund_allocate_latency_ms_sum {_num(self.latency_sum_ms)}")
            out.append(f"fund_allocate_latency_ms_count {self.latency_count}")
            versions = list(self.versions.items())
        for key in ("drift_psi_max", "drift_ks_max", "drift_consecutive_checks", "drift_retrain_recommended",
                    "drift_retrain_triggered", "drift_checks_total", "drift_buffer_rows"):
            metric(f"fund_{key}", "gauge", f"Feature drift: {key.replace('_', ' ')}",
                   [(f'{{version="{k}"}}', vs.drift.metrics()[key]) for k, vs in versions])
        metric("fund_drift_feature_psi", "gauge", "PSI of each feature at the last drift check",
               [(f'{{version="{k}",feature="{f}"}}', p) for k, vs in versions for f, p, _ in vs.drift.per_feature()])
        for key in ("days", "cumulative_return", "equal_weight_cumulative_return", "excess_cumulative_return",
                    "win_rate"):
            metric(f"fund_performance_{key}", "gauge", f"Realised {key.replace('_', ' ')} (simple returns)",
                   [(f'{{version="{k}"}}', vs.perf.summary()[key]) for k, vs in versions])
        metric("fund_uptime_seconds", "gauge", "Seconds since start", [("", time.time() - self.started)])
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    v = float(v)
    return "NaN" if math.isnan(v) else repr(v)


def make_app(state: ServingApp):
    """The FastAPI application over ``state``."""
    from anyio import CapacityLimiter, to_thread
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI(title="DRL hedge fund allocation service", docs_url=None, redoc_url=None)
    limit = state.cfg.max_body_bytes
    limiter = CapacityLimiter(max(1, state.cfg.compute_threads))  # more threads than cores only thrash

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HTTPError(400, "Content-Length must be a non-negative integer")
            if int(length) > limit:
                raise HTTPError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse_json(request: Request, required: bool = True) -> Any:
        raw = await read_body(request)
        if not raw:
            if required:
                raise HTTPError(400, "request body is empty; send a JSON object")
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPError(400, f"request body is not valid JSON ({err.__class__.__name__}: {err})") from None

    def guarded(route: str, fn) -> Any:
        async def endpoint(request: Request):
            t0 = time.perf_counter()
            try:
                result = await fn(request)
                status = 200
                resp = result if not isinstance(result, dict) else JSONResponse(result)
            except HTTPError as err:
                status, resp = err.status, JSONResponse({"error": str(err)}, status_code=err.status)
            except DataError as err:
                status, resp = 422, JSONResponse({"error": str(err)}, status_code=422)
            except Exception as err:  # noqa: BLE001 - a bug must not take the service down
                status = 500
                resp = JSONResponse({"error": f"internal error ({type(err).__name__})"}, status_code=500)
            state.observe(route, status, (time.perf_counter() - t0) * 1000.0)
            return resp
        return endpoint

    async def allocate(request: Request):
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype == "application/octet-stream":
            raw = await read_body(request)
            if len(raw) % 4:
                raise HTTPError(400, "a binary observation must be little-endian float32 (length a multiple of 4)")
            return await to_thread.run_sync(state.allocate, None, np.frombuffer(raw, dtype="<f4"),
                                            limiter=limiter)
        if ctype not in ("application/json", ""):
            raise HTTPError(415, f"content type '{ctype}' is not supported; use application/json "
                                 "or application/octet-stream")
        body = await parse_json(request)
        # The model runs in a worker thread: ONNX Runtime and torch release the GIL, so two requests
        # can compute on two cores while the event loop keeps reading bodies.
        return await to_thread.run_sync(state.allocate, body, limiter=limiter)

    async def performance(request: Request):
        return state.performance(await parse_json(request))

    async def healthz(request: Request):
        return {"status": "ok", "active": state.registry.active, "ab": state.registry.ab,
                "versions": sorted(state.versions)}

    async def metrics(request: Request):
        return PlainTextResponse(state.metrics_text(), media_type="text/plain; version=0.0.4")

    async def registry(request: Request):
        return state.registry_state()

    def reg(action: str):
        async def run(request: Request):
            return state.registry_action(action, await parse_json(request, required=False))
        return run

    app.add_api_route("/v1/allocate", guarded("/v1/allocate", allocate), methods=["POST"])
    app.add_api_route("/v1/performance", guarded("/v1/performance", performance), methods=["POST"])
    app.add_api_route("/healthz", guarded("/healthz", healthz), methods=["GET"])
    app.add_api_route("/metrics", guarded("/metrics", metrics), methods=["GET"])
    app.add_api_route("/v1/registry", guarded("/v1/registry", registry), methods=["GET"])
    for action, path, method in (("versions", "/v1/registry/versions", "POST"),
                                 ("activate", "/v1/registry/activate", "POST"),
                                 ("rollback", "/v1/registry/rollback", "POST"),
                                 ("ab", "/v1/registry/ab", "POST"), ("ab_clear", "/v1/registry/ab", "DELETE")):
        app.add_api_route(path, guarded(path, reg(action)), methods=[method])
    return app


def build_state(models: list[str], names: list[str] | None, cfg: ServingConfig, state_dir: str | None) -> ServingApp:
    """Register ``models`` (export dirs) in the registry at ``state_dir`` and load every version."""
    if not models:
        raise DataError("give at least one --model EXPORT_DIR")
    for m in models:
        if not (Path(m) / "config.json").is_file():
            raise DataError(f"'{m}' is not an export directory (no config.json); run deployment/model_export.py")
    names = names or [f"v{i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise DataError("give one --name per --model")
    sdir = Path(state_dir) if state_dir else Path(models[0]) / "serving"
    registry = ModelRegistry(sdir)
    for name, path in zip(names, models):
        registry.register(name, path)
    return ServingApp(registry, cfg, sdir)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve allocations from exported policies over HTTP.")
    p.add_argument("--model", action="append", required=True, help="export directory (repeatable)")
    p.add_argument("--name", action="append", help="version name for each --model (default v1, v2, ...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("onnx", "torchscript", "pytorch"))
    p.add_argument("--state-dir", help="registry, audit log and retrain requests (default MODEL/serving)")
    p.add_argument("--config", help="YAML with a 'deployment' section (ServingConfig)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        section = load_yaml(args.config).get("deployment", {}) if args.config else {}
        cfg = from_mapping(ServingConfig, section or {}, "deployment")
        if args.backend:
            cfg = dataclasses.replace(cfg, backend=args.backend)
        if not 0 < args.port < 65536:
            raise DataError(f"port must be in 1..65535, got {args.port}")
        state = build_state(args.model, args.name, cfg, args.state_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"serving {', '.join(state.versions)} (active {state.registry.active}, backend {cfg.backend}) "
          f"on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(make_app(state), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
