"""A residual policy (``env.action_prior``) served: paper trading through a real server reproduces the
backtester's daily weights, which the env computes by tilting the vol-target rule; a bare observation is
refused (the rule needs the price history); the ONNX metadata records the rule; OHLCV mode tilts by the same
prior as the env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deploy_stream import END, START, backtester_weights, paper_and_backtest, serve_test_run

ROOT = Path(__file__).resolve().parents[1]
PRIOR = {"action_prior": "vol_target", "prior_lookback": 10, "prior_vol_target": 0.3}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = serve_test_run(tmp_path_factory.mktemp("prior"), "onnx", **PRIOR)
    yield out
    out["client"].close()
    out["proc"].terminate()
    out["proc"].wait(timeout=10)


def test_paper_trading_a_residual_policy_reproduces_the_backtest(served, tmp_path):
    base = served["base"]
    paper, back = paper_and_backtest(served, tmp_path / "paper")
    assert list(paper.index) == list(back.index) and len(paper) == 30
    assert np.abs(paper.to_numpy() - back.to_numpy()).max() < 1e-5  # ONNX float32 against PyTorch
    # the rule is doing something: the same policy without the prior trades elsewhere
    cfg_path = served["run"] / "config.json"
    plain_run = tmp_path / "plain"
    plain_run.mkdir()
    for name in ("policy.pth", "manifest.json"):
        (plain_run / name).write_bytes((served["run"] / name).read_bytes())
    cfg = json.loads(cfg_path.read_text())
    cfg["experiment"]["env"]["action_prior"] = "none"
    (plain_run / "config.json").write_text(json.dumps(cfg))
    plain = backtester_weights(plain_run, base / "csv_full", START, END)
    assert np.abs(plain.to_numpy() - back.to_numpy()).max() > 0.05


def test_a_bare_observation_is_refused_and_ohlcv_mode_uses_the_envs_prior(served):
    c = served["client"]
    meta = c.get("/v1/registry").json()
    assert meta["market_split"] == {"v1": True}
    lay_obs = np.zeros(5 * 4 * 1, np.float32)  # any shape: the rule check comes first
    r = c.post("/v1/allocate", json={"observation": lay_obs.tolist()})
    assert r.status_code == 422 and "needs the price history" in r.json()["error"]

    import onnx

    props = {p.key: p.value for p in onnx.load(str(served["base"] / "export" / "policy.onnx")).metadata_props}
    assert json.loads(props["action_prior"])["prior_lookback"] == 10

    from deployment.deployed_fund import DeployedCryptoHedgeFund
    from environments.action_prior import prior_table
    from evaluation.backtester import build_store, read_run

    fund = DeployedCryptoHedgeFund.from_export(served["base"] / "export", backend="onnx")
    frames = {t: pd.read_csv(served["base"] / "csv_full" / f"{t}.csv", index_col=0) for t in fund.spec.tickers}
    day = "2022-05-10"
    bars = {t: {"date": [d for d in f.index if d <= day], **{k: f.loc[f.index <= day, k.capitalize()].tolist()
                for k in ("open", "high", "low", "close", "volume")}} for t, f in frames.items()}
    _, _, prior = fund._observe_ohlcv(bars, None, day)
    info = read_run(str(served["run"]))
    store = build_store(info.experiment.data, "csv", str(served["base"] / "csv_full"), info.manifest)
    t = int(np.searchsorted(np.asarray(store.dates, "datetime64[D]"), np.datetime64(day)))
    table = prior_table(info.experiment.env, store.returns, store.listed, store.tickers)
    np.testing.assert_allclose(prior, table[t], rtol=1e-12, atol=1e-15)


def test_a_version_whose_rule_reads_more_days_than_the_market_state_keeps_is_refused(served):
    """The server keeps ``max(64, prior_lookback + 1, ...)`` rows for the model it started with; a version
    registered later whose rule needs more is refused at registration (422), not failed on every request."""
    import shutil

    long = served["base"] / "export_long"
    shutil.copytree(served["base"] / "export", long)
    cfg = json.loads((long / "config.json").read_text())
    cfg["experiment"]["env"]["prior_lookback"] = 200
    (long / "config.json").write_text(json.dumps(cfg))
    c = served["client"]
    r = c.post("/v1/registry/versions", json={"name": "v_long", "path": str(long)})
    assert r.status_code == 422, r.text
    assert "reads 201 days of prices, but the market state keeps 64" in r.json()["error"]
    assert "v_long" not in c.get("/v1/registry").json()["versions"]
    cfg["experiment"]["env"]["prior_lookback"] = 20  # within the tail: registered and served
    (long / "config.json").write_text(json.dumps(cfg))
    assert c.post("/v1/registry/versions", json={"name": "v_ok", "path": str(long)}).status_code == 200
    c.delete("/v1/registry/versions/v_ok")
