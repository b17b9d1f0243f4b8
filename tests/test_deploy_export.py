"""Export parity across the four formats, a plain onnxruntime session, and DeployedCryptoHedgeFund.

One module-scoped export of a tiny PPO-Transformer (random, non-trivial weights) on a 4-asset synthetic
market: the exporter CLI runs as a real subprocess and its own parity check is asserted.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common import ObsLayout
from agents.io import load_agent, save_agent
from agents.ppo_agent import PPOAgent
from data.config import DataConfig, to_mapping
from data.feature_engineering import build_feature_store, load_feature_store
from data.market import DataError
from data.synthetic import generate_market

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 5
DATA = DataConfig(
    universe={"growth": ["BTC-USD", "ETH-USD"], "traditional": ["SPY"], "stable": ["BIL"]},
    start="2020-01-01", end="2022-06-30", train_end="2021-12-31", risk_free="", risk_free_rate=0.0, seed=3,
)


def make_run(run: Path, seed: int = 0, scale: float = 0.4) -> None:
    """A run directory as training writes it: config.json (experiment + agent), manifest.json, policy.pth.

    Parameters are redrawn N(0, scale^2) so the policy's weights are far from uniform (a fresh PPO
    actor head is nearly flat, which would make parity trivially small).
    """
    store = load_feature_store(DATA)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"experiment": {"data": to_mapping(DATA)}}))
    (run / "manifest.json").write_text(json.dumps({
        "tickers": list(store.tickers), "categories": list(store.categories),
        "feature_names": list(store.feature_names), "train_end": str(store.train_end),
        "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}))
    lay = ObsLayout(WINDOW, store.n_assets, store.n_features)
    agent = PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, window=WINDOW, d_model=16, n_heads=2,
                     day_layers=1, asset_layers=1, dim_feedforward=32, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in agent.net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    save_agent(agent, run)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    make_run(base / "run")
    res = run_cli("deployment/model_export.py", "--run", str(base / "run"), "--out", str(base / "export"))
    assert res.returncode == 0, res.stderr[-3000:]
    return base


@pytest.fixture(scope="module")
def real_obs():
    """64 observations from the run's own features (days with some assets closed included)."""
    torch.set_num_threads(1)
    store = load_feature_store(DATA)
    lay = ObsLayout(WINDOW, store.n_assets, store.n_features)
    rng = np.random.default_rng(5)
    days = rng.integers(WINDOW - 1, store.n_days, size=64)
    feats = store.features[days[:, None] + np.arange(-WINDOW + 1, 1)]
    w = rng.dirichlet(np.ones(lay.action_dim), size=64).astype(np.float32)
    return lay.join_numpy(feats, w, store.tradable[days].astype(np.float32))


