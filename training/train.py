"""Train one agent on the training span and validate it on the span after, writing a complete run directory.

Command line (the DESIGN.md contract; with no arguments it runs ``configs/quickstart.yaml`` on the synthetic
market into ``runs/quickstart``)::

    python training/train.py --config CONFIG [--algo ppo|sac|ddpg|forecaster] [--source yfinance|csv|synthetic]
        [--data-dir DIR] [--seed N] [--total-timesteps N] [--set SECTION.KEY=VALUE ...] --out RUN_DIR
        [--resume] [--ray-address ADDR --seeds 0 1 2]

Spans: training uses days ``<= data.train_end`` (normalisation statistics are fitted on that span only);
validation runs the deterministic policy once over ``(train_end, training.val_end or data.end]`` with the
same costs, all cash at the start. A final fit (``data.train_end`` = ``data.end``) trains on every day and
writes no ``validation.json`` (nor keeps an earlier one): judge it with the backtester on later data.

Run directory (every file written to a temp name and renamed into place; the run files -- ``manifest.json``,
``policy.pth``, ``config.json``, curves, ``validation.json`` -- only once training has finished, so an
interrupted re-train or ``--resume`` leaves the previous finished run loadable and exportable):

- ``policy.pth`` (state dict) and ``config.json`` (``algo``, ``agent``, ``obs_layout``, ``version`` from
  ``agents.io.save_agent`` plus ``experiment``: the full config, and ``tickers``/``feature_names``);
- ``manifest.json``: the feature store it trained on (tickers, dates, feature names, normalisation stats
  fitted on the training span, content hash; the same keys as ``data.tf_pipeline``'s manifest);
- ``curves.csv`` / ``curves.png``: per training episode the reward, Sharpe, Sortino, max drawdown, VaR, CVaR;
- ``validation.json``: validation metrics (net Sharpe after costs of the excess return over the T-bill leg,
  Sortino, max drawdown, VaR/CVaR, turnover, costs, total return) and ``validation_returns.csv``;
- ``checkpoints/latest.pt`` (full training state; ``--resume`` continues from it), ``checkpoints/experiment.json``
  (the experiment the checkpoint belongs to) and ``tb/`` (TensorBoard).

Determinism: same config and seed give a bit-identical ``policy.pth`` on CPU (torch runs with
``training.torch_threads`` threads, 1 by default). ``--resume`` continues the optimisation where the
checkpoint stopped (weights, optimiser, RNG streams, step count); the envs restart fresh episodes, so a
resumed run is a faithful continuation, not a bit-for-bit replay of an uninterrupted one.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_files import atomic_path, atomic_write_text, write_json
from data.market import DataError, FeatureStore
from training.config import (
    CONFIG_VERSION,
    DEFAULT_CONFIG,
    ExperimentConfig,
    costs_of,
    from_raw,
    load_experiment,
    parse_set_option,
    to_raw,
)
from training.curves import (
    CURVE_METRICS,
    VALIDATION_METRICS,
    EpisodeRecord,
    EpisodeTracker,
    evaluate_policy,
    plot_curves,
    read_curves_csv,
    write_curves_csv,
)
from training.rollout import MarketContext

RUN_FORMAT_VERSION = 1
#: Fewest decisions a training or validation span must allow (beyond the observation window).
MIN_SPAN_DECISIONS = 30


def store_manifest(store: FeatureStore, cfg: ExperimentConfig) -> dict[str, Any]:
    """The feature-store manifest of a run (keys as in ``data.tf_pipeline.write_store``'s manifest)."""
    iso = lambda d: str(np.datetime64(d, "D"))  # noqa: E731
    return {
        "format_version": 1,
        "tickers": list(store.tickers),
        "categories": list(store.categories),
        "feature_names": list(store.feature_names),
        "n_days": store.n_days, "n_assets": store.n_assets, "n_features": store.n_features,
        "dates": {"start": iso(store.dates[0]), "end": iso(store.dates[-1]), "n_days": store.n_days},
        "train_end": iso(store.train_end),
        "source": store.source,
        "synthetic": store.synthetic,
        "norm": {"mean": [float(x) for x in store.norm_mean], "std": [float(x) for x in store.norm_std],
                 "fitted_on": f"listed asset-days with date <= {iso(store.train_end)}"},
        "content_hash": store.content_hash,
        "clip": cfg.data.clip,
        "risk_free": cfg.data.risk_free,
    }


# -- building the pieces ----------------------------------------------------------------------------------
def build_store(cfg: ExperimentConfig, source: str | None = None, data_dir: str | None = None) -> FeatureStore:
    """Load the market of ``cfg.data`` and build the feature store normalised on ``[start, train_end]``."""
    from data.feature_engineering import load_feature_store

    return load_feature_store(cfg.data, source=source, data_dir=data_dir)


def check_spans(cfg: ExperimentConfig, store: FeatureStore) -> tuple[int, int]:
    """Days available for training and validation; a window longer than either is a ``DataError``."""
    dates = store.dates.astype("datetime64[D]")
    n_train = int((dates <= np.datetime64(cfg.data.train_end, "D")).sum())
    val_lo, val_hi = np.datetime64(cfg.val_start, "D"), np.datetime64(cfg.val_end, "D")
    n_val = int(((dates >= val_lo) & (dates <= val_hi)).sum())  # 0 for a final fit (val_start > val_end)
    w = cfg.env.window
    if n_train < w + MIN_SPAN_DECISIONS:
        raise DataError(
            f"the training span has {n_train} days after the feature warm-up (first day {dates[0]}), "
            f"too few for a {w}-day window plus {MIN_SPAN_DECISIONS} decisions; lower env.window or start earlier"
        )
    if cfg.validates and n_val < 2:
        raise DataError(f"the validation span {cfg.val_start}..{cfg.val_end} holds {n_val} days; it needs at least 2")
    return n_train, n_val


def warm_start_actor(agent: Any, env: Any, tc: Any, ckpt_dir: Path) -> None:
    """``training.warm_start``: train PPO's actor on the exact daily net log growth of its weights over the
    training env's days (``agents.portfolio_gradient.warm_start``) before PPO's first update; the history goes
    to ``checkpoints/warm_start.json``."""
    import dataclasses

    from agents.portfolio_gradient import warm_start

    t0 = time.perf_counter()
    history = warm_start(agent, env.core, dataclasses.replace(tc.warm_start, seed=tc.seed))
    print(f"warm start: {tc.warm_start.steps} portfolio-gradient steps in {time.perf_counter() - t0:.1f}s", flush=True)
    write_json(ckpt_dir / "warm_start.json", history)


def make_agent(cfg: ExperimentConfig, layout: Any, device: str = "cpu") -> Any:
    """A fresh agent for ``layout`` (an ``agents.common.ObsLayout``) from the registry, with the typed
    ``cfg.agent_config_for(layout.n_features)`` (window, n_features and seed filled in), on the torch
    ``device``."""
    from agents.registry import algorithm

    try:
        return algorithm(cfg.algo).build(layout, cfg.agent_config_for(layout.n_features), device)
    except (TypeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"agent.{cfg.algo} is invalid: {err}") from None


class RecordingEnv:
    """Pass-through batched env that feeds every step to an ``EpisodeTracker`` and a step hook.

    Per portfolio the daily net return is ``expm1(info["log_return"])`` (NAV growth after all costs).
    Any other attribute (``days``, ``core``, ...) is the wrapped env's.
    """

    def __init__(self, env: Any, tracker: EpisodeTracker, on_step: Callable[[int, list[EpisodeRecord]], None]):
        self.env, self.tracker, self.on_step = env, tracker, on_step
        self.num_envs = env.num_envs
        self.metadata = env.metadata
        self.steps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> Any:
        obs, rew, term, trunc, infos = self.env.step(actions)
        self.steps += self.num_envs
        rets = np.expm1(np.asarray(infos["log_return"], dtype=np.float64))
        new = self.tracker.step(self.steps, rew, rets, np.logical_or(term, trunc), infos)
        self.on_step(self.num_envs, new)
        return obs, rew, term, trunc, infos


def write_validation(run: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """``validation.json`` (metrics without the series) and ``validation_returns.csv``; returns the metrics."""
    series = metrics.pop("series")
    write_json(run / "validation.json", metrics)
    atomic_write_text(run / "validation_returns.csv", "date,net_return,risk_free\n" + "".join(
        f"{d},{r!r},{f!r}\n" for d, r, f in zip(series["dates"], series["returns"], series["risk_free"])))
    return metrics


# -- the run ----------------------------------------------------------------------------------------------
def _tensorboard(log_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` that never imports TensorFlow (tensorboard's pure-python stub)."""
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


def _experiment_record(cfg: ExperimentConfig, store: FeatureStore) -> dict[str, Any]:
    return {
        "experiment": to_raw(cfg),
        "run_format_version": RUN_FORMAT_VERSION,
        "config_version": CONFIG_VERSION,
        "tickers": list(store.tickers),
        "feature_names": list(store.feature_names),
        "source": store.source,
    }


def write_run_files(out: Path, agent: Any, cfg: ExperimentConfig, store: FeatureStore) -> None:
    """The finished run's ``manifest.json``, ``policy.pth`` and ``config.json`` (agent keys + experiment record),
    each written atomically, one after the other, only once training is over."""
    from agents.io import save_agent

    write_json(out / "manifest.json", store_manifest(store, cfg))
    save_agent(agent, out, record=_experiment_record(cfg, store))


def _check_resumable(run: Path, cfg: ExperimentConfig) -> None:
    """``--resume`` needs a checkpoint made with the same experiment (the step budget may grow).

    The checkpoint's experiment is ``checkpoints/experiment.json`` (written when its training started);
    run directories from before that file existed fall back to ``config.json``.
    """
    if not (run / "checkpoints" / "latest.pt").is_file():
        raise DataError(f"--resume: '{run}' holds no checkpoint (checkpoints/latest.pt)")
    source = run / "checkpoints" / "experiment.json"
    if not source.is_file():
        source = run / "config.json"
    try:
        old = json.loads(source.read_text(encoding="utf-8"))
        theirs = from_raw(old["experiment"], where=f"'{source}'")
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, DataError):
        raise DataError(f"--resume: '{source}' is missing or unreadable") from None
    if old.get("run_format_version") != RUN_FORMAT_VERSION:
        raise DataError(f"--resume: '{run}' was written by an incompatible version of train.py")
    mine, theirs_raw = to_raw(cfg), to_raw(theirs)
    for raw in (mine, theirs_raw):
        raw["training"].pop("total_timesteps", None)
    if mine != theirs_raw:
        raise DataError(f"--resume: the config differs from the one '{run}' was trained with")


def forecast_batches(store: FeatureStore, window: int, first: int, last: int, batch_size: int,
                     seed: int | None) -> Callable[[], Any]:
    """A callable yielding numpy batches for ``agents.forecaster.Forecaster.fit``/``evaluate``.

    Samples are decision days ``t`` in ``[max(first, window-1), last)``: features ``store.features[t-W+1:t+1]``
    (B, W, N, F) float32, target the next-day log return ``log1p(returns[t])`` (B, N) (close t -> t+1, so
    ``t + 1 <= last`` keeps the target inside the span), valid where the asset is listed on t and t+1.
    ``seed`` None keeps calendar order; otherwise each call reshuffles with one seeded generator.
    """
    days = np.arange(max(first, window - 1), last)
    if days.size == 0:
        raise DataError(f"no forecast samples: the span is shorter than the {window}-day window")
    rng = None if seed is None else np.random.default_rng(seed)
    wins = np.lib.stride_tricks.sliding_window_view(store.features, window, axis=0)  # (T-W+1, N, F, W) view

    def batches() -> Any:
        order = days if rng is None else rng.permutation(days)
        for i in range(0, order.size, batch_size):
            t = order[i : i + batch_size]
            feats = np.ascontiguousarray(wins[t - window + 1].transpose(0, 3, 1, 2), dtype=np.float32)
            target = np.log1p(store.returns[t]).astype(np.float32)
            valid = (store.listed[t] & store.listed[t + 1]).astype(np.float32)
            yield feats, target, valid

    return batches


def run_forecaster(cfg: ExperimentConfig, out: Path, store: FeatureStore, progress: bool) -> dict[str, Any]:
    """Fit the return forecaster on the training span and score it on the validation span.

    Writes the same run directory as the agents (``policy.pth``, ``config.json``, ``manifest.json``, TensorBoard)
    with ``curves.csv``/``curves.png`` holding the loss per epoch and ``validation.json`` the forecaster's
    held-out scores (RMSE vs the zero forecast, directional accuracy; daily log-return units).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.common import ObsLayout

    dates = store.dates.astype("datetime64[D]")
    n_train = int((dates <= np.datetime64(cfg.data.train_end, "D")).sum())
    v0 = int(np.searchsorted(dates, np.datetime64(cfg.val_start, "D"), "left"))
    v1 = int(np.searchsorted(dates, np.datetime64(cfg.val_end, "D"), "right"))
    layout = ObsLayout(cfg.env.window, store.n_assets, store.n_features)
    agent = make_agent(cfg, layout)
    train_b = forecast_batches(store, layout.window, 0, n_train - 1, 64, cfg.training.seed)
    writer = _tensorboard(out / "tb")
    t0 = time.perf_counter()

    def callback(epoch: int, loss: float) -> None:
        writer.add_scalar("train/loss", loss, epoch)
        if progress:
            print(f"epoch {epoch + 1}/{agent.config.epochs}: mean per-asset RMSE {loss:.5f}", flush=True)

    agent.fit(train_b, callback=callback)
    seconds = time.perf_counter() - t0
    scores = agent.evaluate(forecast_batches(store, layout.window, v0, v1 - 1, 256, None)())
    write_run_files(out, agent, cfg, store)
    atomic_write_text(out / "curves.csv",
                      "epoch,loss\n" + "".join(f"{i + 1},{v!r}\n" for i, v in enumerate(agent.history_)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(agent.history_) + 1), agent.history_, "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean per-asset RMSE (daily log return)")
    fig.tight_layout()
    try:
        with atomic_path(out / "curves.png") as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    metrics = {"algo": "forecaster", "seed": cfg.training.seed, "start": str(dates[max(v0, layout.window - 1)]),
               "end": str(dates[v1 - 1]), **scores, "train_seconds": round(seconds, 2), "synthetic": store.synthetic,
               "units": "rmse in daily log-return units (mean over assets of per-asset RMSE)"}
    write_json(out / "validation.json", metrics)
    writer.add_scalar("validation/rmse_ratio", scores["rmse_ratio"], len(agent.history_))
    writer.close()
    return metrics


def run_training(
    cfg: ExperimentConfig,
    out: Path,
    *,
    source: str | None = None,
    data_dir: str | None = None,
    resume: bool = False,
    progress: bool = True,
    store: FeatureStore | None = None,
    on_eval: Callable[[int, dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``cfg`` into the run directory ``out`` and return the validation metrics.

    ``store`` reuses a prebuilt feature store (its ``train_end`` must be ``cfg.data.train_end``).
    ``on_eval(step, metrics)`` is called after every periodic validation (``training.eval_every``) and may
    raise to abort (Optuna pruning).
    """
    import torch

    from agents.checkpoint import load_checkpoint
    from agents.common import ObsLayout
    from agents.registry import algorithm
    from environments.vector_env import BatchedHedgeFundEnv

    tc = cfg.training
    torch.set_num_threads(tc.torch_threads)
    out = Path(out)
    if resume:
        _check_resumable(out, cfg)
    store = store if store is not None else build_store(cfg, source, data_dir)
    if str(np.datetime64(store.train_end, "D")) != cfg.data.train_end:
        raise DataError(f"the feature store was normalised up to {store.train_end}, the config says {cfg.data.train_end}")
    check_spans(cfg, store)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.algo == "forecaster":
        if resume:
            raise DataError("--resume is not supported for the forecaster (it trains in a few epochs)")
        return run_forecaster(cfg, out, store, progress)
    # Nothing of the finished run (manifest, policy, config, curves, validation) is touched until training
    # ends: an interrupted re-train or resume leaves the previous run loadable and exportable.
    ckpt_dir = out / "checkpoints"
    env = BatchedHedgeFundEnv(store, cfg.env, tc.n_envs, end=cfg.data.train_end, costs_bps=costs_of(cfg))
    layout = ObsLayout.from_dict(env.obs_layout)
    records: list[EpisodeRecord] = []
    if resume:
        try:  # off-policy agents rebuild their replay buffer from the env's feature array
            agent = load_checkpoint(algorithm(cfg.algo).agent_class, ckpt_dir / "latest.pt", env, device=device)
        except ValueError as err:
            raise DataError(f"--resume: {err}") from None
        if agent.config != cfg.agent_config_for(layout.n_features):
            raise DataError(f"--resume: the checkpoint's agent settings differ from the config of '{out}'")
        if (ckpt_dir / "curves.csv").is_file():
            records = read_curves_csv(ckpt_dir / "curves.csv")
        # The envs restart fresh episodes, seeded from the step reached, so no episode is replayed.
        agent.restart_episodes(env.reset(seed=tc.seed + 7919 * agent.global_step)[0])
    else:
        agent = make_agent(cfg, layout, device)
        for stale in ("checkpoints", "tb"):
            shutil.rmtree(out / stale, ignore_errors=True)
    ckpt_dir.mkdir(exist_ok=True)
    if tc.warm_start is not None and not resume:
        warm_start_actor(agent, env, tc, ckpt_dir)
    write_json(ckpt_dir / "experiment.json", _experiment_record(cfg, store))
    start_step = int(agent.global_step)
    if resume:
        print(f"resuming from step {start_step} ({len(records)} episodes so far) in {out}", flush=True)
    if start_step >= tc.total_timesteps:
        print(f"checkpoint already at step {start_step} >= total_timesteps {tc.total_timesteps}; nothing to train")

    tracker = EpisodeTracker(tc.n_envs, start_episode=len(records), context=MarketContext.from_store(store, cfg.data))
    tracker.records = list(records)
    writer = _tensorboard(out / "tb")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.total_timesteps, initial=start_step, unit="step", desc=f"{cfg.algo} seed {tc.seed}",
                   dynamic_ncols=True, mininterval=0.5)
    recent: list[EpisodeRecord] = []

    def on_step(n: int, new: list[EpisodeRecord]) -> None:
        for rec in new:
            for key in CURVE_METRICS:
                writer.add_scalar(f"episode/{key}", getattr(rec, key), rec.timestep)
        recent.extend(new)
        del recent[:-20]
        if bar is not None:
            bar.update(n)
            if new:
                bar.set_postfix(reward=f"{np.mean([r.reward for r in recent]):.3f}",
                                nav=f"{np.mean([r.nav for r in recent]):.3f}", refresh=False)

    renv = RecordingEnv(env, tracker, on_step)
    renv.steps = start_step
    next_ckpt = start_step + tc.checkpoint_every if tc.checkpoint_every else None
    next_eval = start_step + tc.eval_every if tc.eval_every else None

    def checkpoint() -> None:
        agent.save_checkpoint(str(ckpt_dir / "latest.pt"))
        write_curves_csv(tracker.records, ckpt_dir / "curves.csv")
        write_json(ckpt_dir / "progress.json", {"global_step": int(agent.global_step), "episodes": tracker.episodes})

    def callback(step: int, metrics: dict[str, float]) -> bool:
        nonlocal next_ckpt, next_eval
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                writer.add_scalar(f"train/{key}", value, step)
        if next_ckpt is not None and step >= next_ckpt:
            checkpoint()
            next_ckpt += tc.checkpoint_every
        if next_eval is not None and step >= next_eval and step < tc.total_timesteps:
            val = evaluate_policy(agent.policy_module(), store, cfg, cfg.val_start, cfg.val_end)
            val.pop("series")
            for key in VALIDATION_METRICS:
                writer.add_scalar(f"validation/{key}", val[key], step)
            next_eval += tc.eval_every
            if on_eval is not None:
                on_eval(step, val)
        return True

    t0 = time.perf_counter()
    try:
        if start_step < tc.total_timesteps:
            agent.train(renv, tc.total_timesteps, callback)
    except KeyboardInterrupt:
        checkpoint()
        writer.close()
        if bar is not None:
            bar.close()
        raise
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - t0
    checkpoint()
    run_info = {"algo": cfg.algo, "seed": tc.seed, "global_step": int(agent.global_step),
                "train_seconds": round(train_seconds, 2), "episodes": tracker.episodes}
    if cfg.validates:
        val = evaluate_policy(agent.policy_module(), store, cfg, cfg.val_start, cfg.val_end)
        val.update(run_info)
    write_run_files(out, agent, cfg, store)
    write_curves_csv(tracker.records, out / "curves.csv")
    plot_curves(tracker.records, out / "curves.png", title=f"{cfg.algo} seed {tc.seed} ({store.source})")
    if not cfg.validates:  # a final fit: no validation files, and none left over from an earlier run here
        for stale in ("validation.json", "validation_returns.csv"):
            (out / stale).unlink(missing_ok=True)
        writer.close()
        return {**run_info, "trained_to": cfg.data.train_end, "synthetic": store.synthetic}
    metrics = write_validation(out, val)
    for key in VALIDATION_METRICS:
        writer.add_scalar(f"validation/{key}", metrics[key], int(agent.global_step))
    writer.close()
    return metrics


# -- command line -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from agents.common import device_argument

    p = argparse.ArgumentParser(prog="train.py", description="Train an allocation agent and validate it.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: configs/quickstart.yaml)")
    p.add_argument("--algo", default=None, help="ppo, sac, ddpg or forecaster (default: training.algo)")
    p.add_argument("--source", default=None, help="yfinance, csv or synthetic (default: data.source)")
    p.add_argument("--data-dir", default=None, help="folder of <TICKER>.csv files for --source csv")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: training.seed)")
    p.add_argument("--total-timesteps", type=int, default=None, help="env steps (default: training.total_timesteps)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config value, e.g. --set env.window=20 (repeatable)")
    p.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pt")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train one run per seed into OUT/seed_<s> (local processes, or Ray with --ray-address); "
                   "default training.seeds when --workers > 1 or --ray-address is given")
    p.add_argument("--workers", type=int, default=1, help="local processes for --seeds (default 1)")
    p.add_argument("--ray-address", default=None, help="fan --seeds out as Ray tasks on this cluster ('local' starts one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", type=device_argument, default="auto", help="auto, cpu or cuda (default auto)")
    return p.parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line values as dotted-key overrides (applied before the config is built)."""
    overrides: dict[str, Any] = dict(parse_set_option(item) for item in args.set)
    overrides.update({"training.algo": args.algo, "training.seed": args.seed,
                      "training.total_timesteps": args.total_timesteps, "data.source": args.source})
    return overrides


def train_seed_job(config_path: str, overrides: dict[str, Any], out: str, source: str | None,
                   data_dir: str | None, device: str = "cpu") -> dict[str, Any]:
    """One run of a multi-seed fan-out (module level: process pools and Ray import it)."""
    cfg = load_experiment(config_path, overrides)
    return run_training(cfg, Path(out), source=source, data_dir=data_dir, progress=False, device=device)


def _summary_line(metrics: dict[str, Any]) -> str:
    if "trained_to" in metrics:
        return (f"final fit: trained on every day to {metrics['trained_to']}, no validation span; judge it with "
                "evaluation/backtester.py on later data (--data-dir NEWER --start ... --end ...)")
    if metrics.get("algo") == "forecaster":
        return (f"validation {metrics['start']}..{metrics['end']}: forecast RMSE {metrics['rmse']:.5f} vs "
                f"{metrics['rmse_zero']:.5f} for the zero forecast (ratio {metrics['rmse_ratio']:.3f}), "
                f"directional accuracy {metrics['directional_accuracy']:.1%}")
    return (f"validation {metrics['start']}..{metrics['end']}: net Sharpe over T-bill {metrics['sharpe']:.2f}, "
            f"total return {metrics['total_return']:.1%}, max drawdown {metrics['max_drawdown']:.1%}, "
            f"turnover {metrics['turnover']:.3f}/day")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = overrides_from_args(args)
        cfg = load_experiment(args.config, overrides)
        out = Path(args.out)
        seeds = args.seeds or (list(cfg.training.seeds) if args.ray_address or args.workers > 1 else None)
        if seeds:
            from training.parallel import run_jobs

            jobs = [{"config_path": args.config, "overrides": {**overrides, "training.seed": s},
                     "out": str(out / f"seed_{s}"), "source": args.source, "data_dir": args.data_dir,
                     "device": args.device}
                    for s in seeds]
            print(f"training {len(jobs)} seeds of {cfg.algo} into {out}/seed_*", flush=True)
            results = run_jobs(train_seed_job, jobs, workers=args.workers, ray_address=args.ray_address,
                               label="seed runs")
            for s, m in zip(seeds, results):
                print(f"seed {s}: {_summary_line(m)}")
            sharpes = [m["sharpe"] for m in results] if cfg.validates else None
            write_json(out / "seeds.json", {"seeds": seeds, "sharpe": sharpes, "results": results})
            if sharpes:
                print(f"mean validation Sharpe {np.mean(sharpes):.2f} ± {np.std(sharpes):.2f} over {len(sharpes)} seeds")
            return 0
        source_label = args.source or cfg.data.source
        print(f"training {cfg.algo} seed {cfg.training.seed} on {source_label} data, "
              f"{cfg.data.start}..{cfg.data.train_end}, {cfg.training.total_timesteps} steps -> {out}", flush=True)
        metrics = run_training(cfg, out, source=args.source, data_dir=args.data_dir, resume=args.resume,
                               progress=not args.quiet, device=args.device)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; a checkpoint was saved, continue with --resume --out {args.out}", file=sys.stderr)
        return 130
    print(_summary_line(metrics) + (" [SYNTHETIC market]" if metrics.get("synthetic") else ""))
    print(f"run directory: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
