"""Market state on a real server process: one day of bars per request, allocation from the state, and
paper trading through the server reproducing the backtester's daily agent weights (no train/serve skew).

The market is the 4-asset synthetic one of ``test_deploy_export`` written to CSV folders: the server
warms up from the history up to 2022-04-30 and the paper trader streams May 2022 from the full folder.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from test_deploy_export import DATA, make_run
from test_deploy_server import TOKEN, free_port, launch_server, serving_export

from data.data_loader import _market_to_frames
from data.synthetic import generate_market

ROOT = Path(__file__).resolve().parents[1]
HISTORY_END, START, END = "2022-04-30", "2022-05-01", "2022-05-31"


def write_csvs(folder: Path, end: str | None = None) -> dict[str, pd.DataFrame]:
    frames = _market_to_frames(generate_market(DATA.build_universe(), DATA.start, DATA.end, DATA.seed))
    folder.mkdir(parents=True)
    for t, f in frames.items():
        if end is not None:
            f = f.loc[f.index.to_numpy().astype("datetime64[D]") <= np.datetime64(end)]
        out = f.copy()
        out.index = [str(np.datetime64(d, "D")) for d in out.index]
        out.index.name = "Date"
        out.to_csv(folder / f"{t}.csv", float_format="%.17g")
    return frames


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    served = serve_test_run(tmp_path_factory.mktemp("stream"), "pytorch")
    yield served
    served["client"].close()
    served["proc"].terminate()
    served["proc"].wait(timeout=10)


def serve_test_run(base: Path, backend: str, **env: Any) -> dict[str, Any]:
    """A test run (window 5, ``env`` overrides) with a whole experiment record, as training writes it, on the
    test market, exported and served by ``start_server``: {proc, client, base, port, run, frames}."""
    torch.set_num_threads(1)
    run = base / "run"
    make_run(run, seed=2)
    from training.config import load_experiment, to_raw

    exp = load_experiment()
    exp = dataclasses.replace(exp, data=DATA, env=dataclasses.replace(exp.env, window=5, **env))
    cfg = json.loads((run / "config.json").read_text())
    cfg["experiment"] = to_raw(exp)
    (run / "config.json").write_text(json.dumps(cfg))
    proc, client, port, frames = start_server(run, base, backend)
    return {"proc": proc, "client": client, "base": base, "port": port, "run": run, "frames": frames}


def paper_and_backtest(served: dict[str, Any], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paper-trade May 2022 through ``served``'s server into ``out``; its decisions and the backtester's weights."""
    proc = paper_trade(served["base"], served["port"], out)
    assert proc.returncode == 0, proc.stderr
    paper = pd.read_csv(out / "decisions.csv", index_col=0)
    return paper, backtester_weights(served["run"], served["base"] / "csv_full", START, END)


def start_server(run: Path, base: Path, backend: str) -> tuple:
    """Export ``run`` into ``base``, write the full and the history CSV folders, and start a server on the history
    with a non-binding risk layer (the paper trader then executes exactly the policy, as the backtester does).
    Returns (process, client, port, frames of the full market)."""
    serving_export(run, base / "export")
    frames = write_csvs(base / "csv_full")
    write_csvs(base / "csv_hist", HISTORY_END)
    (base / "token").write_text(TOKEN)
    (base / "serve.yaml").write_text(json.dumps({"deployment": {"risk": {
        "max_asset_weight": 1.0, "breaker_asset_move": 100.0, "breaker_portfolio_move": 100.0,
        "category_caps": {"growth": 1.0, "traditional": 1.0, "stable": 1.0}}}}))
    port = free_port()
    proc, client = launch_server(
        ["--model", str(base / "export"), "--port", str(port), "--backend", backend, "--history",
         str(base / "csv_hist"), "--token-file", str(base / "token"), "--state-dir", str(base / "state"),
         "--config", str(base / "serve.yaml")], port, timeout_s=60)
    return proc, client, port, frames