def torch_weights(run: Path, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_agent(run).policy_module()(torch.from_numpy(obs)).numpy()


def test_export_parity_report(exported):
    out = exported / "export"
    for name in ("policy.ts", "policy.onnx", "saved_model/saved_model.pb", "policy_tf.onnx", "parity.json",
                 "config.json", "manifest.json", "policy.pth", "drift_reference.json", "policy_market.onnx",
                 "policy_act.onnx", "policy_split.ts"):
        assert (out / name).exists(), name
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["n_observations"] >= 1000
    assert set(report["max_abs_diff"]) == {"torchscript", "onnx", "saved_model", "tf_onnx", "onnx_split",
                                           "torchscript_split"}
    assert max(report["max_abs_diff"].values()) <= 1e-5
    assert "rebuilt from the run's data config" in report["observations"]
    assert not list(exported.glob(".export.tmp-*"))  # the temp folder was renamed away


def test_policy_is_not_trivially_flat(exported, real_obs):
    w = torch_weights(exported / "run", real_obs)
    assert w.max() > 0.5 and np.abs(w.sum(1) - 1).max() < 1e-5
    closed = real_obs[:, -4:] == 0  # masked assets get exactly 0
    assert closed.any() and (w[:, :-1][closed] == 0).all()


def test_onnx_metadata_opset_and_checker(exported):
    import onnx

    model = onnx.load(str(exported / "export" / "policy.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["tickers"]) == ["BTC-USD", "ETH-USD", "SPY", "BIL"]
    assert len(json.loads(meta["feature_names"])) == 82 and meta["window"] == str(WINDOW)
    norm = json.loads(meta["normalisation"])
    assert len(norm["mean"]) == 82 and norm["clip"] == 10.0 and "version" in meta
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # dynamic batch


def test_plain_onnxruntime_without_project_code(exported, real_obs, tmp_path):
    np.save(tmp_path / "obs.npy", real_obs)
    code = textwrap.dedent(f"""
        import sys, numpy as np, onnxruntime as ort
        assert not any(m.split('.')[0] in ('agents', 'deployment', 'data') for m in sys.modules)
        obs = np.load({str(tmp_path / 'obs.npy')!r})
        for name in ('policy.onnx', 'policy_tf.onnx'):
            s = ort.InferenceSession({str(exported / 'export')!r} + '/' + name, providers=['CPUExecutionProvider'])
            np.save({str(tmp_path)!r} + '/' + name + '.npy', s.run(None, {{s.get_inputs()[0].name: obs}})[0])
        assert not any(m.split('.')[0] in ('agents', 'deployment', 'data') for m in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    ref = torch_weights(exported / "run", real_obs)
    for name in ("policy.onnx", "policy_tf.onnx"):
        got = np.load(tmp_path / f"{name}.npy")
        assert np.abs(got - ref).max() < 1e-5, name


def test_deployed_fund_backends_agree(exported, real_obs):
    from deployment.deployed_fund import DeployedCryptoHedgeFund

    out = exported / "export"
    ref = torch_weights(exported / "run", real_obs)
    funds = [DeployedCryptoHedgeFund(out / "policy.pth", out / "config.json"),
             DeployedCryptoHedgeFund(out / "policy.ts", out / "config.json"),
             DeployedCryptoHedgeFund.from_export(out, "onnx")]
    assert [f.backend.name for f in funds] == ["pytorch", "torchscript", "onnx"]
    for f in funds:
        assert np.abs(f.predict(real_obs) - ref).max() < 1e-5
        alloc = f.allocate(observation=real_obs[0])
        assert set(alloc.weights) == {"BTC-USD", "ETH-USD", "SPY", "BIL", "CASH"}
        assert sum(alloc.weights.values()) == pytest.approx(1.0, abs=1e-9)
        assert max(v for k, v in alloc.weights.items() if k != "CASH") <= f.risk.max_asset_weight + 1e-9


def test_pickle_config_is_refused_unopened(exported, tmp_path):
    from deployment.deployed_fund import DeployedCryptoHedgeFund

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "config.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="is a pickle; refusing to load it"):
        DeployedCryptoHedgeFund(exported / "export" / "policy.onnx", tmp_path / "config.pkl")
    assert not marker.exists()


def test_ohlcv_input_reproduces_training_features(exported):
    """Posting the full price history gives exactly the feature store's last window."""
    from deployment.deployed_fund import DeployedCryptoHedgeFund, RequestError

    fund = DeployedCryptoHedgeFund.from_export(exported / "export", "onnx")
    market = generate_market(DATA.build_universe(), DATA.start, DATA.end, DATA.seed)
    store = build_feature_store(market, DATA.train_end, norm_stats=(fund.spec.norm_mean, fund.spec.norm_std))
    bars = {}
    for i, t in enumerate(market.tickers):
        q = market.tradable[:, i] & np.isfinite(market.close[:, i])
        bars[t] = {"date": [str(d) for d in market.dates[q]], "open": market.open[q, i].tolist(),
                   "high": market.high[q, i].tolist(), "low": market.low[q, i].tolist(),
                   "close": market.close[q, i].tolist(), "volume": market.volume[q, i].tolist()}
    as_of = str(market.dates[-1])
    obs, rets = fund.observation_from_ohlcv(bars, as_of=as_of)
    feats, w, mask = fund.spec.layout.split_numpy(obs)
    np.testing.assert_allclose(feats[0], store.features[-WINDOW:], atol=1e-5)
    np.testing.assert_array_equal(mask[0], store.tradable[-1].astype(np.float32))
    np.testing.assert_array_equal(w[0], [0, 0, 0, 0, 1])  # no current weights -> all cash
    np.testing.assert_allclose(rets, market.close[-1] / market.close[-2] - 1)
    alloc = fund.allocate(ohlcv=bars, as_of=as_of)
    assert sum(alloc.weights.values()) == pytest.approx(1.0)
    with pytest.raises(RequestError, match="stale"):
        fund.allocate(ohlcv=bars, as_of="2022-08-01")
    short = {t: {k: v[-120:] for k, v in b.items()} for t, b in bars.items()}
    with pytest.raises(RequestError, match="too short"):
        fund.allocate(ohlcv=short, as_of=as_of)
    with pytest.raises(RequestError, match="unknown ticker 'DOGE-USD'"):
        fund.allocate(ohlcv={**bars, "DOGE-USD": bars["BTC-USD"]}, as_of=as_of)


def test_export_cli_bad_input(tmp_path, capsys):
    from deployment.model_export import main

    assert main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: run directory '{tmp_path / 'nope'}' does not exist\n"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy.pth").write_bytes(b"")
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_lstm_actor_tf_and_onnx_parity(algo, real_obs, tmp_path):
    """SAC/DDPG deterministic actors: the TensorFlow re-implementation, ONNX and TorchScript match PyTorch."""
    import onnxruntime as ort

    from agents.ddpg_agent import DDPGAgent
    from agents.sac_agent import SACAgent
    from deployment import tf_policy
    from deployment.model_export import export_onnx, export_torchscript

    lay = ObsLayout(WINDOW, 4, 82)
    agent = {"sac": SACAgent, "ddpg": DDPGAgent}[algo](lay.obs_dim, lay.action_dim, layout=lay, window=WINDOW,
                                                      hidden=16)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in agent.nets.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    module = agent.policy_module()
    with torch.no_grad():
        ref = module(torch.from_numpy(real_obs)).numpy()
    assert ref.max() > 0.4  # far from uniform (0.2)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    tf_mod = tf_policy.lstm_policy(state, lay, module.cash_reference)
    assert np.abs(tf_mod.allocate(real_obs)["weights"].numpy() - ref).max() < 1e-5
    export_onnx(module, torch.from_numpy(real_obs[:2]), tmp_path / "p.onnx", {"algo": algo})
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"obs": real_obs})[0] - ref).max() < 1e-5
    export_torchscript(module, torch.from_numpy(real_obs[:2]), tmp_path / "p.ts")
    with torch.no_grad():
        ts = torch.jit.load(str(tmp_path / "p.ts"))(torch.from_numpy(real_obs)).numpy()
    assert np.abs(ts - ref).max() < 1e-5


def test_parity_failure_writes_nothing(exported, tmp_path):
    """Above the tolerance the export raises (CLI: exit 1) and leaves no output folder behind."""
    from deployment.model_export import ParityError, export_run

    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_run(str(exported / "run"), str(tmp_path / "out"), n_obs=8, tolerance=1e-12)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
