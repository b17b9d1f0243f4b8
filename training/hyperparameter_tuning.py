"""Hyper-parameter search with Optuna (TPE sampler, median pruner on intermediate validation Sharpe).

Searched (each only where the algorithm's config has the field):

- agent: ``learning_rate`` (log 1e-5..1e-3; SAC/DDPG ``actor_lr``/``critic_lr``), ``ent_coef`` (log
  1e-5..0.05), ``clip_range`` (0.1..0.35), ``d_model`` {16, 32, 64}, ``day_layers`` 1..3, ``asset_layers``
  1..2 (PPO's Transformer encoder; ``lstm_layers``/``mlp_layers`` 1..3 for its LSTM/MLP encoders and SAC/DDPG),
  ``hidden`` {32, 64, 128};
- env: ``window`` (half, same or double the config's), and with the reward search on, the
  ``risk_adjusted`` reward's coefficients ``return_weight`` (0.5..2), ``vol_penalty`` (0..1),
  ``drawdown_penalty`` (0..1), ``cost_penalty`` (0..2) (``reward`` is set to ``risk_adjusted``; ``--no-reward-search`` keeps the config's).

Each trial is a ``train.py`` run in ``OUT/trials/trial_<n>`` validated on ``(train_end, val_end]``; its
intermediate validation Sharpe (every ``training.eval_every`` steps, a quarter of the budget when unset) is
reported for the median pruner; the objective is the final validation net Sharpe after costs over the T-bill
leg. Keep ``training.val_end`` before the span you will backtest on: validation data used for selection
is in-sample for the chosen configuration.

Outputs: ``OUT/best_config.yaml`` (a config ``train.py --config`` accepts) and ``OUT/trials.json`` with
``n_trials`` (every trial that ran, pruned ones included: the backtester deflates the Sharpe ratio by it).
Train the winner next to them (``--out OUT/best_run``) and the backtester finds the trial count.

Parallelism: ``--storage`` (default ``sqlite:///OUT/study.db``) holds the study, so any number of workers on
any machines can share it (run this command again with the same ``--storage``/``--study-name``).
``--n-jobs K`` starts K local worker processes on the one storage. ``--ray-address`` runs the search with
Ray Tune and the Optuna searcher instead (one Ray task per trial, median stopping rule).

    python training/hyperparameter_tuning.py --config configs/quickstart.yaml --n-trials 20 --out runs/tune
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from data.market import DataError
from training.config import (
    ExperimentConfig,
    apply_overrides,
    from_raw,
    load_experiment,
    parse_set_option,
    to_raw,
    write_yaml,
)

METRIC = "sharpe"


def search_space(trial: Any, base: ExperimentConfig, reward_search: bool = True) -> dict[str, Any]:
    """Suggest one configuration; returns dotted-key overrides for ``training.config.apply_overrides``.

    ``trial`` is an ``optuna.Trial`` (also used by Ray Tune's define-by-run ``OptunaSearch``).
    """
    from agents.registry import algorithm

    algo = base.algo
    agent_cfg = base.agent_config
    fields = {f.name for f in dataclasses.fields(algorithm(algo).config_class)}
    a = f"agent.{algo}."
    out: dict[str, Any] = {}
    for name in ("learning_rate", "actor_lr", "critic_lr"):
        if name in fields:
            out[a + name] = trial.suggest_float(a + name, 1e-5, 1e-3, log=True)
    if "ent_coef" in fields:
        out[a + "ent_coef"] = trial.suggest_float(a + "ent_coef", 1e-5, 0.05, log=True)
    if "clip_range" in fields:
        out[a + "clip_range"] = trial.suggest_float(a + "clip_range", 0.1, 0.35)
    if "d_model" in fields:
        heads = int(getattr(agent_cfg, "n_heads", 4))
        choices = [d for d in (16, 32, 64) if d % heads == 0] or [heads * 8]
        out[a + "d_model"] = trial.suggest_categorical(a + "d_model", choices)
    # PPO's encoder ("transformer" by default, "lstm" or "mlp") decides which depth knobs exist.
    encoder = str(agent_cfg.encoder) if "encoder" in fields else ""
    depth = {"transformer": ("day_layers", "asset_layers"), "lstm": ("lstm_layers",), "mlp": ("mlp_layers",)}
    allowed = depth.get(encoder, ("day_layers", "asset_layers", "lstm_layers", "mlp_layers"))
    for name, lo, hi in (("day_layers", 1, 3), ("asset_layers", 1, 2), ("lstm_layers", 1, 3), ("mlp_layers", 1, 3)):
        if name in fields and name in allowed:
            out[a + name] = trial.suggest_int(a + name, lo, hi)
    if "hidden" in fields:
        out[a + "hidden"] = trial.suggest_categorical(a + "hidden", [32, 64, 128])
    w = base.env.window
    out["env.window"] = trial.suggest_categorical("env.window", sorted({max(2, w // 2), w, 2 * w}))
    if reward_search:
        out["env.reward"] = "risk_adjusted"
        for name, lo, hi in (("return_weight", 0.5, 2.0), ("vol_penalty", 0.0, 1.0), ("drawdown_penalty", 0.0, 1.0),
                             ("cost_penalty", 0.0, 2.0)):
            out["env." + name] = trial.suggest_float("env." + name, lo, hi)
    return out


def trial_config(base_raw: dict[str, Any], overrides: dict[str, Any]) -> ExperimentConfig:
    """The experiment of one trial: the base mapping with the trial's overrides, periodic validation on."""
    raw = apply_overrides(base_raw, overrides)
    if not raw["training"].get("eval_every"):
        total = int(raw["training"].get("total_timesteps", 0))
        raw["training"]["eval_every"] = max(1, total // 4)
    return from_raw(raw, where="trial config")


def storage_of(url: str) -> Any:
    """An Optuna RDB storage; SQLite gets a 60 s lock timeout so several workers can share the file."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def optuna_worker(base_raw: dict[str, Any], storage: str, study_name: str, n_trials: int, seed: int, out: str,
                  source: str | None, data_dir: str | None, reward_search: bool, total_trials: int = 0,
                  device: str = "cpu") -> int:
    """Run ``n_trials`` trials of the shared study (one local worker; module level for process pools).

    After each trial it prints the study-wide count of finished trials out of ``total_trials`` and an ETA.
    """
    import optuna

    from training.parallel import Progress
    from training.train import build_store, run_training

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = from_raw(base_raw, where="tuning config")
    store = build_store(base, source, data_dir)  # the data section is not searched: one store serves all trials
    study = optuna.load_study(study_name=study_name, storage=storage_of(storage),
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))

    def objective(trial: optuna.Trial) -> float:
        cfg = trial_config(base_raw, search_space(trial, base, reward_search))

        def on_eval(step: int, metrics: dict[str, Any]) -> None:
            trial.report(float(metrics[METRIC]), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        metrics = run_training(cfg, Path(out) / "trials" / f"trial_{trial.number:04d}", store=store,
                               progress=False, on_eval=on_eval, device=device)
        value = float(metrics[METRIC])
        return value if math.isfinite(value) else -1e9

    progress = Progress(total_trials or n_trials, "tuning trials")

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        best = f"best {METRIC} {study.best_value:.3f}" if any(
            t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) else ""
        progress.show(finished, f"trial {trial.number} {trial.state.name.lower()}" + (f", {best}" if best else ""))

    study.optimize(objective, n_trials=n_trials, catch=(DataError,), callbacks=[report])
    return n_trials


def ray_trainable(config: dict[str, Any], base_raw: dict[str, Any], out: str, source: str | None,
                  data_dir: str | None, device: str = "cpu") -> None:
    """One Ray Tune trial: ``config`` holds the searched dotted keys; reports the validation Sharpe."""
    from ray import tune

    from training.train import run_training

    started = time.time()
    overrides = {k: v for k, v in config.items() if "." in k}
    cfg = trial_config(base_raw, overrides)
    name = tune.get_context().get_trial_id()

    def on_eval(step: int, metrics: dict[str, Any]) -> None:
        tune.report({METRIC: float(metrics[METRIC]), "step": step, "started": started})

    metrics = run_training(cfg, Path(out) / "trials" / f"trial_{name}", source=source, data_dir=data_dir,
                           progress=False, on_eval=on_eval, device=device)
    tune.report({METRIC: float(metrics[METRIC]), "step": int(metrics["global_step"]), "started": started,
                 "finished": time.time(), "pid": os.getpid(), "done_training": True})


def tune_with_ray(base: ExperimentConfig, out: Path, n_trials: int, seed: int, ray_address: str,
                  storage: str, study_name: str, source: str | None, data_dir: str | None,
                  reward_search: bool, max_concurrent: int | None = None,
                  device: str = "cpu") -> tuple[dict[str, Any], int, list[dict]]:
    """Ray Tune + ``OptunaSearch`` (TPE, shared storage) + median stopping; returns (overrides, n_trials, rows)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    from training.parallel import Progress, init_ray

    init_ray(ray_address, num_cpus=max_concurrent)
    progress = Progress(n_trials, "tuning trials")

    class TrialProgress(tune.Callback):
        """One progress line per finished Ray Tune trial."""

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.update(note=f"trial {trial.trial_id} done")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.update(note=f"trial {trial.trial_id} failed")

    base_raw = to_raw(base)

    # Define-by-run: the returned overrides (with the constant env.reward) become the trial's config.
    space = functools.partial(search_space, base=base, reward_search=reward_search)
    searcher = OptunaSearch(space=space, metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=seed),
                            study_name=study_name, storage=storage_of(storage))
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, base_raw=base_raw, out=str(out.resolve()), source=source,
                             data_dir=str(Path(data_dir).resolve()) if data_dir else None, device=device),
        {"cpu": 1},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=MedianStoppingRule(metric=METRIC, mode="max"),
                                    num_samples=n_trials, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(storage_path=str((out / "ray").resolve()), name=study_name, verbose=0,
                                  callbacks=[TrialProgress()]),
    )
    results = tuner.fit()
    rows = []
    for res in results:
        if res.error is None and res.metrics:
            rows.append({k: res.metrics.get(k) for k in (METRIC, "step", "started", "finished", "pid")}
                        | {"config": {k: v for k, v in (res.config or {}).items() if "." in k}})
    if not rows:
        raise DataError("every Ray Tune trial failed; see the logs under " + str(out / "ray"))
    best = max(rows, key=lambda r: r[METRIC] if r[METRIC] is not None else -math.inf)
    return dict(best["config"]), len(results), rows


