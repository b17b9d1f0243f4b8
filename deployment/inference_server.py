"""HTTP JSON allocation service (FastAPI + uvicorn): market state, model registry, risk layer, monitoring.

Command line::

    python deployment/inference_server.py --model EXPORT_DIR [--model EXPORT_DIR2 ...] [--name NAME ...]
        [--history DIR | --source synthetic] [--history-end DATE] [--token-file F] [--host 127.0.0.1]
        [--port 8000] [--backend onnx|torchscript|pytorch] [--state-dir DIR] [--models-root DIR]
        [--config YAML]

Each ``--model`` is registered as a version (named by ``--name`` or ``v1``, ``v2``, ...); the first is
active unless the registry in ``--state-dir`` (default ``EXPORT_DIR/serving``) already says otherwise.
``--history DIR`` (a CSV folder as ``--source csv``) or ``--source synthetic`` warms the market state up
to the last date of the history (or ``--history-end``) with the first model's data config and manifest
normalisation (``deployment.market_state``). ``--config`` reads the YAML's ``deployment`` section
(``ServingConfig``). The token comes from ``--token-file`` or ``$DRL_SERVER_TOKEN``; without one the
server is read-only (allocations only) and binds only loopback addresses.

Endpoints (W: needs the token, JSON only, no foreign ``Origin``; see ``deployment.security``):

- ``POST /v1/allocate``: ``{"current_weights"?: {ticker: w, ..., "CASH": w}, "request_id"?}`` allocates
  from the market state (the market-only part of the network is computed once per day); or the full
  observation as JSON ``{"observation": [...], "last_returns"?}`` or raw little-endian float32
  (``application/octet-stream``); or ``{"ohlcv": {...}, "as_of"?}``. Answers ``{weights,
  policy_weights, interventions, breaker_tripped, version, format_version, request_id, date?}``.
- W ``POST /v1/bars`` ``{"date", "bars": {ticker: {open, high, low, close, volume}}}``: one new day;
  ``GET /v1/market[?days=K]``: the latest date, tickers, tradable and listed assets (with ``days``: the
  last K accounting rows and the export's env/data settings, what a paper trader needs).
- W ``POST /v1/performance`` ``{"returns": {ticker: one-day simple return}}``.
- ``GET /healthz``, ``GET /metrics`` (prometheus-client), ``GET /v1/registry``; W ``POST
  /v1/registry/versions {"name", "path"}`` (inside ``--models-root``), W ``DELETE
  /v1/registry/versions/{name}``, W ``POST /v1/registry/activate {"version"}``, W ``POST
  /v1/registry/rollback``, W ``POST /v1/registry/ab {"split": {version: weight}}``, W ``DELETE /v1/registry/ab``.

Bad input gets a 4xx JSON ``{"error": sentence}`` (400 malformed, 401 no token, 403 foreign origin or a
path outside the models root, 404 unknown version, 409 conflict, 413 too large, 415 content type, 422
invalid values); the server keeps serving.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the endpoints' string annotations here

from data.config import from_mapping, load_yaml, to_mapping
from data.market import DataError
from deployment import security
from deployment.json_body import BIG_BODY_BYTES, BigBodyParser, BodyError, loads
from deployment.serving_app import HTTPError, ServingApp, ServingConfig, build_state

__all__ = ["HTTPError", "ServingApp", "ServingConfig", "build_state", "main", "make_app"]

def make_app(state: ServingApp, token: str | None = None, host: str = "127.0.0.1", port: int = 8000):
    """The FastAPI application over ``state``; ``token`` guards the state-changing endpoints."""
    from anyio import CapacityLimiter, to_thread
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    from deployment.monitoring import CONTENT_TYPE, exposition, metrics_registry

    app = FastAPI(title="DRL hedge fund allocation service", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = CapacityLimiter(max(1, state.cfg.compute_threads))  # more threads than cores only thrash
    json_limiter = CapacityLimiter(1)  # one state change at a time
    parser = BigBodyParser()  # big bodies are parsed in a worker process: json.loads holds the GIL
    origins = security.allowed_origins(host, port)
    prom = metrics_registry(state)

    async def read_body(request: Request, limit: int) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 15:
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
        raw = await read_body(request, state.cfg.max_json_bytes)
        if not raw.strip():
            if required:
                raise HTTPError(400, "request body is empty; send a JSON object")
            return {}
        if len(raw) < BIG_BODY_BYTES:
            return loads(raw)
        return await parser.parse(raw)  # off the event loop and off this process's GIL

    def guarded(route: str, fn, write: bool = False) -> Any:
        async def endpoint(request: Request):
            t0 = time.perf_counter()
            try:
                if write:
                    has_body = request.headers.get("content-length", "0") != "0" or \
                        "transfer-encoding" in request.headers
                    security.check_write(request.headers, token, origins, has_body)
                result = await fn(request)
                status = 200
                resp = result if not isinstance(result, dict) else JSONResponse(result)
            except (HTTPError, security.SecurityError, BodyError) as err:
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
            raw = await read_body(request, state.cfg.max_body_bytes)
            if len(raw) % 4:
                raise HTTPError(400, "a binary observation must be little-endian float32 (length a multiple of 4)")
            return await to_thread.run_sync(state.allocate, None, np.frombuffer(raw, dtype="<f4"),
                                            limiter=limiter)
        if ctype not in ("application/json", ""):
            raise HTTPError(415, f"content type '{ctype[:60]}' is not supported; use application/json "
                                 "or application/octet-stream")
        body = await parse_json(request, required=False)
        if not body or "observation" not in body and "ohlcv" not in body:
            return state.allocate(body)  # from the market state: microseconds, no thread hop
        # The model runs in a worker thread: ONNX Runtime and torch release the GIL, so two requests
        # can compute on two cores while the event loop keeps reading bodies.
        return await to_thread.run_sync(state.allocate, body, limiter=limiter)

    async def bars(request: Request):
        body = await parse_json(request)
        return await to_thread.run_sync(state.bars, body, limiter=json_limiter)

    async def market(request: Request):
        days = request.query_params.get("days")
        if days is not None and (not days.isdigit() or not 1 <= int(days) <= 10_000):
            raise HTTPError(422, "days must be an integer from 1 to 10000")
        return state.market_info(int(days) if days else None)

    async def performance(request: Request):
        return state.performance(await parse_json(request))

    async def healthz(request: Request):
        return {"status": "ok", "active": state.registry.active, "ab": state.registry.ab,
                "versions": sorted(state.versions),
                "market_date": str(state.market.snapshot.date) if state.market is not None else None}

    async def metrics(request: Request):
        return Response(exposition(prom), media_type=CONTENT_TYPE)

    async def registry(request: Request):
        return state.registry_state()

    def reg(action: str):
        async def run(request: Request):
            name = request.path_params.get("name")
            body = await parse_json(request, required=False)
            return await to_thread.run_sync(state.registry_action, action, body, name, limiter=json_limiter)
        return run

    routes = [
        ("/v1/allocate", allocate, "POST", False), ("/v1/bars", bars, "POST", True),
        ("/v1/market", market, "GET", False), ("/v1/performance", performance, "POST", True),
        ("/healthz", healthz, "GET", False), ("/metrics", metrics, "GET", False),
        ("/v1/registry", registry, "GET", False),
        ("/v1/registry/versions", reg("versions"), "POST", True),
        ("/v1/registry/versions/{name}", reg("delete"), "DELETE", True),
        ("/v1/registry/activate", reg("activate"), "POST", True),
        ("/v1/registry/rollback", reg("rollback"), "POST", True),
        ("/v1/registry/ab", reg("ab"), "POST", True), ("/v1/registry/ab", reg("ab_clear"), "DELETE", True),
    ]
    for path, fn, method, write in routes:  # plain Starlette routes: no per-request dependency solving
        app.add_route(path, guarded(path, fn, write), methods=[method])
    return app


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve allocations from exported policies over HTTP.")
    p.add_argument("--model", action="append", required=True, help="export directory (repeatable)")
    p.add_argument("--name", action="append", help="version name for each --model (default v1, v2, ...)")
    p.add_argument("--history", help="CSV folder (as --source csv) that warms up the market state")
    p.add_argument("--source", choices=("csv", "synthetic"), help="history source (csv with --history)")
    p.add_argument("--history-end", help="warm the market state up to this ISO date (default: the last one)")
    p.add_argument("--token-file", help=f"file holding the bearer token (else ${security.TOKEN_ENV})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("onnx", "torchscript", "pytorch"))
    p.add_argument("--state-dir", help="registry, audit log and retrain requests (default MODEL/serving)")
    p.add_argument("--models-root", help="registry paths must lie inside it (default: the model's parent)")
    p.add_argument("--config", help="YAML with a 'deployment' section (ServingConfig)")
    p.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto",
                   help="uvicorn's HTTP parser (auto: httptools when installed)")
    return p.parse_args(argv)


def load_market_state(model: str, history: str | None, source: str | None, end: str | None):
    """The market state from the first export's data config, manifest and policy window."""
    from deployment.deployed_fund import ServingSpec, read_json_config
    from deployment.market_state import MarketState
    from training.config import load_experiment

    src = source or ("csv" if history else None)
    if src is None:
        if end:
            raise DataError("--history-end needs --history DIR or --source synthetic")
        return None
    if src == "csv" and not history:
        raise DataError("--source csv needs --history DIR")
    export = Path(model)
    config = read_json_config(export / "config.json")
    manifest = read_json_config(export / "manifest.json", "manifest")
    spec = ServingSpec.from_documents(config, manifest)
    experiment = load_experiment(export / "config.json")
    accounting = {"env": to_mapping(experiment.env), "data": to_mapping(experiment.data)}
    tail = max(64, experiment.env.adv_window + 2, experiment.env.prior_rows)  # the rows paper traders and a residual rule read
    return MarketState.from_source(experiment.data, manifest, spec.layout.window, src, history, end, tail, accounting)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        section = load_yaml(args.config).get("deployment", {}) if args.config else {}
        cfg = from_mapping(ServingConfig, section or {}, "deployment")
        if args.backend:
            cfg = dataclasses.replace(cfg, backend=args.backend)
        if not 0 < args.port < 65536:
            raise DataError(f"port must be in 1..65535, got {args.port}")
        token = security.load_token(args.token_file)
        security.check_bind(args.host, token)
        for m in args.model:
            if not (Path(m) / "config.json").is_file():
                raise DataError(f"'{m}' is not an export directory (no config.json); run deployment/model_export.py")
        market = load_market_state(args.model[0], args.history, args.source, args.history_end)
        state = build_state(args.model, args.name, cfg, args.state_dir, market, args.models_root)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    where = f", market state at {state.market.snapshot.date}" if state.market is not None else ""
    print(f"serving {', '.join(state.versions)} (active {state.registry.active}, backend {cfg.backend}{where}) "
          f"on http://{args.host}:{args.port}{'' if token else ' (no token: state changes are disabled)'}",
          flush=True)
    uvicorn.run(make_app(state, token, args.host, args.port), host=args.host, port=args.port,
                log_level="warning", access_log=False, http=args.http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