def paper_trade(base: Path, port: int, out: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``deployment/paper_trade.py`` against the server on ``port`` over May 2022 of ``base``'s full CSVs."""
    return subprocess.run(
        [sys.executable, "deployment/paper_trade.py", "--server", f"http://127.0.0.1:{port}",
         "--token-file", str(base / "token"), "--source", "csv", "--data-dir", str(base / "csv_full"),
         "--start", START, "--end", END, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def day_bars(frames: dict[str, pd.DataFrame], day: str) -> dict[str, dict[str, float]]:
    from deployment.paper_trade import bars_of

    return bars_of(frames, np.datetime64(day, "D"))


def test_bad_bars_are_4xx_and_leave_the_state_unchanged(stream):
    c, frames = stream["client"], stream["frames"]
    m = c.get("/v1/market").json()
    assert m["date"] == HISTORY_END and m["tickers"] == ["BTC-USD", "ETH-USD", "SPY", "BIL"]
    assert set(m["tradable"]) == {"BTC-USD", "ETH-USD"}  # 2022-04-30 is a Saturday
    good = day_bars(frames, START)  # a Sunday: the ETFs are absent, as in the CSVs
    assert set(good) == {"BTC-USD", "ETH-USD"}
    before = c.post("/v1/allocate", json={}).json()
    bad_high = {**good, "BTC-USD": {**good["BTC-USD"], "high": 1.0, "low": 2.0}}
    cases = [
        ({"date": "2022-05-02", "bars": good}, 422, "the day after the latest day"),
        ({"date": HISTORY_END, "bars": good}, 409, "already accepted with different values"),
        ({"date": START, "bars": {**good, "DOGE-USD": good["BTC-USD"]}}, 422, "unknown ticker 'DOGE-USD'"),
        ({"date": START, "bars": {"BTC-USD": good["BTC-USD"]}}, 422, "lack ETH-USD, which trades every day"),
        ({"date": START, "bars": {**good, "ETH-USD": {**good["ETH-USD"], "close": -3.0}}}, 422, "positive"),
        ({"date": START, "bars": {**good, "ETH-USD": {**good["ETH-USD"], "close": "7"}}}, 422, "must be a number"),
        ({"date": START, "bars": {**good, "ETH-USD": {**good["ETH-USD"], "volume": True}}}, 422, "must be a number"),
        ({"date": START, "bars": bad_high}, 422, "is below its low"),
        ({"date": START, "bars": {**good, "ETH-USD": {**good["ETH-USD"], "close": 1e6}}}, 422, "absurd one-day jump"),
        ({"date": "May 1st", "bars": good}, 422, "ISO date"),
        ({"date": START}, 422, "bars must be"),
    ]
    for body, status, fragment in cases:
        r = c.post("/v1/bars", json=body)
        assert r.status_code == status and fragment in r.json()["error"], (fragment, r.text)
    nan = json.dumps({"date": START, "bars": good}).replace(str(good["BTC-USD"]["close"]), "NaN", 1)
    r = c.post("/v1/bars", content=nan.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["error"]
    anon = httpx.post(f"http://127.0.0.1:{stream['port']}/v1/bars", json={"date": START, "bars": good})
    assert anon.status_code == 401
    assert c.get("/v1/market").json()["date"] == HISTORY_END
    assert c.post("/v1/allocate", json={}).json()["weights"] == before["weights"]  # state unchanged
    for q in ("abc", "0", "99999"):
        r = c.get(f"/v1/market?days={q}")
        assert r.status_code == 422 and "days must be" in r.json()["error"]


def test_streaming_allocate_validates_current_weights(stream):
    c = stream["client"]
    ok = c.post("/v1/allocate", json={"current_weights": {"BTC-USD": 0.5, "CASH": 0.5}, "request_id": "s-1"})
    body = ok.json()
    assert ok.status_code == 200 and body["date"] == HISTORY_END and body["request_id"] == "s-1"
    assert sum(body["weights"].values()) == pytest.approx(1.0) and body["weights"]["SPY"] == 0.0  # closed, not held
    cases = [({"current_weights": {"BTC-USD": 0.5}}, "summing to 1"),
             ({"current_weights": {"BTC-USD": True, "CASH": 0.0}}, "entry 0 is bool"),
             ({"current_weights": {"BTC-USD": -0.5, "CASH": 1.5}}, "non-negative"),
             ({"current_weights": {"XRP-USD": 1.0}}, "unknown ticker 'XRP-USD'"),
             ({"current_weights": [1, 0, 0, 0, 0]}, "map tickers"),
             ({"last_returns": [0, 0, 0, 0]}, "not used when allocating from the market state")]
    for payload, fragment in cases:
        r = c.post("/v1/allocate", json=payload)
        assert r.status_code == 422 and fragment in r.json()["error"], (fragment, r.text)


def backtester_weights(run: Path, data_dir: Path, start: str, end: str) -> pd.DataFrame:
    """The backtester's daily agent weights (date x tickers + CASH) through its Python API.

    Switch to ``pd.read_csv(REPORT / "weights.csv", index_col=0)`` once the backtester writes it.
    """
    from agents.io import load_agent
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from evaluation.backtester import build_store, read_run, run_episode, span_bounds, torch_policy

    info = read_run(str(run))
    store = build_store(info.experiment.data, "csv", str(data_dir), info.manifest)
    lo, hi = span_bounds(store, start, end, info.experiment.env.window)
    costs = {k: (float(v[0]), float(v[1])) for k, v in info.experiment.data.costs_bps.items()}
    env = CryptoHedgeFundEnv.from_store(store, info.experiment.env, lo, hi, costs)
    res = run_episode(env, torch_policy(load_agent(run).policy_module()), "agent_0", "agent")
    return pd.DataFrame(res.weights, index=[str(d) for d in res.dates], columns=[*store.tickers, "CASH"])


def test_paper_trading_reproduces_the_backtest(stream, tmp_path):
    base = stream["base"]
    paper, back = paper_and_backtest(stream, tmp_path / "paper")
    assert list(paper.index) == list(back.index) and len(paper) == 30  # decisions May 1 .. May 30
    assert list(paper.columns) == list(back.columns)
    assert np.abs(paper.to_numpy() - back.to_numpy()).max() < 1e-6
    assert paper.to_numpy()[:, :-1].max() > 0.05  # the policy really trades
    c = stream["client"]
    assert c.get("/v1/registry").json()["market_split"] == {"v1": True}  # market part once per day
    assert c.get("/v1/market").json()["date"] == END
    again = c.post("/v1/bars", json={"date": END, "bars": day_bars(stream["frames"], END)})
    assert again.status_code == 200 and again.json()["added"] is False  # the same day again: a no-op
    # The paper trader refuses a span the server has already passed, in one sentence.
    late = subprocess.run(
        [sys.executable, "deployment/paper_trade.py", "--server", f"http://127.0.0.1:{stream['port']}",
         "--token-file", str(base / "token"), "--data-dir", str(base / "csv_full"), "--start", START,
         "--end", END, "--out", str(tmp_path / "late")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert late.returncode == 2 and late.stderr.startswith("error: the server's market state is already at")
    text = c.get("/metrics").text
    assert "fund_market_bars_total 31.0" in text and "fund_market_date_seconds" in text


def test_every_backend_splits_and_agrees_with_the_whole_network(stream):
    """The market part computed once, then ``act`` per portfolio, equals the whole network on the full
    observation, for PyTorch, TorchScript (``policy_split.ts``) and ONNX (``policy_market/act.onnx``)."""
    from deployment.deployed_fund import DeployedCryptoHedgeFund
    from deployment.market_state import MarketState
    from training.config import load_experiment

    export = stream["base"] / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    exp = load_experiment(export / "config.json")
    snap = MarketState.from_source(exp.data, manifest, 5, "csv", str(stream["base"] / "csv_hist")).snapshot
    rng = np.random.default_rng(5)
    for backend in ("pytorch", "torchscript", "onnx"):
        fund = DeployedCryptoHedgeFund.from_export(export, backend)
        assert fund.splitter is not None, backend
        context = fund.market_context(snap.window)
        for w in rng.dirichlet(np.ones(5), size=4):
            mask = snap.tradable.astype(np.float32)
            split = fund.predict_context(context, w, mask)
            lay = fund.spec.layout
            whole = fund.predict(lay.join_numpy(snap.window[None], w[None].astype(np.float32), mask[None]))[0]
            np.testing.assert_allclose(split, whole, atol=1e-5)


def test_market_state_rows_equal_the_feature_store_day_by_day():
    """One feature path: the state's window after each appended day equals the backtester's store rows."""
    from data.feature_engineering import load_feature_store
    from deployment.market_state import MarketState

    store = load_feature_store(DATA)
    manifest = {"tickers": list(store.tickers), "feature_names": list(store.feature_names),
                "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}
    state = MarketState.from_source(DATA, manifest, 5, "synthetic", None, end="2022-06-20")
    frames = _market_to_frames(generate_market(DATA.build_universe(), DATA.start, DATA.end, DATA.seed))
    for day in np.arange(np.datetime64("2022-06-21"), np.datetime64("2022-06-26")):
        assert state.append({"date": str(day), "bars": day_bars(frames, str(day))}) is True
        i = int(np.searchsorted(store.dates, day))
        snap = state.snapshot
        assert snap.date == day and np.array_equal(snap.window, store.features[i - 4:i + 1])
        assert np.array_equal(snap.tradable, store.tradable[i]) and np.array_equal(snap.listed, store.listed[i])
        np.testing.assert_array_equal(snap.tail_dollar_volume[-1], store.volume[i])
