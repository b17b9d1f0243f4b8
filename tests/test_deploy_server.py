"""The inference server as a real subprocess on a free loopback port, exercised with httpx.

Two serving exports (ONNX + TorchScript + the run's JSON files; no TensorFlow needed to serve) of two
differently seeded tiny PPO-Transformers. Tests run in file order and share the server's state.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from test_deploy_export import DATA, WINDOW, make_run

from agents.common import ObsLayout
from agents.io import load_agent
from data.feature_engineering import load_feature_store
from data.market import DataError
from deployment.model_export import drift_reference, export_onnx, export_torchscript
from deployment.split_export import export_split

ROOT = Path(__file__).resolve().parents[1]
TICKERS = ["BTC-USD", "ETH-USD", "SPY", "BIL"]
TOKEN = "test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def serving_export(run: Path, out: Path) -> None:
    from deployment.deployed_fund import ServingSpec, read_json_config

    spec = ServingSpec.from_documents(read_json_config(run / "config.json"),
                                      read_json_config(run / "manifest.json"))
    module = load_agent(run).policy_module()
    example = torch.zeros(2, spec.layout.obs_dim)
    out.mkdir(parents=True)
    export_onnx(module, example, out / "policy.onnx", spec.to_metadata())
    export_torchscript(module, example, out / "policy.ts")
    lay, rng = spec.layout, np.random.default_rng(0)
    obs = lay.join_numpy(rng.standard_normal((4, lay.window, lay.n_assets, lay.n_features)).astype(np.float32),
                         rng.dirichlet(np.ones(lay.action_dim), 4).astype(np.float32),
                         (rng.random((4, lay.n_assets)) > 0.3).astype(np.float32))
    split = export_split(module, lay, obs, out)  # market part once a day: separate graphs
    assert max(split.values()) < 1e-5, split
    for name in ("policy.pth", "config.json", "manifest.json"):
        shutil.copyfile(run / name, out / name)
    (out / "drift_reference.json").write_text(json.dumps(drift_reference(spec, load_feature_store(DATA)).to_dict()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(args: list[str], port: int, timeout_s: float = 30) -> tuple[subprocess.Popen, httpx.Client]:
    """Start ``deployment/inference_server.py ARGS`` on 127.0.0.1:``port`` and wait for ``/healthz``; returns the
    process and a client that sends the token. Fails the test (and kills the process) if it does not come up."""
    proc = subprocess.Popen([sys.executable, "deployment/inference_server.py", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=AUTH)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read()}")
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not come up in {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("serve")
    for seed, name in ((0, "a"), (1, "b")):
        make_run(base / f"run_{name}", seed=seed)
        serving_export(base / f"run_{name}", base / f"export_{name}")
    state = base / "state"
    (base / "serve.yaml").write_text(json.dumps({"deployment": {
        "max_body_bytes": 500_000, "max_json_bytes": 400_000, "max_stale_days": 4, "ab_seed": 7,
        "risk": {"max_asset_weight": 0.6, "breaker_asset_move": 0.25, "breaker_portfolio_move": 0.1,
                 "breaker_scale": 0.5, "category_caps": {"growth": 0.9, "traditional": 0.9, "stable": 1.0}},
        "drift": {"min_rows": 120, "buffer_rows": 120, "check_every": 1, "min_interval_s": 0.0, "persist_checks": 3,
                  "psi_threshold": 3.0, "ks_threshold": 0.5,
                  "retrain_request_file": str(state / "retrain_request.json")}}}))
    port = free_port()
    (base / "token").write_text(TOKEN + "\n")
    proc, client = launch_server(
        ["--model", str(base / "export_a"), "--port", str(port), "--state-dir", str(state),
         "--config", str(base / "serve.yaml"), "--token-file", str(base / "token")], port, timeout_s=30)
    yield {"client": client, "base": base, "state": state, "port": port}
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def obs_batch():
    store = load_feature_store(DATA)
    lay = ObsLayout(WINDOW, store.n_assets, store.n_features)
    rng = np.random.default_rng(11)
    n_train = int((store.dates <= store.train_end).sum())  # in-distribution traffic: no drift expected
    days = rng.integers(WINDOW - 1, n_train, size=400)
    w = rng.dirichlet(np.ones(lay.action_dim), size=400).astype(np.float32)
    feats = store.features[days[:, None] + np.arange(-WINDOW + 1, 1)]
    return lay.join_numpy(feats, w, store.tradable[days].astype(np.float32))


def binary(client, obs: np.ndarray) -> httpx.Response:
    return client.post("/v1/allocate", content=np.asarray(obs, "<f4").tobytes(),
                       headers={"content-type": "application/octet-stream"})


def metric(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").text
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_allocate_json_and_binary_agree(server, obs_batch):
    c = server["client"]
    a = c.post("/v1/allocate", json={"observation": obs_batch[0].tolist(), "request_id": "r-1"})
    b = binary(c, obs_batch[0])
    assert a.status_code == b.status_code == 200
    ja, jb = a.json(), b.json()
    assert ja["version"] == "v1" and ja["request_id"] == "r-1" and list(ja["weights"]) == [*TICKERS, "CASH"]
    assert ja["weights"] == jb["weights"] and sum(ja["weights"].values()) == pytest.approx(1.0)
    assert max(ja["weights"][t] for t in TICKERS) <= 0.6 + 1e-9
    assert c.get("/healthz").json()["status"] == "ok"


def test_every_bad_input_gets_a_clear_4xx(server, obs_batch):
    c = server["client"]
    good = obs_batch[1]
    nan = good.copy()
    nan[3] = np.nan
    mask_bad = good.copy()
    mask_bad[-1] = 0.5
    cases = [
        (dict(json={"observation": good[:-1].tolist()}), 422, "observation has shape [1648]"),
        (dict(content=json.dumps({"observation": nan.tolist()})), 400, "NaN is not a JSON number"),
        (dict(content=nan.astype("<f4").tobytes(), headers={"content-type": "application/octet-stream"}),
         422, "NaN or infinite"),
        (dict(content=json.dumps({"observation": [1e400] * len(good)})), 400, "Infinity is not a JSON number"),
        (dict(content=b'{"observation": [1e999]}'), 400, "out of range"),
        (dict(json={"observation": mask_bad.tolist()}), 422, "must be 0 or 1"),
        (dict(json={"ohlcv": {"DOGE-USD": {}}}), 422, "unknown ticker 'DOGE-USD'"),
        (dict(json={"ohlcv": {t: {} for t in TICKERS}}), 422, "must be an object with the lists"),
        (dict(json={"observation": good.tolist(), "ohlcv": {}}), 422, "exactly one of"),
        (dict(json={"observation": good.tolist(), "colour": 1}), 422, "unknown field 'colour'"),
        (dict(content=b"{not json"), 400, "not valid JSON"),
        (dict(json=[1, 2]), 400, "must be a JSON object"),
        (dict(content=b"", headers={"content-type": "application/json"}), 409, "no market state"),
        (dict(content=b"abc", headers={"content-type": "text/csv"}), 415, "not supported"),
        (dict(content=b"\0" * 7, headers={"content-type": "application/octet-stream"}), 400, "float32"),
        (dict(content=b"[" + b"0," * 300_000 + b"0]"), 413, "exceeds the limit"),
    ]
    for kwargs, status, fragment in cases:
        r = c.post("/v1/allocate", **kwargs)
        assert r.status_code == status, (fragment, r.text)
        assert fragment in r.json()["error"], r.json()
    assert c.get("/healthz").status_code == 200 and binary(c, good).status_code == 200  # still serving
    assert metric(c, "fund_http_requests_total", '{route="/v1/allocate",status="422"}') >= 7


def test_ohlcv_stale_and_short_history(server):
    from data.synthetic import generate_market

    m = generate_market(DATA.build_universe(), DATA.start, DATA.end, DATA.seed)
    bars = {}
    for i, t in enumerate(m.tickers):
        q = m.tradable[:, i]
        bars[t] = {"date": [str(d) for d in m.dates[q]], **{k: getattr(m, k)[q, i].tolist()
                                                            for k in ("open", "high", "low", "close", "volume")}}
    c = server["client"]
    ok = c.post("/v1/allocate", json={"ohlcv": bars, "as_of": str(m.dates[-1])})
    assert ok.status_code == 200, ok.text
    stale = c.post("/v1/allocate", json={"ohlcv": bars})  # as_of = today, years after the last bar
    assert stale.status_code == 422 and "is stale" in stale.json()["error"]
    short = {t: {k: v[-100:] for k, v in b.items()} for t, b in bars.items()}
    r = c.post("/v1/allocate", json={"ohlcv": short, "as_of": str(m.dates[-1])})
    assert r.status_code == 422 and "too short" in r.json()["error"]


def test_circuit_breaker_and_audit_log(server, obs_batch):
    c = server["client"]
    before = metric(c, "fund_circuit_breaker_trips_total")
    calm = c.post("/v1/allocate", json={"observation": obs_batch[2].tolist(), "last_returns": [0.01, 0.0, 0.0, 0.0]})
    assert calm.json()["breaker_tripped"] is False
    r = c.post("/v1/allocate", json={"observation": obs_batch[2].tolist(), "request_id": "crash",
                                     "last_returns": {"BTC-USD": -0.4}}).json()
    assert r["breaker_tripped"] and r["interventions"][0]["rule"] == "circuit_breaker"
    assert "BTC-USD moved -40.00%" in r["interventions"][0]["reason"]
    risky = sum(r["weights"][t] for t in TICKERS[:3])
    assert risky == pytest.approx(0.5 * sum(calm.json()["weights"][t] for t in TICKERS[:3]), abs=1e-6)
    assert metric(c, "fund_circuit_breaker_trips_total") == before + 1
    lines = [json.loads(x) for x in (server["state"] / "audit.jsonl").read_text().splitlines()]
    assert any(x["request_id"] == "crash" and x["interventions"][0]["rule"] == "circuit_breaker" for x in lines)


def test_performance_against_equal_weight(server, obs_batch):
    c = server["client"]
    w = c.post("/v1/allocate", json={"observation": obs_batch[3].tolist()}).json()["weights"]
    r = {"BTC-USD": 0.05, "ETH-USD": -0.02, "SPY": 0.01, "BIL": 0.0}
    got = c.post("/v1/performance", json={"returns": r}).json()["versions"]["v1"]
    port = sum(w[t] * r[t] for t in TICKERS)
    assert got["days"] == 1 and got["cumulative_return"] == pytest.approx(port, abs=1e-12)
    assert got["equal_weight_cumulative_return"] == pytest.approx(0.01, abs=1e-12)
    assert metric(c, "fund_performance_excess_cumulative_return", '{version="v1"}') == pytest.approx(port - 0.01)
    bad = c.post("/v1/performance", json={"returns": {"BTC-USD": 0.1}})
    assert bad.status_code == 422 and "no return for 'ETH-USD'" in bad.json()["error"]


def test_registry_activate_and_rollback(server, obs_batch):
    c, base = server["client"], server["base"]
    w1 = binary(c, obs_batch[4]).json()
    assert c.post("/v1/registry/versions", json={"name": "v2", "path": str(base / "export_b")}).status_code == 200
    assert c.post("/v1/registry/activate", json={"version": "v2"}).json()["active"] == "v2"
    w2 = binary(c, obs_batch[4]).json()
    assert w2["version"] == "v2" and w2["policy_weights"] != w1["policy_weights"]
    assert c.post("/v1/registry/rollback").json()["active"] == "v1"
    back = binary(c, obs_batch[4]).json()
    assert back["version"] == "v1" and back["weights"] == w1["weights"]
    r = c.post("/v1/registry/rollback")
    assert r.status_code == 409 and "no previous version" in r.json()["error"]
    r = c.post("/v1/registry/activate", json={"version": "v9"})
    assert r.status_code == 404 and "unknown model version 'v9'" in r.json()["error"]
    r = c.post("/v1/registry/versions", json={"name": "v3", "path": str(base / "missing")})
    assert r.status_code == 422 and "does not exist" in r.json()["error"]
    r = c.post("/v1/registry/versions", json={"name": "v3", "path": str(base / "run_a")})  # no policy.onnx
    assert r.status_code == 422 and "cannot be served" in r.json()["error"]
    r = c.post("/v1/registry/versions", json={"name": "v2", "path": str(base / "export_a")})
    assert r.status_code == 409 and "already registered" in r.json()["error"]
    assert set(c.get("/v1/registry").json()["versions"]) == {"v1", "v2"}


def test_ab_split_proportions_and_counters(server, obs_batch):
    c = server["client"]
    assert c.post("/v1/registry/ab", json={"split": {"v1": 7, "v2": 3}}).json()["ab"] == {"v1": 0.7, "v2": 0.3}
    start = {v: metric(c, "fund_variant_requests_total", f'{{version="{v}"}}') for v in ("v1", "v2")}
    seen = [binary(c, o).json()["version"] for o in obs_batch[:300]]
    share = seen.count("v1") / len(seen)
    assert 0.62 < share < 0.78  # 0.7 +- 3.5 binomial standard deviations
    for v in ("v1", "v2"):
        assert metric(c, "fund_variant_requests_total", f'{{version="{v}"}}') - start[v] == seen.count(v)
    assert metric(c, "fund_ab_weight", '{version="v2"}') == pytest.approx(0.3)
    assert c.request("DELETE", "/v1/registry/ab").json()["ab"] is None
    assert {binary(c, o).json()["version"] for o in obs_batch[:20]} == {"v1"}


def test_drift_trigger_writes_retrain_request(server, obs_batch):
    c = server["client"]
    req = server["state"] / "retrain_request.json"
    assert metric(c, "fund_drift_retrain_recommended", '{version="v1"}') == 0.0 and not req.exists()
    lay_fd = WINDOW * 4 * 82
    for o in obs_batch[:40]:
        shifted = o.copy()
        shifted[:lay_fd] = np.where(shifted[:lay_fd] != 0, 8.0, 0.0)  # every listed feature at +8 sd
        assert binary(c, shifted).status_code == 200
        time.sleep(0.03)  # give the background check a chance to run
        if req.exists():
            break
    for _ in range(100):
        if metric(c, "fund_drift_retrain_recommended", '{version="v1"}') == 1.0 and req.exists():
            break
        binary(c, shifted)
        time.sleep(0.05)
    assert metric(c, "fund_drift_retrain_recommended", '{version="v1"}') == 1.0
    assert metric(c, "fund_drift_psi_max", '{version="v1"}') > 3.0
    payload = json.loads(req.read_text())
    assert payload["worst_psi"] > 3.0 and payload["worst_feature"] in json.loads(
        (server["base"] / "export_a" / "manifest.json").read_text())["feature_names"]


def test_server_cli_bad_input(tmp_path, capsys):
    from deployment.inference_server import main

    assert main(["--model", str(tmp_path / "nope")]) == 2
    assert "is not an export directory" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("deployment:\n  risk:\n    breaker_scale: 2.0\n")
    assert main(["--model", str(tmp_path), "--config", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err == "error: risk setting breaker_scale must lie in [0, 1], got 2.0\n"
    (tmp_path / "typo.yaml").write_text("deployment:\n  max_body: 5\n")
    assert main(["--model", str(tmp_path), "--config", str(tmp_path / "typo.yaml")]) == 2
    assert "unknown key 'max_body' in deployment" in capsys.readouterr().err


# -- attacks from the issue: every one a 4xx (or one sentence and exit 2), never a 500 ------------------

def test_state_changes_need_the_token_json_and_same_origin(server):
    c, port = server["client"], server["port"]
    anon = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    writes = [("POST", "/v1/registry/activate", {"version": "v1"}), ("POST", "/v1/registry/rollback", None),
              ("POST", "/v1/registry/versions", {"name": "x", "path": "/tmp"}),
              ("DELETE", "/v1/registry/versions/v2", None), ("POST", "/v1/registry/ab", {"split": {"v1": 1}}),
              ("DELETE", "/v1/registry/ab", None), ("POST", "/v1/performance", {"returns": {}}),
              ("POST", "/v1/bars", {"date": "2024-01-01", "bars": {}})]
    for method, path, body in writes:
        r = anon.request(method, path, json=body)
        assert r.status_code == 401 and "token" in r.json()["error"], (path, r.text)
        wrong = anon.request(method, path, json=body, headers={"authorization": "Bearer " + "x" * len(TOKEN)})
        assert wrong.status_code == 401, path
    assert anon.get("/v1/registry").status_code == 200 and anon.get("/healthz").status_code == 200
    # A web page in the operator's browser: a "simple" text/plain post, or any foreign Origin.
    r = c.post("/v1/registry/activate", content=b'{"version": "v1"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = c.post("/v1/registry/activate", json={"version": "v1"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    ok = c.post("/v1/registry/activate", json={"version": "v1"}, headers={"origin": f"http://127.0.0.1:{port}"})
    assert ok.status_code == 200
    anon.close()


def test_registry_paths_stay_inside_the_models_root(server, tmp_path):
    c, base = server["client"], server["base"]
    outside = tmp_path / "export_copy"
    shutil.copytree(base / "export_b", outside)
    for path in (str(outside), "/etc", str(base / ".." / "..")):
        r = c.post("/v1/registry/versions", json={"name": "evil", "path": path})
        assert r.status_code == 403 and "models root" in r.json()["error"], r.text
    bad = base / "export_bad"
    shutil.copytree(base / "export_b", bad)
    (bad / "policy.onnx").write_bytes(b"not an onnx graph" * 10)
    r = c.post("/v1/registry/versions", json={"name": "bad", "path": str(bad)})
    assert r.status_code == 422 and "not a loadable ONNX model" in r.json()["error"]
    assert "bad" not in c.get("/v1/registry").json()["versions"]


def test_delete_version_and_bounded_history(server):
    c, base = server["client"], server["base"]
    shutil.copytree(base / "export_b", base / "export_c")
    assert c.post("/v1/registry/versions", json={"name": "v3", "path": str(base / "export_c")}).status_code == 200
    active = c.get("/v1/registry").json()["active"]
    r = c.delete(f"/v1/registry/versions/{active}")
    assert r.status_code == 409 and "active" in r.json()["error"]
    assert c.delete("/v1/registry/versions/v3").status_code == 200
    assert "v3" not in c.get("/v1/registry").json()["versions"]
    assert c.delete("/v1/registry/versions/v3").status_code == 404
    from deployment.registry import MAX_HISTORY, ModelRegistry

    reg = ModelRegistry(base / "reg_unit")
    reg.register("a", base / "export_a")
    reg.register("b", base / "export_b")
    for k in range(3 * MAX_HISTORY):
        reg.activate("ab"[k % 2])
    assert len(reg.state["history"]) == MAX_HISTORY
    assert len(json.loads((base / "reg_unit" / "registry.json").read_text())["history"]) == MAX_HISTORY


def test_hostile_values_are_4xx_and_leave_the_server_healthy(server, obs_batch):
    c, state = server["client"], server["state"]
    good = obs_batch[5].tolist()
    audit = state / "audit.jsonl"
    size = audit.stat().st_size if audit.exists() else 0
    cases = [
        ({"observation": good, "request_id": "x" * 129}, "request_id"),
        ({"observation": [True] + good[1:]}, "entry 0 is bool"),
        ({"observation": ["0.5"] + good[1:]}, "entry 0 is str"),
        ({"observation": good, "current_weights": [0.2] * 5}, "part of the observation"),
        ({"observation": good, "last_returns": [True, 0, 0, 0]}, "last_returns"),
    ]
    for body, fragment in cases:
        r = c.post("/v1/allocate", json=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and fragment in r.json()["error"], r.text
    assert (audit.stat().st_size if audit.exists() else 0) == size
    deep = b"[" * 100_000 + b"]" * 100_000
    r = c.post("/v1/allocate", content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413) and "error" in r.json()
    r = c.post("/v1/allocate", content=b"[" * 40 + b"]" * 40, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nests deeper" in r.json()["error"]
    r = c.post("/v1/allocate", content=b'{"observation": [' + b"9" * 400 + b"]}",
               headers={"content-type": "application/json"})
    assert r.status_code == 400 and "digits" in r.json()["error"]
    r = c.post("/v1/allocate", content=b'{"observation": [0.1], "request_id": "' + b"y" * 390_000 + b'"}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422 and "request_id" in r.json()["error"]  # under the JSON cap: parsed off-loop
    big = b"{" + b" " * 450_000 + b"}"
    r = c.post("/v1/allocate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413  # JSON is capped lower (400 kB) than binary bodies (500 kB)
    assert binary(c, np.zeros(450_000 // 4, np.float32)).status_code == 422  # wrong shape, not too large
    assert binary(c, obs_batch[5]).status_code == 200
    r = c.post("/v1/performance", json={"returns": {t: 1e308 for t in TICKERS}})
    assert r.status_code == 422 and "simple one-day returns" in r.json()["error"]
    r = c.post("/v1/performance", json={"returns": {t: 1e308 for t in TICKERS}})
    assert r.status_code == 422
    r = c.post("/v1/performance", json={"returns": {"BTC-USD": True, "ETH-USD": 0, "SPY": 0, "BIL": 0}})
    assert r.status_code == 422
    assert c.get("/metrics").status_code == 200
    assert c.post("/v1/performance", json={"returns": {t: 0.0 for t in TICKERS}}).status_code == 200
    split = c.post("/v1/registry/ab", json={"split": {"v1": 1e308, "v2": 1e308}})
    assert split.status_code == 200 and split.json()["ab"] == {"v1": 0.5, "v2": 0.5}
    r = c.post("/v1/registry/ab", content=b'{"split": {"v1": 1, "v2": NaN}}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert c.delete("/v1/registry/ab").status_code == 200
    text = c.get("/metrics").text
    assert "# TYPE fund_allocate_latency_ms histogram" in text and 'fund_allocate_latency_ms_bucket{le="+Inf"}' in text
    assert metric(c, "fund_http_requests_total", '{route="/v1/allocate",status="500"}') == 0.0
    assert metric(c, "fund_http_requests_total", '{route="/v1/performance",status="500"}') == 0.0


def test_start_up_refusals_are_one_sentence(server, tmp_path, capsys, monkeypatch):
    from deployment.inference_server import main
    from deployment.serving_app import ServingConfig, build_state

    base = server["base"]
    monkeypatch.delenv("DRL_SERVER_TOKEN", raising=False)
    assert main(["--model", str(base / "export_a"), "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err
    (tmp_path / "short").write_text("abc\n")
    assert main(["--model", str(base / "export_a"), "--token-file", str(tmp_path / "short")]) == 2
    assert "at least 16 printable characters" in capsys.readouterr().err
    fake = tmp_path / "export_pickle"
    shutil.copytree(base / "export_a", fake, ignore=shutil.ignore_patterns("serving"))
    (fake / "policy.ts").write_bytes(pickle.dumps({"evil": 1}))
    assert main(["--model", str(fake), "--backend", "torchscript", "--state-dir", str(tmp_path / "s1")]) == 2
    assert "is not a loadable TorchScript file" in capsys.readouterr().err
    # A registered but inactive version whose folder disappeared: a warning, the server still starts.
    gone = tmp_path / "export_gone"
    shutil.copytree(base / "export_b", gone, ignore=shutil.ignore_patterns("serving"))
    from deployment.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "s2")
    reg.register("old", gone)
    reg.register("new", base / "export_a")
    reg.activate("new")
    shutil.rmtree(gone)
    app = build_state([str(base / "export_a")], ["new"], ServingConfig(), str(tmp_path / "s2"))
    assert sorted(app.versions) == ["new"] and "inactive version 'old'" in capsys.readouterr().err
    reg.activate("old")  # the active version's folder is gone: that is fatal, in one sentence
    with pytest.raises(DataError, match="version 'old' is in use but cannot be served"):
        build_state([str(base / "export_b")], ["other"], ServingConfig(), str(tmp_path / "s2"))


def test_big_body_worker_ends_when_its_server_is_killed():
    """A server killed with SIGKILL never shuts its JSON worker pool down; the worker must not outlive it."""
    import signal

    script = ("import sys, time; sys.path.insert(0, '.'); from deployment.json_body import BigBodyParser; "
              "p = BigBodyParser(); p.pool.submit(int).result(); print(*p.pool._processes, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline().split()[0])
        os.kill(worker, 0)  # alive while its server is
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    def running(pid: int) -> bool:  # a zombie (exited, not yet reaped by init) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running(worker):
        time.sleep(0.1)
    if running(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the JSON worker outlived its killed server")