def _write_outputs(out: Path, base: ExperimentConfig, overrides: dict[str, Any], summary: dict[str, Any]) -> Path:
    raw = apply_overrides(to_raw(base), overrides)
    best = from_raw(raw, where="best config")
    header = (f"Best configuration of study '{summary['study_name']}' ({summary['n_trials']} trials, "
              f"validation net Sharpe {summary['best_value']:.3f}).\nWritten by training/hyperparameter_tuning.py.")
    path = out / "best_config.yaml"
    write_yaml(best, path, header=header)
    from data.atomic_files import write_json

    write_json(out / "trials.json", summary)
    return path


def run_study(base: ExperimentConfig, out: Path, n_trials: int, n_jobs: int = 1, storage: str | None = None,
              study_name: str | None = None, seed: int = 0, source: str | None = None, data_dir: str | None = None,
              reward_search: bool = True, ray_address: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run the search and write ``best_config.yaml`` + ``trials.json`` under ``out``; returns the summary."""
    import optuna

    if base.algo == "forecaster":
        raise DataError("tuning maximises validation Sharpe; use --algo ppo, sac or ddpg")
    if not base.validates:
        raise DataError("tuning maximises validation Sharpe, and a final fit (data.train_end = data.end) has no "
                        "validation span; set data.train_end earlier")
    if n_trials < 1 or n_jobs < 1:
        raise DataError("--n-trials and --n-jobs must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study_name = study_name or f"tune-{base.algo}"
    if ray_address:
        overrides, total, rows = tune_with_ray(base, out, n_trials, seed, ray_address, storage, study_name, source,
                                               data_dir, reward_search, max_concurrent=n_jobs if n_jobs > 1 else None,
                                               device=device)
        best_value = max(r[METRIC] for r in rows)
        summary = {"n_trials": total, "n_complete": len(rows), "n_pruned": total - len(rows),
                   "best_value": best_value, "best_params": overrides, "study_name": study_name,
                   "storage": storage, "backend": "ray-tune", "trials": rows}
    else:
        try:
            optuna.create_study(study_name=study_name, storage=storage_of(storage), direction="maximize",
                                load_if_exists=True)
        except Exception as err:  # noqa: BLE001 - a bad URL or unreachable database is a user error
            raise DataError(f"cannot open the Optuna storage '{storage}' ({type(err).__name__})") from None
        from training.parallel import run_jobs

        shares = [n_trials // n_jobs + (1 if i < n_trials % n_jobs else 0) for i in range(n_jobs)]
        jobs = [{"base_raw": to_raw(base), "storage": storage, "study_name": study_name, "n_trials": k,
                 "seed": seed + i, "out": str(out), "source": source, "data_dir": data_dir,
                 "reward_search": reward_search, "total_trials": n_trials,
                 "device": device} for i, k in enumerate(shares) if k > 0]
        run_jobs(optuna_worker, jobs, workers=len(jobs))
        study = optuna.load_study(study_name=study_name, storage=storage_of(storage))
        states = [t.state for t in study.trials]
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise DataError("no trial completed; see the errors above")
        best = study.best_trial
        overrides = dict(best.params)
        if "env.return_weight" in overrides:
            overrides["env.reward"] = "risk_adjusted"
        summary = {
            "n_trials": sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states),
            "n_complete": len(done),
            "n_pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states),
            "best_value": float(best.value), "best_trial": best.number, "best_params": overrides,
            "study_name": study_name, "storage": storage, "backend": "optuna",
            "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
                       for t in study.trials],
        }
    _write_outputs(out, base, overrides, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    from agents.common import device_argument

    p = argparse.ArgumentParser(prog="hyperparameter_tuning.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="experiment YAML (default configs/quickstart.yaml)")
    p.add_argument("--algo", default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--total-timesteps", type=int, default=None, help="env steps per trial")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--n-trials", type=int, default=20)
    p.add_argument("--n-jobs", type=int, default=1, help="local worker processes sharing the storage")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study-name", default=None)
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--no-reward-search", action="store_true", help="keep the config's reward and coefficients")
    p.add_argument("--ray-address", default=None, help="run with Ray Tune on this cluster ('local' starts one)")
    p.add_argument("--out", default="runs/tune")
    p.add_argument("--device", type=device_argument, default="auto", help="auto, cpu or cuda (default auto)")
    args = p.parse_args(argv)
    try:
        overrides: dict[str, Any] = dict(parse_set_option(s) for s in args.set)
        overrides.update({"training.algo": args.algo, "training.total_timesteps": args.total_timesteps,
                          "data.source": args.source})
        base = load_experiment(args.config, overrides)
        print(f"tuning {base.algo}: {args.n_trials} trials, {args.n_jobs} job(s) -> {args.out}", flush=True)
        summary = run_study(base, Path(args.out), args.n_trials, args.n_jobs, args.storage, args.study_name,
                            args.seed, args.source, args.data_dir, not args.no_reward_search, args.ray_address,
                            args.device)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{summary['n_trials']} trials ({summary['n_pruned']} pruned); best validation Sharpe "
          f"{summary['best_value']:.3f} with {json.dumps(summary['best_params'])}")
    print(f"best config: {Path(args.out) / 'best_config.yaml'}; trial count: {Path(args.out) / 'trials.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
