"""Benchmark: the inference server over loopback, streaming allocations vs full observations.

Real data: the 21 yfinance CSVs in ../shared/data/market (``--data-dir``), 82 features per asset, the
default PPO-Transformer (d_model 64, 2 day layers + 1 asset layer) on a 60-day window. The policy is
untrained (serving cost does not depend on the weights' values); it is exported in-process to ONNX,
TorchScript and the split graphs (``policy_market.onnx`` + ``policy_act.onnx``).

One real ``deployment/inference_server.py`` process (``--backend``, default onnx) is started on a free
127.0.0.1 port with ``--history DIR --history-end`` and a token. In the same run, interleaved mode by
mode at each client count (1, 8, 32 closed-loop keep-alive clients, a minimal asyncio HTTP/1.1 client):

- ``stream``: ``POST /v1/allocate {"current_weights": {...}}`` from the market state (~0.6 KB);
- ``binary``: the full observation as float32 (60 x 21 x 82 + 43 values = 413 KB);
- ``json``: the same observation as JSON (~2.2 MB).

Also: ``POST /v1/bars`` latency (one new day: features recomputed over the whole history, the market
part recomputed), /healthz latency while two clients send maximum-size JSON bodies, and the in-process
cost of the market part vs the portfolio part vs the whole network. Reported: req/s, p50/p99 (ms,
client side), the 1-minute load average. Goals (issue 11): stream p99 < 10 ms at 8 clients, >= 1,500
req/s at 32 clients; /healthz p99 < 20 ms under two maximum-size senders.

Usage: ``python benchmarks/bench_serving.py [--data-dir DIR] [--seconds 4] [--backend onnx]``; prints a
table and writes ``benchmarks/results/bench_serving_<http>.json`` (``--http h11`` measures uvicorn's
pure-Python parser for comparison).
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import dataclasses
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
from bench_common import DEFAULT_DATA_DIR, real_data_config

from data.market import DataError

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 60
HISTORY_END = "2023-12-20"
TOKEN = "bench-token-0123456789abcdef"


def build_export(data_dir: str, out: Path) -> tuple[np.ndarray, object]:
    """Run dir + serving export of an untrained default PPO agent; returns 64 real observations, store."""
    import torch

    from agents.common import ObsLayout
    from agents.io import load_agent, save_agent
    from agents.ppo_agent import PPOAgent
    from data.feature_engineering import load_feature_store
    from deployment.deployed_fund import ServingSpec, read_json_config
    from deployment.model_export import drift_reference, export_onnx, export_torchscript
    from deployment.split_export import export_split
    from training.config import load_experiment, to_raw

    cfg = real_data_config("csv", data_dir)
    store = load_feature_store(cfg)
    run = out / "run"
    run.mkdir(parents=True)
    exp = load_experiment()
    exp = dataclasses.replace(exp, data=cfg, env=dataclasses.replace(exp.env, window=WINDOW))
    (run / "config.json").write_text(json.dumps({"experiment": to_raw(exp)}))
    (run / "manifest.json").write_text(json.dumps({
        "tickers": list(store.tickers), "categories": list(store.categories),
        "feature_names": list(store.feature_names), "train_end": str(store.train_end),
        "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}))
    lay = ObsLayout(WINDOW, store.n_assets, store.n_features)
    save_agent(PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, window=WINDOW), run)
    spec = ServingSpec.from_documents(read_json_config(run / "config.json"), read_json_config(run / "manifest.json"))
    module = load_agent(run).policy_module()
    ex = out / "export"
    ex.mkdir()
    rng = np.random.default_rng(0)
    days = rng.integers(WINDOW - 1, store.n_days, size=64)
    feats = store.features[days[:, None] + np.arange(-WINDOW + 1, 1)]
    w = rng.dirichlet(np.ones(lay.action_dim), size=64).astype(np.float32)
    obs = lay.join_numpy(feats, w, store.tradable[days].astype(np.float32))
    example = torch.from_numpy(obs[:2])
    export_onnx(module, example, ex / "policy.onnx", spec.to_metadata())
    export_torchscript(module, example, ex / "policy.ts")
    split = export_split(module, lay, obs[:8], ex)
    print(f"  split parity: {split}", flush=True)
    for name in ("policy.pth", "config.json", "manifest.json"):
        shutil.copyfile(run / name, ex / name)
    (ex / "drift_reference.json").write_text(json.dumps(drift_reference(spec, store).to_dict()))
    return obs, store


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export: Path, backend: str, tmp: Path, data_dir: str, http: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (tmp / "token").write_text(TOKEN)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deployment" / "inference_server.py"), "--model", str(export),
         "--backend", backend, "--port", str(port), "--state-dir", str(tmp / "state"), "--history", data_dir,
         "--history-end", HISTORY_END, "--token-file", str(tmp / "token"), "--http", http],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3"))
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b"200 OK" in s.recv(4096):
                    return proc, port
        except OSError:
            if proc.poll() is not None:
                raise DataError(f"server exited: {proc.stderr.read()[-500:]}") from None
            time.sleep(0.3)
    proc.kill()
    raise DataError("server did not start within 180 s")


def request_bytes(method: str, path: str, ctype: str | None, body: bytes, token: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    if token:
        head += f"Authorization: Bearer {TOKEN}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _roundtrip(reader, writer, req: bytes) -> tuple[bytes, bytes]:
    writer.write(req)
    await writer.drain()
    header = await reader.readuntil(b"\r\n\r\n")
    length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return header, await reader.readexactly(length)


async def _client(port: int, reqs: list[bytes], stop: dict, lat: list[float], offset: int, ok: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while not stop["done"]:
            t0 = time.perf_counter()
            header, payload = await _roundtrip(reader, writer, reqs[i % len(reqs)])
            i += 1
            if stop.get("record", True):
                lat.append(time.perf_counter() - t0)
            if not header.startswith(ok):
                raise RuntimeError(f"server answered {header[:40]!r}: {payload[:200]!r}")
            stop["count"] += 1
            if stop["count"] >= stop["limit"] or time.perf_counter() > stop["deadline"]:
                stop["done"] = True
    finally:
        writer.close()


def summary(lat: list[float], wall: float) -> dict:
    ms = np.array(lat) * 1000.0
    return {"requests": len(ms), "seconds": wall, "rps": len(ms) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


async def load(port: int, reqs: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    lat: list[float] = []
    stop = {"done": False, "count": 0, "limit": requests, "deadline": time.perf_counter() + seconds}
    t0 = time.perf_counter()
    await asyncio.gather(*[_client(port, reqs, stop, lat, k, b"HTTP/1.1 200") for k in range(clients)])
    return {"clients": clients, **summary(lat, time.perf_counter() - t0)}


async def healthz_under_big_bodies(port: int, big: bytes, seconds: float) -> dict:
    """/healthz latency (one client, every 10 ms) while two clients send maximum-size JSON bodies."""
    stop = {"done": False, "count": 0, "limit": 10**9, "deadline": time.perf_counter() + seconds, "record": False}
    lat: list[float] = []

    async def probe() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = request_bytes("GET", "/healthz", None, b"")
        while not stop["done"]:
            t0 = time.perf_counter()
            await _roundtrip(reader, writer, req)
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        writer.close()

    senders = [_client(port, [big], stop, [], k, b"HTTP/1.1 4") for k in range(2)]
    t0 = time.perf_counter()
    await asyncio.gather(probe(), *senders)
    out = summary(lat, time.perf_counter() - t0)
    out["big_bodies_sent"] = stop["count"]
    return out


def in_process(export: Path, obs: np.ndarray, backend: str, n: int = 200) -> dict[str, float]:
    """Batch-1 p50 (ms): the whole network, the market part (once a day), the portfolio part (per request)."""
    from deployment.deployed_fund import DeployedCryptoHedgeFund

    fund = DeployedCryptoHedgeFund.from_export(export, backend)
    lay = fund.spec.layout
    feats, w, mask = lay.split_numpy(obs)
    ctx = fund.market_context(feats[0])
    times: dict[str, list[float]] = {"whole": [], "market": [], "act": []}
    for i in range(n + 10):
        k = i % len(obs)
        t0 = time.perf_counter()
        fund.predict(obs[k][None])
        t1 = time.perf_counter()
        fund.market_context(feats[k])
        t2 = time.perf_counter()
        fund.predict_context(ctx, w[k], mask[k])
        t3 = time.perf_counter()
        if i >= 10:
            times["whole"].append(t1 - t0)
            times["market"].append(t2 - t1)
            times["act"].append(t3 - t2)
    return {f"{k}_p50_ms": float(np.median(v) * 1e3) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--backend", default="onnx", choices=("onnx", "torchscript", "pytorch"))
    p.add_argument("--seconds", type=float, default=4.0, help="per cell (mode x clients)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"), help="uvicorn's HTTP parser")
    p.add_argument("--compare-http", action="store_true",
                   help="only: streaming at 8 clients, an h11 server and an httptools server interleaved 4 times")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        if not Path(args.data_dir).is_dir():
            raise DataError(f"data directory '{args.data_dir}' does not exist")
        tmp = Path(tempfile.mkdtemp(prefix="bench_serving-"))
        print("building features and exporting the policy ...", flush=True)
        obs, store = build_export(args.data_dir, tmp)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.compare_http:
        return compare_http(tmp, args)
    inproc = in_process(tmp / "export", obs, args.backend)
    print(f"  in-process {args.backend}: " + ", ".join(f"{k} {v:.3f}" for k, v in inproc.items()), flush=True)
    tickers = list(store.tickers)
    modes = {
        "binary": [request_bytes("POST", "/v1/allocate", "application/octet-stream", o.astype("<f4").tobytes())
                   for o in obs[:8]],
        "json": [request_bytes("POST", "/v1/allocate", "application/json",
                               json.dumps({"observation": o.tolist()}).encode()) for o in obs[:4]],
    }
    rows, bars, health = [], [], {}
    try:
        proc, port = start_server(tmp / "export", args.backend, tmp, args.data_dir, args.http)
        try:
            market = json.loads(_get(port, "/v1/market"))
            listed = market["listed"]
            rng = np.random.default_rng(1)
            modes["stream"] = []
            for _ in range(8):
                w = rng.dirichlet(np.ones(len(listed) + 1))
                cw = {t: float(x) for t, x in zip([*listed, "CASH"], w)}
                modes["stream"].append(request_bytes("POST", "/v1/allocate", "application/json",
                                                     json.dumps({"current_weights": cw}).encode()))
            bars = post_bars(port, args.data_dir, store, tickers, 5)
            print(f"  POST /v1/bars (one day, 21 assets, full history): p50 {np.median(bars):.0f} ms", flush=True)
            for mode in ("stream", "binary", "json"):  # warm-up
                asyncio.run(load(port, modes[mode], 2, 20, 5))
            for clients in args.clients:
                for mode in ("stream", "binary", "json", "stream"):  # stream twice: before and after the others
                    c0 = cpu_seconds(proc.pid)
                    r = asyncio.run(load(port, modes[mode], clients, 10**9, args.seconds))
                    r.update(mode=mode, load_average_1m=os.getloadavg()[0],
                             server_cpu_ms_per_request=(cpu_seconds(proc.pid) - c0) * 1e3 / max(1, r["requests"]))
                    rows.append(r)
                    print(f"  {mode:<7} {clients:>3} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms  server CPU {r['server_cpu_ms_per_request']:.2f} ms/req  "
                          f"(load {r['load_average_1m']:.1f})", flush=True)
            big_obs = b'{"observation": [' + b"0.5," * (2_999_000 // 4 - 10) + b'0.5]}'
            big = request_bytes("POST", "/v1/allocate", "application/json", big_obs)
            health = asyncio.run(healthz_under_big_bodies(port, big, max(4.0, args.seconds)))
            print(f"  /healthz while 2 clients send {len(big_obs) / 1e6:.1f} MB JSON bodies: p50 {health['p50_ms']:.2f} ms"
                  f"  p99 {health['p99_ms']:.2f} ms ({health['big_bodies_sent']} bodies)", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| mode | clients | req/s | p50 ms | p99 ms | server CPU ms/req | load avg |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['clients']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['server_cpu_ms_per_request']:.2f} | {r['load_average_1m']:.1f} |")

    def best(mode: str, clients: int) -> dict:
        return max((r for r in rows if r["mode"] == mode and r["clients"] == clients), key=lambda r: r["rps"])

    ratios, goals = {}, {}
    for c in args.clients:
        s, b, j = best("stream", c), best("binary", c), best("json", c)
        ratios[f"stream_over_binary_rps_{c}"] = s["rps"] / b["rps"]
        ratios[f"stream_over_json_rps_{c}"] = s["rps"] / j["rps"]
    if 8 in args.clients:
        goals["stream_p99_ms_8_clients_under_10"] = best("stream", 8)["p99_ms"] < 10.0
    if 32 in args.clients:
        goals["stream_rps_32_clients_at_least_1500"] = best("stream", 32)["rps"] >= 1500
    if health:
        goals["healthz_p99_under_20ms_with_big_bodies"] = health["p99_ms"] < 20.0
    print("\nratios: " + ", ".join(f"{k} x{v:.1f}" for k, v in ratios.items()))
    print("goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    print(f"(1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_serving_{args.http}.json").write_text(json.dumps({
        "backend": args.backend, "http": args.http, "obs_dim": int(obs.shape[1]), "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0], "in_process": inproc, "bars_ms": bars, "rows": rows,
        "healthz_under_big_bodies": health, "ratios": ratios, "goals": goals}, indent=2))
    return 0


def compare_http(tmp: Path, args: argparse.Namespace) -> int:
    """Streaming allocations at 8 clients: uvicorn's h11 vs httptools parser, interleaved, same run."""
    servers = {}
    try:
        for http in ("h11", "httptools"):
            (tmp / http).mkdir()
            servers[http] = start_server(tmp / "export", args.backend, tmp / http, args.data_dir, http)
        listed = json.loads(_get(servers["h11"][1], "/v1/market"))["listed"]
        cw = {t: 1.0 / (len(listed) + 1) for t in [*listed, "CASH"]}
        reqs = [request_bytes("POST", "/v1/allocate", "application/json", json.dumps({"current_weights": cw}).encode())]
        rows: dict[str, list[dict]] = {h: [] for h in servers}
        for _, port in servers.values():
            asyncio.run(load(port, reqs, 4, 500, 3))
        for _ in range(4):
            for http, (proc, port) in servers.items():
                c0 = cpu_seconds(proc.pid)
                r = asyncio.run(load(port, reqs, 8, 10**9, args.seconds))
                r.update(server_cpu_ms_per_request=(cpu_seconds(proc.pid) - c0) * 1e3 / r["requests"],
                         load_average_1m=os.getloadavg()[0])
                rows[http].append(r)
                print(f"  {http:<9} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f} ms  "
                      f"server CPU {r['server_cpu_ms_per_request']:.3f} ms/req  (load {r['load_average_1m']:.1f})",
                      flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {h: {k: float(np.median([r[k] for r in rs])) for k in ("rps", "p99_ms", "server_cpu_ms_per_request")}
           for h, rs in rows.items()}
    print("\n| parser | median req/s | median p99 ms | median server CPU ms/req |\n|---|---|---|---|")
    for h, m in med.items():
        print(f"| {h} | {m['rps']:.0f} | {m['p99_ms']:.1f} | {m['server_cpu_ms_per_request']:.3f} |")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serving_http.json").write_text(json.dumps({"rows": rows, "median": med}, indent=2))
    return 0


def _get(port: int, path: str) -> bytes:
    async def go() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        _, body = await _roundtrip(reader, writer, request_bytes("GET", path, None, b""))
        writer.close()
        return body
    return asyncio.run(go())


def post_bars(port: int, data_dir: str, store, tickers: list[str], days: int) -> list[float]:
    """Post the ``days`` days after HISTORY_END from the CSVs; client-side ms per day."""
    from data.data_loader import read_csv_ticker
    from deployment.paper_trade import bars_of

    frames = {t: read_csv_ticker(Path(data_dir) / f"{t}.csv") for t in tickers}
    out = []

    async def go() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for d in np.arange(np.datetime64(HISTORY_END) + 1, np.datetime64(HISTORY_END) + 1 + days):
            body = json.dumps({"date": str(d), "bars": bars_of(frames, d)}).encode()
            t0 = time.perf_counter()
            header, payload = await _roundtrip(
                reader, writer, request_bytes("POST", "/v1/bars", "application/json", body, token=True))
            out.append((time.perf_counter() - t0) * 1e3)
            if not header.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"bars refused: {payload[:300]!r}")
        writer.close()

    asyncio.run(go())
    return out


if __name__ == "__main__":
    sys.exit(main())
