"""The backtester CLI end to end on a tiny synthetic market: report files, seeds, ONNX, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation import backtester as bt
from evaluation.benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
data:
  universe:
    growth: [BTC-USD, ETH-USD]
    hedge: [UVXY]
    traditional: [SPY]
    stable: [BIL]
  start: "2021-01-01"
  end: "2022-03-31"
  train_end: "2021-12-31"
  source: synthetic
  min_history_days: 30
env:
  window: 5
evaluation:
  lookback: 20
  momentum_days: 10
  n_boot: 200
"""
OTHER_UNIVERSE = CONFIG.replace("growth: [BTC-USD, ETH-USD]", "growth: [BTC-USD, SOL-USD]")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A config, the feature store it gives, and two untrained PPO run directories (seeds 0 and 1).

    Stand-in for ``training/train.py``: the run directory is written the way the contract describes
    (``policy.pth`` + ``config.json`` via ``agents.io.save_agent``, the experiment record, ``manifest.json``).
    """
    import torch

    torch.set_num_threads(1)
    from agents.common import ObsLayout
    from agents.io import save_agent
    from agents.ppo_agent import PPOAgent
    from training.config import to_raw

    root = tmp_path_factory.mktemp("bt")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(CONFIG)
    (root / "other.yaml").write_text(OTHER_UNIVERSE)
    exp = bt.load_config(cfg_path)
    store = bt.build_store(exp.data, None, None, None)
    layout = ObsLayout(exp.env.window, store.n_assets, store.n_features)
    runs = []
    for seed in (0, 1):
        run = root / f"run{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"experiment": to_raw(exp)}))
        agent = PPOAgent(layout.obs_dim, layout.action_dim, layout=layout, window=layout.window, d_model=16,
                         n_heads=2, day_layers=1, asset_layers=1, dim_feedforward=32, seed=seed)
        save_agent(agent, run)
        manifest = {"tickers": list(store.tickers), "feature_names": list(store.feature_names),
                    "train_end": str(store.train_end),
                    "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}
        (run / "manifest.json").write_text(json.dumps(manifest))
        runs.append(run)
    (root / "study.json").write_text(json.dumps({"n_trials": 12}))  # a tuning study next to the runs
    return {"root": root, "cfg": cfg_path, "runs": runs, "store": store, "layout": layout}


def _main(argv, capsys):
    code = bt.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def agent_report(workspace):
    out = workspace["root"] / "report"
    code = bt.main([*sum((["--run", str(r)] for r in workspace["runs"]), []), "--start", "2022-01-01",
                    "--out", str(out)])
    assert code == 0
    return out


def test_agent_report_files_exist_and_parse(agent_report):
    report = json.loads((agent_report / "metrics.json").read_text())
    md = (agent_report / "metrics.md").read_text()
    labels = [row["label"] for row in report["strategies"]]
    kinds = [row["kind"] for row in report["strategies"]]
    assert kinds.count("agent") == 2 and kinds.count("agent_mean") == 1
    assert kinds.count("benchmark") == len(BENCHMARKS)
    for label in labels:
        assert f"| {label} |" in md
    assert "SYNTHETIC" in md and report["synthetic"] is True
    assert report["periods_per_year"] == 365 and "365 periods a year" in md
    assert report["risk_free"] == "BIL daily return"
    # the mean row is the mean of the two runs, with their spread
    a, b, mean = report["strategies"][:3]
    assert mean["metrics"]["sharpe"] == pytest.approx((a["metrics"]["sharpe"] + b["metrics"]["sharpe"]) / 2)
    assert mean["spread"]["sharpe"] == pytest.approx(abs(a["metrics"]["sharpe"] - b["metrics"]["sharpe"]) / np.sqrt(2))
    # significance: one entry per run, a plain verdict, trials from the study next to the runs
    assert len(report["significance"]) == 2
    for entry in report["significance"]:
        assert "with 95% confidence" in entry["sentence"] and entry["sentence"] in md
        assert entry["n_trials"] == 12
        ci = entry["sharpe_ci"]
        assert ci["low"] <= ci["estimate"] <= ci["high"]
        assert 0.0 <= entry["psr"] <= 1.0 and 0.0 <= entry["dsr"] <= 1.0
    best = report["best_benchmark"]
    bench = {r["name"]: r["metrics"]["sharpe"] for r in report["strategies"] if r["kind"] == "benchmark"}
    assert bench[best] == max(bench.values())
    # allocation insights: every strategy, volatile days vs the rest
    ins = report["insights"]
    assert len(ins["rows"]) == 2 + len(BENCHMARKS) and ins["n_volatile"] >= 1
    for row in report["strategies"]:
        if row["kind"] != "agent_mean":
            assert sum(row["avg_weight_by_category"].values()) == pytest.approx(1.0)
    charts = (agent_report / "charts.html").read_text()
    assert "plotly" in charts.lower() and "Equity curves" in charts and "Exposure by category" in charts
    tear = (agent_report / "tearsheet.html").read_text()
    assert "<html" in tear.lower()


def test_agent_weights_respect_masks_and_caps(workspace):
    exp = bt.load_config(workspace["cfg"])
    run = bt.read_run(str(workspace["runs"][0]))
    agents, benches = bt._simulate([run], workspace["store"], exp, bt.load_eval_config(exp.extra),
                                   np.zeros(workspace["store"].n_days), "2022-01-01", "2022-02-15", {}, None,
                                   lambda s: None)
    for res in agents + benches:
        assert res.dates[0] == np.datetime64("2022-01-01")
        np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-9)
        assert (res.weights >= -1e-12).all()
        assert res.returns.shape == (res.weights.shape[0],) == (res.dates.shape[0],)
    assert (agents[0].weights[:, :-1] <= exp.env.max_weight + 1e-9).all()


def _constant_onnx(path: Path, obs_dim: int, n_out: int, bias: np.ndarray) -> None:
    """An ONNX policy ignoring its input: softmax(0 * obs @ W + bias)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((obs_dim, n_out), np.float32), "W")
    b = numpy_helper.from_array(bias.astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["z"]), helper.make_node("Add", ["z", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["weights"], axis=-1)],
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_dim])],
        [helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_onnx_policy_runs_and_wrong_inputs_are_refused(workspace, capsys):
    layout, root = workspace["layout"], workspace["root"]
    bias = np.log(np.array([0.3, 0.2, 0.1, 0.2, 0.1, 0.1]))
    good, bad = root / "good.onnx", root / "bad.onnx"
    _constant_onnx(good, layout.obs_dim, layout.action_dim, bias)
    _constant_onnx(bad, layout.obs_dim - 3, layout.action_dim, bias)
    out = root / "onnx_report"
    code, _, err = _main(["--run", workspace["runs"][0], "--onnx", good, "--start", "2022-03-01",
                          "--no-tearsheet", "--out", out], capsys)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    agent = report["strategies"][0]
    assert agent["kind"] == "agent" and report["onnx"] == str(good) and agent["label"].endswith("[ONNX]")
    assert "Agent policy: **ONNX" in (out / "metrics.md").read_text()
    # weekday assets are closed on weekends, so the weights drift there; on average close to the softmax
    avg = np.array(list(agent["avg_weight"].values()))
    np.testing.assert_allclose(avg, [0.3, 0.2, 0.1, 0.2, 0.1, 0.1], atol=0.02)
    code, _, err = _main(["--run", workspace["runs"][0], "--onnx", bad, "--out", root / "x"], capsys)
    assert code == 2 and err.startswith("error: ") and "inputs" in err and err.count("\n") == 1


def test_bad_input_exits_2_with_one_sentence(workspace, capsys, tmp_path):
    run = workspace["runs"][0]
    cases = [
        (["--run", tmp_path / "missing", "--out", tmp_path / "o"], "does not exist"),
        (["--run", run, "--config", workspace["root"] / "other.yaml", "--out", tmp_path / "o"], "another universe"),
        (["--run", run, "--start", "2030-01-01", "--out", tmp_path / "o"], "pass --end DATE"),
        (["--run", run, "--start", "2022-02-10", "--end", "2022-02-01", "--out", tmp_path / "o"], "no days"),
        (["--run", run, "--start", "01/02/2022", "--out", tmp_path / "o"], "ISO date"),
        (["--onnx", tmp_path / "p.onnx", "--out", tmp_path / "o"], "exactly one --run"),
        (["--run", run, "--onnx", tmp_path / "p.onnx", "--out", tmp_path / "o"], "does not exist"),
        (["--config", tmp_path / "nope.yaml", "--out", tmp_path / "o"], "does not exist"),
    ]
    for argv, needle in cases:
        code, _, err = _main(argv, capsys)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_run_from_another_universe_is_refused(workspace, capsys, tmp_path):
    import shutil

    run = tmp_path / "foreign"
    shutil.copytree(workspace["runs"][0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["tickers"] = ["BTC-USD", "SOL-USD", "UVXY", "SPY", "BIL"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = _main(["--run", run, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "SOL-USD" in err and err.count("\n") == 1
    code, _, err = _main(["--run", workspace["runs"][0], run, "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1


def test_a_folder_of_seed_runs_expands(workspace, tmp_path):
    runs = bt.expand_runs([str(workspace["root"]), str(tmp_path)])
    assert runs == [str(r) for r in workspace["runs"]] + [str(tmp_path)]


def test_a_walk_forward_fold_counts_its_seeds_once_not_its_best_copy(workspace, tmp_path):
    import shutil

    fold = tmp_path / "fold_2023"
    for name in ("seed_0", "seed_1", "best"):
        shutil.copytree(workspace["runs"][0], fold / name)
    assert bt.expand_runs([str(fold)]) == [str(fold / "seed_0"), str(fold / "seed_1")]
    other = tmp_path / "runs"  # no seed_* runs: every run inside, but not a killed write's hidden temp folder
    for name in ("a", ".best.tmp-123-x"):
        shutil.copytree(workspace["runs"][0], other / name)
    assert bt.expand_runs([str(other)]) == [str(other / "a")]


def test_cli_script_runs_from_repo_root_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "evaluation/backtester.py", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: run directory '{tmp_path / 'nope'}' does not exist\n"


def test_benchmarks_only_report(workspace, capsys):
    out = workspace["root"] / "bench_only"
    code, stdout, err = _main(["--config", workspace["cfg"], "--no-tearsheet", "--out", out], capsys)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert report["significance"] == [] and all(r["kind"] == "benchmark" for r in report["strategies"])
    assert report["span"]["start"] == "2022-01-01"  # default: the day after data.train_end
    md = (out / "metrics.md").read_text()
    assert "only benchmarks are reported" in md
    assert not (out / "tearsheet.html").exists() and (out / "charts.html").exists()


def test_validation_json_equals_the_backtesters_agent_metrics(tmp_path):
    """One truth: a tiny trained run's validation.json and the backtester's agent row over the same span
    are the same numbers (same rollout, same risk-free leg, same metrics module)."""
    import torch

    from training import metrics as M
    from training.config import load_experiment
    from training.train import run_training

    torch.set_num_threads(1)
    overrides = {"env.window": 5, "env.episode_length": 60, "agent.ppo.d_model": 16, "agent.ppo.dim_feedforward": 32,
                 "agent.ppo.n_epochs": 1, "training.total_timesteps": 256, "training.checkpoint_every": 0,
                 "training.eval_every": 0, "training.val_end": "2023-06-30"}
    cfg = load_experiment(None, overrides)
    run = tmp_path / "run"
    run_training(cfg, run, progress=False)
    val = json.loads((run / "validation.json").read_text())
    out = tmp_path / "report"
    code = bt.main(["--run", str(run), "--start", val["start"], "--end", val["end"], "--no-tearsheet",
                    "--out", str(out)])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    agent = report["strategies"][0]["metrics"]
    assert report["span"]["start"] == val["start"] and report["span"]["n_days"] == val["n_days"]
    assert report["risk_free"] == val["risk_free"] and report["periods_per_year"] == val["periods_per_year"]
    keys = [k for k, _, _ in M.METRIC_COLUMNS + M.DIAGNOSTIC_COLUMNS]
    for key in keys:
        if val[key] is None or not np.isfinite(val[key]):  # NaN in validation.json, null in metrics.json
            assert agent[key] is None, key
        else:
            assert agent[key] == pytest.approx(val[key], rel=1e-12, abs=1e-15), key
    assert val["max_drawdown"] <= 0 and val["var_95"] <= 0  # the one sign convention: losses are negative
    # the daily series agree too: validation_returns.csv and the report's returns.csv
    ours = np.loadtxt(run / "validation_returns.csv", delimiter=",", skiprows=1, usecols=1)
    theirs = np.loadtxt(out / "returns.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-15)


def _write_csv_folder(folder: Path, tickers_market, end: str) -> None:
    """yfinance-layout CSVs of a simulated market, cut at ``end`` (only the days each asset quoted)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    m = tickers_market
    keep = m.dates <= np.datetime64(end)
    for i, ticker in enumerate(m.tickers):
        rows = m.tradable[:, i] & keep
        pd.DataFrame({
            "Date": pd.DatetimeIndex(m.dates[rows]).strftime("%Y-%m-%d"),
            "Open": m.open[rows, i], "High": m.high[rows, i], "Low": m.low[rows, i],
            "Close": m.close[rows, i], "Volume": m.volume[rows, i],
        }).to_csv(folder / f"{ticker}.csv", index=False)


def test_backtest_on_newer_data_extends_the_load_and_states_both_spans(workspace, capsys, tmp_path):
    """A run trained on CSVs to data.end (2022-03-31) backtested on a newer folder to 2022-06-30."""
    import dataclasses
    import shutil

    from data.synthetic import generate_market
    from training.config import to_raw

    exp = bt.load_config(workspace["cfg"])
    market = generate_market(exp.data.build_universe(), exp.data.start, "2022-07-31", seed=11)
    old, newer = tmp_path / "old", tmp_path / "newer"
    _write_csv_folder(old, market, exp.data.end)
    _write_csv_folder(newer, market, "2022-07-31")
    data_cfg = dataclasses.replace(exp.data, source="csv", data_dir=str(old))
    train_store = bt.build_store(data_cfg, None, None, None)
    run = tmp_path / "csv_run"
    shutil.copytree(workspace["runs"][0], run)
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                 "experiment": to_raw(dataclasses.replace(exp, data=data_cfg))}))
    (run / "manifest.json").write_text(json.dumps({
        "tickers": list(train_store.tickers), "feature_names": list(train_store.feature_names),
        "train_end": str(train_store.train_end), "source": "csv", "synthetic": False,
        "norm": {"mean": train_store.norm_mean.tolist(), "std": train_store.norm_std.tolist()}}))
    out = tmp_path / "newer_report"
    code, stdout, err = _main(["--run", run, "--data-dir", newer, "--start", "2022-04-01", "--end", "2022-06-30",
                               "--no-tearsheet", "--out", out], capsys)
    assert code == 0, err
    assert "WARNING" not in stdout  # trained and evaluated on CSV data
    report = json.loads((out / "metrics.json").read_text())
    assert report["span"]["start"] == "2022-04-01" and report["span"]["end"] == "2022-06-30"
    assert report["span"]["n_days"] == 90
    assert report["training_span"] == {"start": "2021-01-01", "end": "2021-12-31", "source": "csv"}
    md = (out / "metrics.md").read_text()
    assert "Training span: 2021-01-01 .. 2021-12-31" in md and "Evaluation span: 2022-04-01 .. 2022-06-30" in md
    # causal features with the run's normalisation: the extended load repeats the training store's days
    newer_store = bt.build_store(data_cfg, None, str(newer), json.loads((run / "manifest.json").read_text()),
                                 end="2022-06-30")
    n = train_store.n_days
    assert newer_store.dates[n - 1] == train_store.dates[-1] and newer_store.n_days > n
    np.testing.assert_array_equal(newer_store.features[:n], train_store.features)
    # returns.csv and weights.csv: one row per decision day, full precision
    import pandas as pd

    rets = pd.read_csv(out / "returns.csv", index_col="date")
    weights = pd.read_csv(out / "weights.csv", index_col="date")
    assert rets.shape[0] == weights.shape[0] == 90 and rets.index[0] == "2022-04-01"
    assert list(weights.columns) == list(report["tickers"]) + ["CASH"]
    assert list(rets.columns) == [row["name"] for row in report["strategies"]]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    agent = report["strategies"][0]
    np.testing.assert_allclose(weights.mean(axis=0).to_numpy(), list(agent["avg_weight"].values()), rtol=1e-12)
    assert agent["metrics"]["total_return"] == pytest.approx(np.prod(1 + rets["agent_0"].to_numpy()) - 1, rel=1e-12)
    for key in ("active_share", "regime_response", "hedge_response", "turnover", "cost_drag"):
        assert all(np.isfinite(row["metrics"][key]) for row in report["strategies"]), key
    # a synthetic-trained run evaluated on real CSVs is flagged in the output and the report
    syn = tmp_path / "syn_run"
    shutil.copytree(run, syn)
    manifest = json.loads((syn / "manifest.json").read_text())
    (syn / "manifest.json").write_text(json.dumps({**manifest, "source": "synthetic", "synthetic": True}))
    code, stdout, err = _main(["--run", syn, "--data-dir", newer, "--start", "2022-04-01", "--end", "2022-06-30",
                               "--no-tearsheet", "--out", tmp_path / "warn"], capsys)
    assert code == 0, err
    assert "WARNING: the run was trained on synthetic (SYNTHETIC) data but is evaluated on csv (real) data" in stdout
    assert "WARNING: the run was trained on synthetic" in (tmp_path / "warn" / "metrics.md").read_text()
