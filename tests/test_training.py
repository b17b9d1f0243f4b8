"""Training layer: train.py end to end, determinism, --resume, walk-forward leaks, Optuna, Ray, bad configs.

Everything runs on the synthetic quickstart market with tiny overrides (window 5, d_model 16, a few
hundred env steps) so the file stays within its CI budget on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data.market import DataError
from training.config import apply_overrides, from_raw, load_experiment, parse_set_option, to_raw

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "env.window": 5,
    "env.episode_length": 60,
    "agent.ppo.d_model": 16,
    "agent.ppo.dim_feedforward": 32,
    "agent.ppo.n_epochs": 2,
    "training.total_timesteps": 256,
    "training.checkpoint_every": 256,
}
TINY_ARGS = [arg for k, v in TINY.items() if k != "training.total_timesteps" for arg in ("--set", f"{k}={v}")]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _compounded(returns_csv: Path) -> float:
    """Total return compounded by hand from ``validation_returns.csv``'s daily net returns."""
    rows = returns_csv.read_text().splitlines()[1:]
    return float(np.prod([1.0 + float(line.split(",")[1]) for line in rows]) - 1.0)


def tiny_cfg(**extra):
    return load_experiment(None, {**TINY, **extra})


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# -- configuration ---------------------------------------------------------------------------------------
def test_overrides_are_applied_before_the_frozen_config_is_built():
    raw = {"training": {"seed": 1}, "env": {}}
    out = apply_overrides(raw, {"training.seed": 5, "env.window": 7, "agent.ppo.clip_range": 0.1, "x.y": None})
    assert raw == {"training": {"seed": 1}, "env": {}}  # the input mapping is not mutated
    assert out["training"]["seed"] == 5 and out["env"]["window"] == 7 and out["agent"]["ppo"]["clip_range"] == 0.1
    assert parse_set_option("env.window=20") == ("env.window", 20)
    assert parse_set_option("training.val_years=[2021, 2022]") == ("training.val_years", [2021, 2022])
    cfg = tiny_cfg()
    assert cfg.env.window == 5 and cfg.agent["ppo"].d_model == 16
    # The agent section is kept as the registry's typed config, with the derived fields filled in late.
    from agents.ppo_agent import PPOConfig

    assert cfg.agent_config == PPOConfig(learning_rate=0.0003, n_steps=64, batch_size=64, n_epochs=2, ent_coef=0.001,
                                         clip_range=0.2, d_model=16, n_heads=2, day_layers=1, asset_layers=1,
                                         dim_feedforward=32)
    assert cfg.agent_config_for(n_features=9) == dataclasses.replace(cfg.agent_config, window=5, n_features=9, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.seed = 3  # type: ignore[misc]
    assert from_raw(to_raw(cfg)) == cfg  # the written mapping rebuilds the same config


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"training.algo": "a2c"}, "unknown algorithm 'a2c'"),
        ({"training.total_timesteps": "many"}, "must be an integer"),
        ({"env.windw": 3}, "unknown key 'windw'"),
        ({"agent.ppo.clip": 0.1}, "unknown key 'clip'"),
        ({"agent.ppo.window": 4}, "set from the env/training sections"),  # window comes from env.window
        ({"agent.sac.seed": 4}, "set from the env/training sections"),
        ({"data.train_end": "2024-06-01"}, "data.start < data.train_end <= data.end"),
        ({"data.train_end": "2023-12-31", "training.eval_every": 64}, "eval_every needs a validation span"),
        ({"data.train_end": "2023-12-31", "training.algo": "forecaster"}, "forecaster is scored on the validation"),
    ],
)
def test_bad_values_raise_one_sentence(overrides, fragment):
    with pytest.raises(DataError, match=fragment):
        tiny_cfg(**overrides)


def test_old_reward_coefficient_names_still_load_with_one_warning_each():
    with pytest.warns(FutureWarning) as record:
        cfg = tiny_cfg(**{"env.reward": "risk_adjusted", "env.alpha": 2.0, "env.gamma": 0.3})
    assert [str(w.message) for w in record] == [
        "env.alpha is deprecated: it is now env.return_weight; rename it in the config",
        "env.gamma is deprecated: it is now env.drawdown_penalty; rename it in the config",
    ]
    assert (cfg.env.return_weight, cfg.env.vol_penalty, cfg.env.drawdown_penalty, cfg.env.cost_penalty) == (
        2.0, 0.1, 0.3, 1.0)
    assert "alpha" not in to_raw(cfg)["env"] and to_raw(cfg)["env"]["return_weight"] == 2.0
    with pytest.raises(DataError, match="env.alpha is the old name of env.return_weight; set only env.return_weight"):
        tiny_cfg(**{"env.alpha": 2.0, "env.return_weight": 1.0})


