"""Benchmark: loopback load test of the inference server, ONNX Runtime backend vs PyTorch backend.

Real data: the 21 yfinance CSVs in ../shared/data/market (``--data-dir``), 82 features per asset, the
default PPO-Transformer (d_model 64, 2 day layers + 1 asset layer) on a 60-day window, so one observation
is 60 x 21 x 82 + 43 = 103,363 float32 (413 KB, sent as ``application/octet-stream``; the same request
as JSON is ~2 MB and costs more to parse than the model costs to run). The policy is untrained (serving
cost does not depend on the weights' values); it is exported to ONNX and TorchScript in-process.

For each backend, in the same run: the real ``deployment/inference_server.py`` is started as a
subprocess on a free 127.0.0.1 port (uvicorn, one process, 1 inference thread), warmed up, then driven by
``--clients`` concurrent keep-alive HTTP/1.1 connections (a minimal asyncio client, so the load
generator stays light) for ``--requests`` batch-1 allocations or ``--seconds``, whichever comes first.
A single-client run gives the unloaded latency. Reported: requests/s, p50/p90/p99 latency (ms, client
side, request sent -> full response read), and the ONNX / PyTorch ratios.

Usage: ``python benchmarks/bench_serving.py [--data-dir DIR] [--clients 32] [--requests 3000]
[--seconds 30]``; prints a table and writes ``benchmarks/results/bench_serving.json``.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import DEFAULT_DATA_DIR, UNIVERSE

from data.config import DataConfig, to_mapping
from data.market import DataError

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 60


def build_export(data_dir: str, out: Path) -> np.ndarray:
    """Run dir + serving export of an untrained default PPO agent; returns 64 real observations."""
    import torch

    from agents.common import ObsLayout
    from agents.io import save_agent
    from agents.ppo_agent import PPOAgent
    from data.feature_engineering import load_feature_store
    from deployment.deployed_fund import ServingSpec, read_json_config
    from deployment.model_export import drift_reference, export_onnx, export_torchscript

    cfg = DataConfig(universe=UNIVERSE, start="2019-01-01", end="2023-12-31", train_end="2022-12-31",
                     source="csv", data_dir=data_dir, risk_free="BIL", min_history_days=120)
    store = load_feature_store(cfg)
    run = out / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"experiment": {"data": to_mapping(cfg)}}))
    (run / "manifest.json").write_text(json.dumps({
        "tickers": list(store.tickers), "categories": list(store.categories),
        "feature_names": list(store.feature_names), "train_end": str(store.train_end),
        "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}))
    lay = ObsLayout(WINDOW, store.n_assets, store.n_features)
    save_agent(PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, window=WINDOW), run)
    spec = ServingSpec.from_documents(read_json_config(run / "config.json"),
                                      read_json_config(run / "manifest.json"))
    from agents.io import load_agent

    module = load_agent(run).policy_module()
    exp = out / "export"
    exp.mkdir()
    example = torch.zeros(2, lay.obs_dim)
    export_onnx(module, example, exp / "policy.onnx", spec.to_metadata())
    export_torchscript(module, example, exp / "policy.ts")
    for name in ("policy.pth", "config.json", "manifest.json"):
        shutil.copyfile(run / name, exp / name)
    (exp / "drift_reference.json").write_text(json.dumps(drift_reference(spec, store).to_dict()))
    rng = np.random.default_rng(0)
    days = rng.integers(WINDOW - 1, store.n_days, size=64)
    feats = store.features[days[:, None] + np.arange(-WINDOW + 1, 1)]
    w = rng.dirichlet(np.ones(lay.action_dim), size=64).astype(np.float32)
    return lay.join_numpy(feats, w, store.tradable[days].astype(np.float32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export: Path, backend: str, state: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deployment" / "inference_server.py"), "--model", str(export),
         "--backend", backend, "--port", str(port), "--state-dir", str(state)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3"))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b"200 OK" in s.recv(4096):
                    return proc, port
        except OSError:
            if proc.poll() is not None:
                raise DataError(f"server exited: {proc.stderr.read()[-500:]}") from None
            time.sleep(0.2)
    proc.kill()
    raise DataError("server did not start within 60 s")


async def _client(port: int, bodies: list[bytes], stop: dict, lat: list[float], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = ("POST /v1/allocate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: {}\r\n\r\n")
    i = offset
    try:
        while not stop["done"]:
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            writer.write(head.format(len(body)).encode() + body)
            await writer.drain()
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            payload = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not header.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server answered {header[:40]!r}: {payload[:200]!r}")
            stop["count"] += 1
            if stop["count"] >= stop["limit"] or time.perf_counter() > stop["deadline"]:
                stop["done"] = True
    finally:
        writer.close()


async def load(port: int, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    lat: list[float] = []
    stop = {"done": False, "count": 0, "limit": requests, "deadline": time.perf_counter() + seconds}
    t0 = time.perf_counter()
    await asyncio.gather(*[_client(port, bodies, stop, lat, k) for k in range(clients)])
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000.0
    return {"clients": clients, "requests": len(ms), "seconds": wall, "rps": len(ms) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def model_only(export: Path, obs: np.ndarray, n: int = 300) -> dict[str, dict[str, float]]:
    """In-process batch-1 latency (ms) of ``predict`` and of ``allocate`` (validation + risk layer)."""
    from deployment.deployed_fund import DeployedCryptoHedgeFund

    out = {}
    for backend in ("onnx", "pytorch"):
        fund = DeployedCryptoHedgeFund.from_export(export, backend)
        for i in range(20):
            fund.predict(obs[i % len(obs)][None])
        times = {"predict": [], "allocate": []}
        for i in range(n):
            o = obs[i % len(obs)]
            t0 = time.perf_counter()
            fund.predict(o[None])
            t1 = time.perf_counter()
            fund.allocate(observation=o)
            times["predict"].append(t1 - t0)
            times["allocate"].append(time.perf_counter() - t1)
        out[backend] = {f"{k}_p50_ms": float(np.median(v) * 1e3) for k, v in times.items()}
        print(f"  in-process {backend:<8} predict p50 {out[backend]['predict_p50_ms']:.2f} ms, "
              f"allocate p50 {out[backend]['allocate_p50_ms']:.2f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    try:
        if not Path(args.data_dir).is_dir():
            raise DataError(f"data directory '{args.data_dir}' does not exist")
        tmp = Path(tempfile.mkdtemp(prefix="bench_serving-"))
        print("building features and exporting the policy ...", flush=True)
        obs = build_export(args.data_dir, tmp)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bodies = [o.astype("<f4").tobytes() for o in obs]
    inproc = model_only(tmp / "export", obs)
    print(f"observation: {obs.shape[1]} float32 = {len(bodies[0]) / 1e3:.0f} KB per request", flush=True)
    rows = []
    try:
        for backend in ("onnx", "pytorch"):
            proc, port = start_server(tmp / "export", backend, tmp / f"state_{backend}")
            try:
                asyncio.run(load(port, bodies, 4, 200, 30))  # warm-up
                for clients, n in ((1, min(500, args.requests)), (4, min(1000, args.requests)),
                                   (args.clients, args.requests)):
                    r = asyncio.run(load(port, bodies, clients, n, args.seconds))
                    r["backend"] = backend
                    rows.append(r)
                    print(f"  {backend:<8} {clients:>3} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                          f"p99 {r['p99_ms']:6.2f} ms", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| backend | clients | requests | req/s | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} |")
    onnx32 = next(r for r in rows if r["backend"] == "onnx" and r["clients"] == args.clients)
    torch32 = next(r for r in rows if r["backend"] == "pytorch" and r["clients"] == args.clients)
    ratios = {"throughput_onnx_over_pytorch": onnx32["rps"] / torch32["rps"],
              "p99_pytorch_over_onnx": torch32["p99_ms"] / onnx32["p99_ms"],
              "goal_p99_under_10ms_onnx": onnx32["p99_ms"] < 10.0}
    print(f"\nONNX Runtime / PyTorch at {args.clients} clients: throughput x{ratios['throughput_onnx_over_pytorch']:.2f}, "
          f"p99 x{ratios['p99_pytorch_over_onnx']:.2f} lower; goal p99 < 10 ms: "
          f"{'met' if ratios['goal_p99_under_10ms_onnx'] else 'NOT met'} ({onnx32['p99_ms']:.2f} ms)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serving.json").write_text(json.dumps({
        "obs_dim": int(obs.shape[1]), "bytes_per_request": len(bodies[0]), "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0], "in_process": inproc, "rows": rows, "ratios": ratios},
        indent=2))
    print(f"(1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
