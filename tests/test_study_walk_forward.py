"""benchmarks/study_walk_forward.py at a tiny size on the synthetic market: one walk-forward per reward, the
best reward chosen by the declared rule, intervals and the deflated Sharpe consistent with the significance
module, the weights figure, the synthetic label, and bad input as one sentence with exit status 2."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--source", "synthetic", "--seeds", "0", "1", "--years", "2022", "2023", "--rewards", "log_return", "dsr",
        "--timesteps", "32", "--workers", "1",
        "--set", "env.window=8", "--set", "env.episode_length=20", "--set", "training.n_envs=2",
        "--set", "agent.ppo.d_model=8", "--set", "agent.ppo.n_heads=2", "--set", "agent.ppo.dim_feedforward=16",
        "--set", "agent.ppo.n_steps=16", "--set", "agent.ppo.batch_size=16", "--set", "agent.ppo.n_epochs=1"]


def _study():
    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their sibling bench_common
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("study_walk_forward", ROOT / "benchmarks" / "study_walk_forward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf_study")
    code = _study().main(TINY + ["--out", str(tmp / "runs"), "--results-dir", str(tmp / "res"),
                                 "--results-name", "wf"])
    assert code == 0
    return tmp


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_study_writes_json_markdown_and_figure_labelled_synthetic(study):
    res = study / "res"
    report = _strict((res / "wf.json").read_text())
    assert report["data"].startswith("SYNTHETIC")
    assert (res / "wf.md").read_text().startswith("# Walk-forward study: SYNTHETIC")
    png = (res / "wf_weights_2022.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(res.glob(".*tmp*")), "no temp files left behind"
    assert [f["year"] for f in report["folds"]] == [2022, 2023]
    for reward in ("log_return", "dsr"):
        assert (study / "runs" / reward / "summary.json").is_file()
        for fold in report["folds"]:
            assert set(fold["ppo"][reward]) == {"0", "1"}
            # the training layer's validation Sharpe is the evaluation layer's
            assert fold["validation_sharpe_gap"][reward] <= 1e-12
        assert report["env"][reward]["reward"] == reward


def test_best_reward_follows_the_declared_rule_and_intervals_match_the_significance_module(study):
    report = _strict((study / "res" / "wf.json").read_text())
    rows, rep = report["folds"], report["report"]
    means = {r: np.mean([m["sharpe"] for f in rows for m in f["ppo"][r].values()]) for r in ("log_return", "dsr")}
    assert report["best_reward"] == max(means, key=means.get)
    assert rep["n_trials"] == 2  # on the synthetic market only this call's rewards: the ledger is the real folds'
    assert _study().PRIOR_TRIALS == 34
    assert _study()._args(["--source", "csv"]).prior_trials == 34 and _study()._args(["--prior-trials", "4"]).prior_trials == 4
    for reward in ("log_return", "dsr"):
        for name in ("equal_weight_bh", "equal_weight", "vol_target"):
            per_fold = [rep["ci"][reward][str(f["year"])][name] for f in rows]
            for iv in per_fold:
                assert iv["low"] <= iv["high"]
            mean = rep["mean_ci"][reward][name]
            assert mean["estimate"] == pytest.approx(np.mean([iv["estimate"] for iv in per_fold]), abs=1e-12)
    for year in ("2022", "2023"):
        d = rep["dsr"][year]
        assert 0.0 <= d["dsr"] <= d["psr"] + 1e-12 <= 1.0 + 1e-12  # deflating never raises the probability
        assert d["sr0_per_day"] > 0.0
    for fold in rows:  # the vol-target rule found at each fund's own risky exposure
        for reward, vm in fold["vol_target_matched"].items():
            assert vm["rule_exposure"] == pytest.approx(vm["fund_exposure"], abs=0.01) or vm["vol_target"] == 4.0
            assert "vol_target_matched" in rep["ci"][reward][str(fold["year"])]
    goals = rep["goals"]
    assert set(goals["active_share_ge_0.20"]) == {"2022", "2023"}
    assert goals["drawdown_2022_vs_ew_bh"]["goal"] == 0.6


def test_every_backtester_benchmark_is_run_and_tabled(study):
    from evaluation.benchmarks import BENCHMARKS

    report = _strict((study / "res" / "wf.json").read_text())
    assert [name for name, _ in _study().BENCHMARKS] == list(BENCHMARKS)  # one registry, every rule
    md = (study / "res" / "wf.md").read_text()
    table = md[md.index("Every benchmark of the backtester"):]
    for fold in report["folds"]:
        for name in BENCHMARKS:
            assert np.isfinite(fold[name]["sharpe"]) and fold[name]["max_drawdown"] <= 0.0
    for label in ("OLMAR", "PAMR", "ONS", "Anticor", "Markowitz mean-variance", "vol-target EW 20%"):
        assert f"| {label} |" in table
    mc = report["report"]["mean_ci"][report["best_reward"]]
    for name in BENCHMARKS:  # an interval for every rule with a non-trivial excess return
        low_vol = any(f[name]["annual_volatility"] < _study().MIN_BOOTSTRAP_VOL for f in report["folds"])
        assert (name in mc) != low_vol
        if name in mc:
            iv = mc[name]
            assert f"{iv['estimate']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]" in table


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys):
    study = _study()
    assert study.main(["--source", "synthetic", "--timesteps", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: training.total_timesteps must be positive")
    assert study.main(["--source", "synthetic", "--set", "nonsense", "--out", str(tmp_path)]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err
    assert study.main(["--source", "synthetic", "--prior-trials", "-1", "--out", str(tmp_path)]) == 2
    assert "--prior-trials must be non-negative" in capsys.readouterr().err
    assert study.main(["--source", "synthetic", "--reuse", "--out", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_matched_vol_target_bisects_to_the_exposure_and_caps_at_the_uncapped_rule():
    from types import SimpleNamespace

    study = _study()
    context = SimpleNamespace(categories=("growth", "stable"))

    def run(target):  # exposure min(1, target / 0.5) * 0.8 in growth, the rest stable
        g = min(1.0, target / 0.5) * 0.8
        return SimpleNamespace(weights=np.tile([g, 1.0 - g, 0.0], (10, 1)), target=target)

    target, res = study.matched_vol_target(0.4, context, run)
    assert target == pytest.approx(0.25, rel=1e-3)
    assert study.risky_exposure(res.weights, context.categories) == pytest.approx(0.4, abs=1e-3)
    target, res = study.matched_vol_target(0.9, context, run)  # above the uncapped rule's 0.8
    assert target == 4.0 and study.risky_exposure(res.weights, context.categories) == pytest.approx(0.8)


def test_a_residual_policy_is_compared_with_its_prior_alone(tmp_path):
    """With env.action_prior the study adds the prior alone (every score 1: the agent's zero-tilt start) as a
    rule and bootstraps the agent against it; a barely trained agent stays close to it."""
    tiny = [a for a in TINY]
    tiny[tiny.index("--seeds") + 1: tiny.index("--years")] = ["0"]
    tiny[tiny.index("--years") + 1: tiny.index("--rewards")] = ["2023"]
    tiny[tiny.index("--rewards") + 1: tiny.index("--timesteps")] = ["dsr"]
    code = _study().main(tiny + ["--set", "env.action_prior=vol_target", "--set", "env.prior_lookback=10",
                                 "--out", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
                                 "--results-name", "wf"])
    assert code == 0
    report = _strict((tmp_path / "res" / "wf.json").read_text())
    fold = report["folds"][0]
    alone = fold["prior_alone"]
    assert 0.0 < alone["active_share"] < 1.0
    agent = fold["ppo"]["dsr"]["0"]
    assert abs(agent["sharpe"] - alone["sharpe"]) < 0.5
    iv = report["report"]["ci"]["dsr"]["2023"]["prior_alone"]
    assert iv["low"] <= iv["estimate"] <= iv["high"]
    assert "its prior alone (zero tilt)" in (tmp_path / "res" / "wf.md").read_text()
    assert report["env"]["dsr"]["action_prior"] == "vol_target"


def test_regime_probe_replays_the_study_agents_to_the_bit(study):
    """probe_synthetic_regime.py --runs steps the study's trained agents through the same fold: the same Sharpe
    per seed as the study's evaluation layer, plus a stress response on the hidden regime within [-1, 1]."""
    spec = importlib.util.spec_from_file_location("probe_synthetic_regime",
                                                  ROOT / "benchmarks" / "probe_synthetic_regime.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    report = _strict((study / "res" / "wf.json").read_text())
    fold = next(f for f in report["folds"] if f["year"] == 2022)
    _, store, stress = probe.fold_market(str(ROOT / "configs" / "paper.yaml"), 2022, seed=0)
    agents = probe.agent_funds(store, stress, study / "runs", 2022)
    assert sorted(agents) == [f"runs/{r} seed {s}" for r in ("dsr", "log_return") for s in (0, 1)]
    for key, m in agents.items():
        reward, seed = key.removeprefix("runs/").split(" seed ")
        assert m["sharpe"] == fold["ppo"][reward][seed]["sharpe"]
        assert -1.0 <= m["stress_response"] <= 1.0


def test_synthetic_study_scores_every_strategy_on_the_hidden_regime(study):
    report = _strict((study / "res" / "wf.json").read_text())
    for fold in report["folds"]:
        metrics = [m for r in fold["ppo"].values() for m in r.values()]
        metrics += [fold[name] for name in ("equal_weight", "equal_weight_bh", "vol_target", "min_variance")]
        assert all(-1.0 <= m["stress_response"] <= 1.0 for m in metrics)
        assert abs(fold["equal_weight"]["stress_response"]) < 0.05  # a constant allocation does not respond
    goals = report["report"]["goals"]["stress_response_synthetic"]
    best = report["best_reward"]
    for fold in report["folds"]:
        assert goals[str(fold["year"])] == pytest.approx(
            np.mean([m["stress_response"] for m in fold["ppo"][best].values()]), abs=1e-12)
    assert "Stress response (SYNTHETIC market only)" in (study / "res" / "wf.md").read_text()