def test_bad_command_lines_exit_2_with_one_sentence(tmp_path):
    no_training = tmp_path / "no_training.yaml"
    no_training.write_text((ROOT / "configs" / "quickstart.yaml").read_text().split("\ntraining:")[0])
    cases = [
        (["--algo", "a2c"], "unknown algorithm"),
        (["--set", "env.window=5000"], "window"),
        (["--config", str(no_training)], "no 'training' section"),
        (["--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--set", "data.universe.growth=[NOPE-USD]", "--set", "data.universe.stable=[]", "--set",
          "data.universe.hedge=[]", "--set", "data.universe.traditional=[]"], "NOPE-USD"),
    ]
    for args, fragment in cases:
        res = run_cli(*args, "--out", str(tmp_path / "run"), "--quiet", timeout=60)
        err_lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, res.stderr
        assert len(err_lines) == 1 and err_lines[0].startswith("error: "), res.stderr
        assert fragment in err_lines[0], err_lines[0]


# -- train.py ---------------------------------------------------------------------------------------------
def test_train_cli_end_to_end_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    res = run_cli(*TINY_ARGS, "--total-timesteps", "512", "--seed", "3", "--out", str(out))
    elapsed = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    assert elapsed < 120
    assert "net Sharpe over T-bill" in res.stdout and "SYNTHETIC" in res.stdout
    for name in ("policy.pth", "config.json", "manifest.json", "curves.csv", "curves.png", "validation.json",
                 "validation_returns.csv", "checkpoints/latest.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars"
    record = json.loads((out / "config.json").read_text())
    assert record["algo"] == "ppo" and record["version"] >= 1
    assert record["obs_layout"] == {"window": 5, "n_assets": 7, "n_features": len(record["feature_names"])}
    assert record["experiment"]["training"]["seed"] == 3
    assert load_experiment(out / "config.json") == load_experiment(None, {**TINY, "training.seed": 3,
                                                                           "training.total_timesteps": 512})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train_end"] == "2022-12-31" and manifest["synthetic"] is True
    assert len(manifest["norm"]["mean"]) == len(manifest["feature_names"])
    val = json.loads((out / "validation.json").read_text())
    assert val["start"] == "2023-01-01" and val["end"] == "2023-12-31" and val["risk_free"] == "BIL daily return"
    assert np.isfinite(val["sharpe"]) and -1 < val["max_drawdown"] <= 0 and val["global_step"] == 512
    assert val["total_return"] == pytest.approx(_compounded(out / "validation_returns.csv"), rel=1e-12, abs=1e-15)
    curves = (out / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("timestep,episode,length,reward,nav,sharpe,sortino,max_drawdown,var_95,cvar_95,turnover,cost_drag,"
                             "active_share,regime_response,hedge_response")
    assert len(curves) > 1
    # The run directory rebuilds the policy without pickle; it maps observations onto the simplex.
    from agents.io import load_agent

    agent = load_agent(out)
    obs = torch.zeros(3, agent.layout.obs_dim)
    obs[:, -agent.layout.n_assets:] = 1.0
    w = agent.policy_module()(obs)
    assert torch.allclose(w.sum(-1), torch.ones(3)) and (w >= 0).all()


def test_a_final_fit_trains_on_every_day_and_leaves_no_validation_files(tmp_path):
    """data.train_end = data.end: no validation span, stale validation files removed, the backtester judges the
    run only on a span it is given (one sentence and exit 2 without one)."""
    out = tmp_path / "final"
    out.mkdir()
    (out / "validation.json").write_text("{}")  # left by an earlier run in the same folder
    assert not tiny_cfg(**{"data.train_end": "2023-12-31"}).validates and tiny_cfg().validates
    res = run_cli(*TINY_ARGS, "--set", "data.train_end=2023-12-31", "--set", "training.checkpoint_every=0",
                  "--total-timesteps", "128", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "final fit: trained on every day to 2023-12-31, no validation span" in res.stdout
    assert not (out / "validation.json").exists() and not (out / "validation_returns.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["train_end"] == "2023-12-31"
    assert (out / "policy.pth").is_file() and (out / "curves.csv").is_file()
    backtest = [sys.executable, str(ROOT / "evaluation" / "backtester.py"), "--run", str(out),
                "--out", str(tmp_path / "bt")]
    res = subprocess.run(backtest, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr[-2000:]
    res = subprocess.run(backtest + ["--start", "2023-10-01"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_same_seed_gives_bit_identical_policy_and_another_seed_does_not(tmp_path):
    from training.train import build_store, run_training

    cfg = tiny_cfg()
    store = build_store(cfg)
    m1 = run_training(cfg, tmp_path / "a", store=store, progress=False)
    m2 = run_training(cfg, tmp_path / "b", store=store, progress=False)
    assert (tmp_path / "a" / "policy.pth").read_bytes() == (tmp_path / "b" / "policy.pth").read_bytes()
    assert m1["sharpe"] == m2["sharpe"]
    other = tiny_cfg(**{"training.seed": 1})
    run_training(other, tmp_path / "c", store=store, progress=False)
    assert (tmp_path / "a" / "policy.pth").read_bytes() != (tmp_path / "c" / "policy.pth").read_bytes()


def test_warm_start_trains_the_actor_before_ppo_deterministically(tmp_path):
    from agents.io import load_agent
    from training.train import build_store, run_training

    warm = {"training.warm_start.steps": 15, "training.warm_start.batch_days": 8, "training.warm_start.rollout": 2}
    cfg = tiny_cfg(**warm)
    assert cfg.training.warm_start.steps == 15 and cfg.training.warm_start.rollout == 2
    store = build_store(cfg)
    run_training(cfg, tmp_path / "a", store=store, progress=False)
    run_training(cfg, tmp_path / "b", store=store, progress=False)
    run_training(tiny_cfg(), tmp_path / "plain", store=store, progress=False)
    history = json.loads((tmp_path / "a" / "checkpoints" / "warm_start.json").read_text())
    assert len(history["objective"]) == 15 and all(np.isfinite(history["objective"]))
    assert (tmp_path / "a" / "policy.pth").read_bytes() == (tmp_path / "b" / "policy.pth").read_bytes()
    assert (tmp_path / "a" / "policy.pth").read_bytes() != (tmp_path / "plain" / "policy.pth").read_bytes()
    assert not (tmp_path / "plain" / "checkpoints" / "warm_start.json").exists()
    # The warm-started actor differs from the plain run's; the critic starts from the same initialisation.
    a, plain = load_agent(tmp_path / "a").model_state(), load_agent(tmp_path / "plain").model_state()
    assert any(not torch.equal(a[k], plain[k]) for k in a if k.startswith("actor_head"))
    with pytest.raises(DataError, match="warm_start pre-trains PPO"):
        tiny_cfg(**warm, **{"training.algo": "sac"})
    with pytest.raises(DataError, match="steps"):
        tiny_cfg(**{"training.warm_start.steps": 0})


def test_resume_continues_from_the_checkpoint(tmp_path, capsys):
    from agents.checkpoint import safe_torch_load
    from training.train import build_store, run_training

    cfg = tiny_cfg()
    store = build_store(cfg)
    out = tmp_path / "run"
    run_training(cfg, out, store=store, progress=False)
    first = (out / "curves.csv").read_text().splitlines()
    ckpt = safe_torch_load(out / "checkpoints" / "latest.pt")
    assert ckpt["global_step"] == 256
    longer = tiny_cfg(**{"training.total_timesteps": 512})
    metrics = run_training(longer, out, store=store, progress=False, resume=True)
    assert "resuming from step 256" in capsys.readouterr().out
    assert metrics["global_step"] == 512
    assert json.loads((out / "checkpoints" / "progress.json").read_text())["global_step"] == 512
    after = (out / "curves.csv").read_text().splitlines()
    assert after[: len(first)] == first and len(after) > len(first)  # the curve continues, not restarts
    # The resumed optimisation started from the checkpoint's weights, not from a fresh initialisation.
    fresh = run_training(longer, tmp_path / "fresh", store=store, progress=False)
    assert (out / "policy.pth").read_bytes() != (tmp_path / "fresh" / "policy.pth").read_bytes()
    assert fresh["global_step"] == 512
    with pytest.raises(DataError, match="config differs"):
        run_training(tiny_cfg(**{"env.max_weight": 0.3}), out, store=store, progress=False, resume=True)
    with pytest.raises(DataError, match="no checkpoint"):
        run_training(cfg, tmp_path / "empty", store=store, progress=False, resume=True)


# -- walk-forward -----------------------------------------------------------------------------------------
def test_walk_forward_folds_do_not_leak_and_refit_normalisation_on_the_train_span(tmp_path, capsys):
    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store
    from training.walk_forward import expanding_folds, walk_forward

    cfg = tiny_cfg(**{"training.total_timesteps": 128})
    summary = walk_forward(cfg, tmp_path, years=[2022, 2023], seeds=[0])
    out = capsys.readouterr().out
    assert "walk-forward: 2 folds x 1 seeds = 2 runs of ppo (128 steps each)" in out
    progress = [ln for ln in out.splitlines() if ln.startswith("[walk-forward runs]")]
    assert [ln.split(",")[0] for ln in progress] == ["[walk-forward runs] 1/2 done", "[walk-forward runs] 2/2 done"]
    assert "ETA" in progress[0] and progress[-1].endswith("done")
    assert [r["year"] for r in summary["folds"]] == [2022, 2023]
    market = load_market(cfg.data, verbose=False)
    manifests = {}
    for fold in expanding_folds(cfg.data.start, cfg.data.end, [2022, 2023]):
        run = tmp_path / f"fold_{fold.year}" / "seed_0"
        manifest = json.loads((run / "manifest.json").read_text())
        val = json.loads((run / "validation.json").read_text())
        assert manifest["train_end"] == fold.train_end
        assert val["start"] == fold.val_start and val["end"] <= fold.val_end
        assert (tmp_path / f"fold_{fold.year}" / "best" / "policy.pth").is_file()
        # Statistics refit on a market cut at the fold's train_end (no future data at all) must match.
        keep = market.dates <= np.datetime64(fold.train_end)
        cut = dataclasses.replace(market, **{k: getattr(market, k)[keep] for k in
                                             ("dates", "open", "high", "low", "close", "volume", "listed", "tradable")})
        ref = build_feature_store(cut, fold.train_end, clip=cfg.data.clip)
        np.testing.assert_allclose(manifest["norm"]["mean"], ref.norm_mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(manifest["norm"]["std"], ref.norm_std, rtol=1e-9, atol=1e-12)
        manifests[fold.year] = manifest
    assert manifests[2022]["norm"]["mean"] != manifests[2023]["norm"]["mean"]  # refit per fold
    assert json.loads((tmp_path / "summary.json").read_text())["overall"]["n_runs"] == 2


# -- Optuna and Ray ----------------------------------------------------------------------------------------
def test_two_trial_optuna_study_on_sqlite_writes_a_config_train_py_accepts(tmp_path, capsys):
    import optuna

    from training import train
    from training.hyperparameter_tuning import run_study

    cfg = tiny_cfg(**{"training.total_timesteps": 128})
    summary = run_study(cfg, tmp_path, n_trials=2, seed=0)
    assert summary["n_complete"] == 2 and summary["backend"] == "optuna"
    progress = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[tuning trials]")]
    assert [ln.split(",")[0] for ln in progress] == ["[tuning trials] 1/2 done", "[tuning trials] 2/2 done"]
    assert (tmp_path / "study.db").is_file()
    study = optuna.load_study(study_name="tune-ppo", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 2
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert trials["n_trials"] == 2 and trials["best_value"] == pytest.approx(study.best_value)
    best = load_experiment(tmp_path / "best_config.yaml")
    assert best.env.reward == "risk_adjusted" and best.env.window in (2, 5, 10)
    assert best.agent["ppo"].learning_rate == pytest.approx(study.best_params["agent.ppo.learning_rate"])
    rc = train.main(["--config", str(tmp_path / "best_config.yaml"), "--total-timesteps", "64", "--quiet",
                     "--out", str(tmp_path / "best_run")])
    assert rc == 0 and (tmp_path / "best_run" / "policy.pth").is_file()


def test_two_seeds_as_ray_tasks_equal_the_local_process_pool(tmp_path, capsys):
    import ray

    from training.parallel import run_jobs
    from training.train import train_seed_job

    # One PPO rollout: n_steps 64 x 2 portfolios = 128 env steps.
    overrides = {**TINY, "training.total_timesteps": 128, "training.n_envs": 2, "training.checkpoint_every": 0}
    jobs = lambda root: [{"config_path": None, "overrides": {**overrides, "training.seed": s},  # noqa: E731
                          "out": str(root / f"seed_{s}"), "source": None, "data_dir": None} for s in (0, 1)]
    pooled = run_jobs(train_seed_job, jobs(tmp_path / "pool"), workers=2, label="seed runs")
    try:
        remote = run_jobs(train_seed_job, jobs(tmp_path / "ray"), workers=2, ray_address="local", label="seed runs")
        assert ray.is_initialized()  # the test started its own local cluster
    finally:
        ray.shutdown()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[seed runs]")]
    assert [ln.split(",")[0] for ln in lines] == ["[seed runs] 1/2 done", "[seed runs] 2/2 done"] * 2
    for s, a, b in zip((0, 1), pooled, remote):
        timing = ("train_seconds",)
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
        assert a["seed"] == s and a["global_step"] == 128
        assert (tmp_path / "pool" / f"seed_{s}" / "policy.pth").read_bytes() == \
            (tmp_path / "ray" / f"seed_{s}" / "policy.pth").read_bytes()
    assert pooled[0]["sharpe"] != pooled[1]["sharpe"]  # two seeds, two different runs


def test_ray_local_cluster_runs_two_trials_in_parallel(tmp_path):
    import ray

    from training.hyperparameter_tuning import run_study

    cfg = tiny_cfg(**{"training.total_timesteps": 128, "training.n_envs": 2})
    try:
        summary = run_study(cfg, tmp_path, n_trials=2, n_jobs=2, seed=0, ray_address="local")
    finally:
        ray.shutdown()
    rows = summary["trials"]
    assert summary["backend"] == "ray-tune" and summary["n_complete"] == 2
    a, b = sorted(rows, key=lambda r: r["started"])
    assert a["pid"] != b["pid"]
    assert b["started"] < a["finished"], "the two trials did not overlap in time"
    assert load_experiment(tmp_path / "best_config.yaml").env.reward == "risk_adjusted"


@pytest.mark.parametrize(
    "algo, extra",
    [
        ("sac", {"agent.sac.learning_starts": 64, "agent.sac.log_interval": 64, "agent.sac.lstm_layers": 1,
                 "agent.sac.hidden": 16}),
        ("ddpg", {"agent.ddpg.learning_starts": 64, "agent.ddpg.log_interval": 64, "agent.ddpg.lstm_layers": 1,
                  "agent.ddpg.hidden": 16}),
        ("forecaster", {"agent.forecaster.epochs": 1, "agent.forecaster.lstm_layers": 1,
                        "agent.forecaster.hidden": 16}),
    ],
)
def test_other_algorithms_write_a_loadable_run(tmp_path, capsys, algo, extra):
    from agents.io import load_agent
    from training.train import build_store, run_training

    cfg = tiny_cfg(**{"training.algo": algo, "training.total_timesteps": 128, **extra})
    metrics = run_training(cfg, tmp_path, store=build_store(cfg), progress=False)
    agent = load_agent(tmp_path)
    assert agent.algo == algo and agent.layout.window == 5
    if algo == "forecaster":
        assert metrics["rmse"] > 0 and metrics["rmse_zero"] > 0 and 0 <= metrics["directional_accuracy"] <= 1
        with pytest.raises(DataError, match="use --algo ppo, sac or ddpg"):
            from training.walk_forward import walk_forward

            walk_forward(cfg, tmp_path / "wf", years=[2023], seeds=[0])
        # the backtester refuses it with one sentence (the registry says it is not an allocation policy)
        from evaluation import backtester as bt

        assert bt.main(["--run", str(tmp_path), "--source", "synthetic", "--no-tearsheet",
                        "--out", str(tmp_path / "bt")]) == 2
        assert "holds a forecaster model, not an allocation policy" in capsys.readouterr().err
    else:
        assert metrics["global_step"] == 128  # 32 decisions of the 4 portfolios
        assert metrics["total_return"] == pytest.approx(_compounded(tmp_path / "validation_returns.csv"),
                                                        rel=1e-12, abs=1e-15)
        assert (tmp_path / "checkpoints" / "latest.pt").is_file()


def test_search_space_follows_the_algorithm_and_encoder():
    import optuna

    from training.hyperparameter_tuning import search_space

    def keys(**overrides):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        return set(search_space(trial, tiny_cfg(**overrides)))

    ppo = keys()
    assert {"agent.ppo.learning_rate", "agent.ppo.ent_coef", "agent.ppo.clip_range", "agent.ppo.d_model",
            "agent.ppo.day_layers", "env.window", "env.return_weight", "env.cost_penalty"} <= ppo
    assert "agent.ppo.lstm_layers" not in ppo
    assert "agent.ppo.lstm_layers" in keys(**{"agent.ppo.encoder": "lstm"})
    sac = keys(**{"training.algo": "sac"})
    assert "agent.sac.actor_lr" in sac and not any("clip_range" in k for k in sac)


def test_every_shipped_config_loads_strictly():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"quickstart.yaml", "paper.yaml", "paper_best.yaml", "crypto4.yaml"}
    for path in paths:
        cfg = load_experiment(str(path), {})
        assert cfg.data.start < cfg.data.train_end <= cfg.data.end, path.name
    best = load_experiment(str(ROOT / "configs" / "paper_best.yaml"), {})
    assert best.data.end == best.data.train_end == "2023-12-31" and not best.validates  # a final fit
    assert best.data.source == "csv" and best.env.window == 60
    assert best.env.action_prior == "vol_target" and best.training.total_timesteps == 16384
