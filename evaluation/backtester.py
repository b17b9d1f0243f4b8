"""Out-of-sample backtest: the trained policy and every classical benchmark through the same environment.

    python evaluation/backtester.py --run RUN_DIR [--run RUN_DIR2 ...] [--onnx FILE] [--start DATE]
        [--end DATE] [--source yfinance|csv|synthetic] [--data-dir DIR] [--config CONFIG] [--no-tearsheet]
        --out REPORT_DIR

Writes ``metrics.json`` and ``metrics.md`` (one row per strategy with every ``training.metrics`` measure
and the behaviour diagnostics ``active_share``, ``regime_response``, ``hedge_response``, turnover and cost
drag; data source, policy format (PyTorch or ONNX), training and evaluation spans, annualisation and
risk-free leg stated; significance and allocation insights), ``returns.csv`` (daily net return per
strategy), ``weights.csv`` (the agent's daily post-trade weights per ticker and CASH, full precision),
``tearsheet.html`` (quantstats: the agent against the best benchmark, same series and dates) and
``charts.html`` (plotly: equity, drawdowns, stacked weights, exposure by category). Benchmark settings
come from the config's optional ``evaluation:`` section (``evaluation.benchmarks.EvaluationConfig``).

The feature store is rebuilt from the run's config (``config.json``'s ``experiment`` record) with the
normalisation statistics of the run's ``manifest.json`` (fitted on the training span only). The span
defaults to the validation span: the day after ``data.train_end`` to ``data.end``. An ``--end`` after the
run's ``data.end`` extends the load (with a newer ``--data-dir``), so a run trained to 2023-12-31 can be
judged on 2024 data; features are causal, so the days the run saw keep their values. When the
evaluation data's source differs from the one the run trained on (synthetic vs csv), the output and the
report say so. Every strategy is stepped day by day through ``CryptoHedgeFundEnv`` (``training.rollout``,
the rollout training's validation uses too) over the same decision days, so costs, slippage and
closed-market rules are identical; benchmarks run without margin and drawdown control (they are plain
long-only portfolios). With no ``--run`` only the benchmarks are reported (config from ``--config``,
default ``configs/quickstart.yaml``). Several runs (seeds) are reported one by one and as mean and spread;
a folder of seed runs (``train.py --seeds`` writes ``OUT/seed_<s>``) stands for all the runs inside it.

Bad input (a missing run directory, a run from another universe, a span with no data, an ONNX file
whose inputs do not match) prints one sentence and exits with status 2.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_files import atomic_write_text, write_json
from data.config import DataConfig, from_mapping
from data.market import DataError, FeatureStore
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
from evaluation import performance_metrics as pm
from evaluation.benchmarks import BENCHMARKS, EvaluationConfig, benchmark_target, candidates_at
from training.rollout import (  # noqa: F401 - StrategyResult, risk_free_series, torch_policy: public here too
    MarketContext,
    Policy,
    StrategyResult,
    risk_free_series,
    run_episode,
    strategy_metrics,
    torch_policy,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "quickstart.yaml"

class BenchmarkPolicy:
    """A benchmark rule as an env policy: rebalance on schedule, otherwise hold the drifted weights.

    A trade happens on day t when a rebalance is due (``rebalance_every`` days since the last one, or the
    first purchase) and every listed asset can trade that day (no weekend half-rebalances); buy-and-hold
    rules trade once. Only ``store.returns[:t]`` reaches the rule (see ``benchmark_target``).
    """

    def __init__(self, name: str, store: FeatureStore, rf_daily: np.ndarray, cfg: EvaluationConfig,
                 max_weight: float) -> None:
        self.bench = BENCHMARKS[name]
        self.name, self.store, self.rf, self.cfg, self.max_weight = name, store, rf_daily, cfg, max_weight
        self.last: int | None = None

    def __call__(self, t: int, obs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        s = self.store
        if self.bench.buy_and_hold:  # the first purchase waits until every asset it buys can trade
            need = candidates_at(self.name, t, s.listed, s.tickers, self.cfg.lookback)
        else:  # a rebalance waits until every listed asset can trade
            need = s.listed[t]
        all_open = bool(np.all(s.tradable[t] | ~need))
        if self.bench.buy_and_hold:
            due = self.last is None
        else:
            due = self.last is None or t - self.last >= self.cfg.rebalance_every
        if not (due and all_open):
            return np.maximum(np.asarray(weights, dtype=np.float64), 0.0)  # round-off can leave cash at -1e-17
        self.last = t
        lo = max(t - self.cfg.lookback, 0)
        rf = float(np.mean(self.rf[lo:t])) if t > lo else 0.0
        return benchmark_target(self.name, t, s.returns, s.listed, s.tickers, rf, self.cfg, self.max_weight)


def benchmark_env_config(env_cfg: EnvConfig, buy_and_hold: bool) -> EnvConfig:
    """The agent's env config for a classical portfolio: same costs, no margin, drawdown control or
    action prior (a rule's weights are the target, not a tilt); the per-asset cap is lifted for
    buy-and-hold rules (a cap would force sales)."""
    cap = 1.0 if buy_and_hold else min(env_cfg.max_weight, 1.0)  # without margin a weight is at most 1
    return dataclasses.replace(env_cfg, margin=False, drawdown_control=False, concentration_penalty=0.0,
                               max_weight=cap, action_prior="none")


def run_benchmarks(
    store: FeatureStore, env_cfg: EnvConfig, eval_cfg: EvaluationConfig, rf_daily: np.ndarray,
    start: str | None, end: str | None, costs_bps: dict[str, tuple[float, float]] | None = None,
    names: list[str] | None = None,
) -> list[StrategyResult]:
    """Every benchmark in ``names`` (default: the config's list, else all) stepped through the env."""
    chosen = names or eval_cfg.benchmarks or list(BENCHMARKS)
    if "btc_bh" in chosen and "BTC-USD" not in store.tickers:
        chosen = [c for c in chosen if c != "btc_bh"]
    if not chosen:
        raise DataError("no benchmark can run on this universe (BTC buy & hold needs BTC-USD)")
    results = []
    for name in chosen:
        bench = BENCHMARKS[name]
        cfg = benchmark_env_config(env_cfg, bench.buy_and_hold)
        env = CryptoHedgeFundEnv.from_store(store, cfg, start, end, costs_bps)
        policy = BenchmarkPolicy(name, store, rf_daily, eval_cfg, cfg.max_weight)
        label = f"{eval_cfg.momentum_days}-day momentum" if name == "momentum" else bench.label
        results.append(run_episode(env, policy, name, label))
    return results


def onnx_policy(path: Path, obs_dim: int, n_outputs: int) -> Policy:
    """An exported ONNX policy run with onnxruntime; its input must take ``obs_dim`` floats."""
    import onnxruntime as ort

    if not path.is_file():
        raise DataError(f"ONNX file '{path}' does not exist")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any load failure is a bad file for the user
        raise DataError(f"'{path}' is not a loadable ONNX model ({type(err).__name__})") from None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or not inputs[0].shape or inputs[0].shape[-1] != obs_dim:
        got = [tuple(i.shape) for i in inputs]
        raise DataError(f"ONNX file '{path}' takes inputs {got}, but this run's observations have {obs_dim} values")
    out_shape = outputs[0].shape if outputs else None
    if not out_shape or out_shape[-1] != n_outputs:
        raise DataError(f"ONNX file '{path}' outputs {out_shape}, but this universe needs {n_outputs} weights")
    name = inputs[0].name

    def act(t: int, obs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        out = sess.run(None, {name: obs[None, :].astype(np.float32)})[0]
        return np.clip(np.asarray(out[0], dtype=np.float64), 0.0, None)

    return act


# --------------------------------------------------------------------------------------- run loading
@dataclass(frozen=True)
class RunInfo:
    """What the backtester needs from a run directory."""

    path: Path
    label: str
    experiment: Any  # training.config.ExperimentConfig
    manifest: dict[str, Any]


def read_run(path: str) -> RunInfo:
    """Config and manifest of a run directory; ``DataError`` with one sentence when unusable."""
    from training.config import load_experiment

    run = Path(path)
    if not run.is_dir():
        raise DataError(f"run directory '{path}' does not exist")
    for name in ("config.json", "manifest.json", "policy.pth"):
        if not (run / name).is_file():
            raise DataError(f"run directory '{path}' has no {name}; is it a training run?")
    experiment = load_experiment(run / "config.json")
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"'{run / 'manifest.json'}' is not valid JSON") from None
    for key in ("tickers", "feature_names", "norm"):
        if key not in manifest:
            raise DataError(f"'{run / 'manifest.json'}' has no '{key}' entry")
    algo = experiment.algo
    return RunInfo(run, f"{algo.upper()} agent ({run.name})", experiment, manifest)


def expand_runs(paths: list[str]) -> list[str]:
    """Run directories from the command line; a folder of seed runs (``OUT/seed_*`` from
    ``train.py --seeds`` or a walk-forward fold) stands for its ``seed_*`` runs, or, when it has none, for
    every run directory directly inside it. A fold's ``best/`` copy of one seed is not counted twice, and hidden
    folders (a write's temp folder left by a killed process) are not runs."""
    out: list[str] = []
    for path in paths:
        folder = Path(path)
        if folder.is_dir() and not (folder / "config.json").is_file():
            inner = sorted(str(p.parent) for p in folder.glob("*/policy.pth")
                           if (p.parent / "config.json").is_file() and not p.parent.name.startswith("."))
            seeds = [p for p in inner if Path(p).name.startswith("seed_")]
            inner = seeds or inner
            if inner:
                out.extend(inner)
                continue
        out.append(path)
    return out


def extended_data_config(data_cfg: DataConfig, end: str | None) -> DataConfig:
    """``data_cfg`` with its ``end`` moved to ``end`` when ``end`` is later: a backtest on newer data loads
    beyond the run's ``data.end`` (``train_end`` and so the normalisation span stay the run's)."""
    if end is None:
        return data_cfg
    try:
        later = np.datetime64(end, "D") > np.datetime64(data_cfg.end, "D")
    except ValueError:
        raise DataError(f"--end must be an ISO date like 2024-06-30, got '{end}'") from None
    return dataclasses.replace(data_cfg, end=str(np.datetime64(end, "D"))) if later else data_cfg


def build_store(data_cfg: DataConfig, source: str | None, data_dir: str | None,
                manifest: dict[str, Any] | None, notes: list[str] | None = None,
                end: str | None = None) -> FeatureStore:
    """Load the market and build features; with a run manifest, apply its normalisation statistics and
    check that the universe and the feature set are the ones the policy was trained on. The loader's
    notes (dropped tickers, trimmed calendar) are appended to ``notes``. An ``end`` after ``data.end``
    extends the load (features are causal: each day's features use data up to that day only)."""
    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store

    data_cfg = extended_data_config(data_cfg, end)
    market = load_market(data_cfg, source=source, data_dir=data_dir, verbose=False)
    if notes is not None:
        notes.extend(f"data: {n}" for n in market.notes)
    stats = None
    if manifest is not None:
        stats = (np.asarray(manifest["norm"]["mean"], dtype=np.float64),
                 np.asarray(manifest["norm"]["std"], dtype=np.float64))
        if tuple(manifest["tickers"]) != tuple(market.tickers):
            missing = sorted(set(manifest["tickers"]) ^ set(market.tickers))
            raise DataError(
                f"the run was trained on {len(manifest['tickers'])} assets ({', '.join(manifest['tickers'])}) "
                f"but the data gives {len(market.tickers)} ({', '.join(market.tickers)}); "
                f"differing: {', '.join(missing) or 'order'}"
            )
    store = build_feature_store(market, data_cfg.train_end, clip=data_cfg.clip, norm_stats=stats)
    if manifest is not None and tuple(manifest["feature_names"]) != tuple(store.feature_names):
        raise DataError("the run was trained on a different feature set than this version computes")
    return store


def load_eval_config(extra: dict[str, Any], data_cfg: Any = None) -> EvaluationConfig:
    """The YAML's ``evaluation`` section; its T-bill leg (``tbill``, for the vol-targeted benchmark) defaults
    to the data section's ``risk_free`` ticker when ``data_cfg`` is given and names one."""
    section = extra.get("evaluation") or {}
    if not isinstance(section, dict):
        raise DataError("the 'evaluation' section must be a mapping")
    if data_cfg is not None and data_cfg.risk_free and "tbill" not in section:
        section = {**section, "tbill": data_cfg.risk_free}
    return from_mapping(EvaluationConfig, section, "evaluation")


# --------------------------------------------------------------------------------------- evaluation
def strategy_row(result: StrategyResult, context: MarketContext, tickers: tuple[str, ...], kind: str) -> dict[str, Any]:
    """JSON-safe summary of one strategy: every ``training.metrics`` measure (returns, risk, turnover, cost
    drag and the diagnostics ``active_share``/``regime_response``/``hedge_response``) under ``metrics``,
    average weights per asset and per category."""
    avg = pm.average_weight(result.weights)
    return {
        "name": result.name, "label": result.label, "kind": kind,
        "metrics": strategy_metrics(result, context),
        "avg_weight": dict(zip(list(tickers) + ["cash"], avg.tolist())),
        "avg_weight_by_category": pm.average_weight_by_category(result.weights, context.categories),
        "interventions": dict(result.interventions),
    }


def _excess_per_period(result: StrategyResult, context: MarketContext) -> np.ndarray:
    """Per-period excess returns (folded onto weekdays for 252 periods), as the metrics use them."""
    idx = context.day_index(result.dates)
    r, rf, _, _ = pm.fold_to_periods(result.dates, result.returns, context.risk_free[idx], result.turnover,
                                     result.cost, context.periods)
    return r - rf


def significance_entry(agent: StrategyResult, best: StrategyResult, best_label: str, context: MarketContext,
                       cfg: EvaluationConfig, n_trials: int, trials_source: str,
                       trials_variance: float | None = None) -> dict[str, Any]:
    """Bootstrap CIs for the agent's Sharpe and its difference to the best benchmark, PSR and DSR.

    ``trials_variance``: variance of the tuning trials' per-period Sharpes (None: the estimator's own)."""
    from evaluation import significance as sig

    periods = context.periods
    ex_a, ex_b = _excess_per_period(agent, context), _excess_per_period(best, context)
    block = cfg.bootstrap_block or sig.default_block_length(ex_a.shape[0])
    ci = sig.sharpe_confidence_interval(ex_a, periods, 0.95, cfg.n_boot, block, cfg.seed)
    diff = sig.sharpe_difference_interval(ex_a, ex_b, periods, 0.95, cfg.n_boot, block, cfg.seed)
    psr = sig.probabilistic_sharpe_ratio(ex_a, 0.0)
    dsr, sr0 = sig.deflated_sharpe_ratio(ex_a, n_trials, trials_variance)
    if diff.low > 0:
        verdict = f"{agent.label} BEAT the best benchmark ({best_label}) with 95% confidence"
    elif diff.high < 0:
        verdict = f"{agent.label} did WORSE than the best benchmark ({best_label}) with 95% confidence"
    else:
        verdict = (f"{agent.label} did NOT beat the best benchmark ({best_label}) with 95% confidence: "
                   "the interval of the Sharpe difference contains zero")
    return {
        "strategy": agent.label, "best_benchmark": best.name, "best_benchmark_label": best_label,
        "sharpe_ci": dataclasses.asdict(ci), "sharpe_diff_ci": dataclasses.asdict(diff),
        "beat_best_benchmark_95": bool(diff.low > 0), "psr": psr, "dsr": dsr, "dsr_sr0_per_period": sr0,
        "n_trials": n_trials, "trials_source": trials_source, "trials_sharpe_variance_per_period": trials_variance, "n_boot": cfg.n_boot, "block": float(block),
        "sentence": verdict + ".",
    }


def span_bounds(store: FeatureStore, start: str | None, end: str | None, window: int) -> tuple[str, str]:
    """ISO (start, end) of the decision span: the request clipped so that a full window precedes it."""
    for name, value in (("--start", start), ("--end", end)):
        if value is not None:
            try:
                np.datetime64(value, "D")
            except ValueError:
                raise DataError(f"{name} must be an ISO date like 2023-01-01, got '{value}'") from None
    dates = store.dates
    lo = 0 if start is None else int(np.searchsorted(dates, np.datetime64(start, "D"), "left"))
    hi = dates.shape[0] - 1 if end is None else int(np.searchsorted(dates, np.datetime64(end, "D"), "right")) - 1
    lo = max(lo, window - 1)
    if hi - lo < 2 or lo >= dates.shape[0]:
        raise DataError(
            f"the data ({dates[0]} .. {dates[-1]}, first decision possible on {dates[min(window - 1, len(dates) - 1)]}) "
            f"has no days to backtest between {start or 'the start'} and {end or 'the end'}"
        )
    return str(dates[lo]), str(dates[hi])


def _simulate(runs: list[RunInfo], store: FeatureStore, experiment: Any, eval_cfg: EvaluationConfig,
              rf_all: np.ndarray, span_start: str, span_end: str, costs: dict[str, tuple[float, float]],
              onnx: Path | None, log: Callable[[str], None],
              device: str = "cpu") -> tuple[list[StrategyResult], list[StrategyResult]]:
    """Step every agent run and every benchmark through the env over the span."""
    agents: list[StrategyResult] = []
    for run in runs:
        env = CryptoHedgeFundEnv.from_store(store, run.experiment.env, span_start, span_end, costs)
        if onnx is not None:
            policy = onnx_policy(onnx, env.obs_dim, env.n_assets + 1)
        else:
            from agents.io import load_agent, read_agent_config

            try:
                _, _, layout = read_agent_config(run.path)
                if layout.obs_dim != env.obs_dim:
                    raise DataError(
                        f"run directory '{run.path}' expects observations of {layout.obs_dim} values but "
                        f"this data gives {env.obs_dim}; it was trained on another universe or feature set"
                    )
                from agents.registry import algorithm

                if not algorithm(run.experiment.algo).policy:
                    raise DataError(f"run directory '{run.path}' holds a {run.experiment.algo} model, "
                                    "not an allocation policy; backtest a ppo, sac or ddpg run")
                agent = load_agent(run.path)
                policy = torch_policy(agent.policy_module(), device)
            except ValueError as err:
                raise DataError(str(err)) from None
        label = f"{run.label} [ONNX]" if onnx is not None else run.label
        log(f"  agent {label}")
        agents.append(run_episode(env, policy, f"agent_{len(agents)}", label))
    bench_results = run_benchmarks(store, experiment.env, eval_cfg, rf_all, span_start, span_end, costs)
    log(f"  {len(bench_results)} benchmarks: {', '.join(b.name for b in bench_results)}")

    return agents, bench_results


def source_warning(runs: list[RunInfo], store: FeatureStore) -> str | None:
    """One sentence when the evaluation data's source differs from the source the (first) run trained on."""
    if not runs:
        return None
    trained = runs[0].manifest.get("source")
    trained_synth = bool(runs[0].manifest.get("synthetic", trained == "synthetic"))
    if trained is None or (trained == store.source and trained_synth == store.synthetic):
        return None
    kind = lambda src, synth: f"{src} ({'SYNTHETIC' if synth else 'real'})"  # noqa: E731
    return (f"the run was trained on {kind(trained, trained_synth)} data but is evaluated on "
            f"{kind(store.source, store.synthetic)} data")


def backtest(
    runs: list[RunInfo], experiment: Any, out: Path, start: str | None = None, end: str | None = None,
    source: str | None = None, data_dir: str | None = None, onnx: Path | None = None,
    eval_cfg: EvaluationConfig | None = None, log: Callable[[str], None] = print, tearsheet: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every strategy, compute metrics and significance, write the report files; return the report."""
    from evaluation import reports
    from evaluation.significance import find_tuning_trials

    t0 = time.perf_counter()
    data_cfg = experiment.data
    eval_cfg = eval_cfg or load_eval_config(experiment.extra, experiment.data)
    load_cfg = extended_data_config(data_cfg, end)
    log(f"loading market and features: source={source or data_cfg.source} {load_cfg.start}..{load_cfg.end}")
    data_notes: list[str] = []
    store = build_store(data_cfg, source, data_dir, runs[0].manifest if runs else None, data_notes, end=end)
    timings = {"load_and_features": time.perf_counter() - t0}
    for run in runs[1:]:
        if tuple(run.manifest["tickers"]) != tuple(store.tickers):
            raise DataError(f"run directory '{run.path}' is from another universe than '{runs[0].path}'")
    warnings = [w for w in [source_warning(runs, store)] if w]
    for w in warnings:
        log(f"WARNING: {w}")
    if start is None and end is None:
        start = experiment.val_start
    windows = [experiment.env.window] + [r.experiment.env.window for r in runs]
    try:
        span_start, span_end = span_bounds(store, start, end, max(windows))
    except DataError as err:
        if start is not None and end is None and str(start) > str(store.dates[-1]):
            raise DataError(f"{err}; to backtest after the loaded data, pass --end DATE (with a --data-dir "
                            "that holds the newer prices)") from None
        raise
    context = MarketContext.from_store(store, data_cfg)
    periods = context.periods
    costs = {k: (float(v[0]), float(v[1])) for k, v in data_cfg.costs_bps.items()}
    log(f"backtesting {span_start} .. {span_end} on {store.n_assets} assets, {periods} periods a year")

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # small BLAS problems: threads only fight over the cores
        agents, bench_results = _simulate(runs, store, experiment, eval_cfg, context.risk_free, span_start,
                                          span_end, costs, onnx, log, device)

    timings["simulate"] = time.perf_counter() - t0 - timings["load_and_features"]
    timings.update({f"strategy:{r.name}": r.seconds for r in agents + bench_results})
    tick = tuple(store.tickers)
    agent_rows = [strategy_row(a, context, tick, "agent") for a in agents]
    bench_rows = [strategy_row(b, context, tick, "benchmark") for b in bench_results]
    rows = list(agent_rows)
    if len(agent_rows) > 1:
        rows.append(reports.aggregate_rows(agent_rows, f"Agent mean ± sd over {len(agent_rows)} runs"))
    rows += bench_rows
    sharpe = [row["metrics"]["sharpe"] for row in bench_rows]
    best_i = int(np.nanargmax(sharpe)) if np.isfinite(sharpe).any() else 0
    best = bench_results[best_i]

    significance = []
    for run, agent in zip(runs, agents):
        n_trials, trials_path, trial_sharpes = find_tuning_trials(run.path, run.path.parent)
        source_label = f"from {trials_path}" if trials_path else "no tuning study found"
        trials_var = float(np.var(trial_sharpes, ddof=1)) / periods if len(trial_sharpes) > 1 else None
        significance.append(significance_entry(agent, best, best.label, context, eval_cfg, n_trials,
                                               source_label, trials_var))

    annualisation = ("the portfolio holds assets quoted 7 days a week" if periods == pm.PERIODS_7D
                     else "weekday-only assets; weekend days folded into the previous weekday")
    notes = [
        "Every strategy runs through CryptoHedgeFundEnv with the run's cost model (fees and square-root "
        "slippage per asset class) on the same decision days; closed or unlisted assets cannot be traded.",
        "Benchmarks run without margin and drawdown control; buy-and-hold benchmarks have the per-asset "
        f"cap lifted; rebalanced benchmarks trade every {eval_cfg.rebalance_every} day(s) on days when every "
        f"listed asset can trade, with estimators over the trailing {eval_cfg.lookback} days only.",
    ]
    notes += data_notes
    if store.synthetic:
        notes.insert(0, "SYNTHETIC data: a simulated market, not real prices.")
    policy_format = None
    if runs:
        policy_format = f"ONNX ({onnx}, run with onnxruntime)" if onnx else "PyTorch (policy.pth)"
    report = {
        "source": store.source, "synthetic": store.synthetic,
        "source_label": reports.SYNTHETIC_LABEL if store.synthetic else store.source,
        "warnings": warnings,
        "span": {"start": str(bench_results[0].dates[0]), "end": span_end,
                 "n_days": int(bench_results[0].dates.shape[0])},
        "training_span": {"start": data_cfg.start, "end": data_cfg.train_end,
                          "source": runs[0].manifest.get("source") if runs else None} if runs else None,
        "data_loaded": {"start": str(store.dates[0]), "end": str(store.dates[-1])},
        "periods_per_year": periods, "annualisation": annualisation, "risk_free": context.risk_free_label,
        "tickers": list(tick), "categories": list(context.categories),
        "runs": [str(r.path) for r in runs], "onnx": str(onnx) if onnx else None, "policy_format": policy_format,
        "strategies": rows, "best_benchmark": best.name, "significance": significance,
        "insights": reports.allocation_insights(agents + bench_results, context), "notes": notes,
        "evaluation_config": dataclasses.asdict(eval_cfg),
    }
    timings["metrics_and_significance"] = time.perf_counter() - t0 - sum(
        v for k, v in timings.items() if not k.startswith("strategy:"))
    t_rep = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.md", reports.markdown_report(report))
    focus = agents[0] if agents else best
    reports.write_returns_csv(out / "returns.csv", agents + bench_results)
    reports.write_weights_csv(out / "weights.csv", focus, tick)
    for extra in agents[1:]:
        reports.write_weights_csv(out / f"weights_{extra.name}.csv", extra, tick)
    report["files"] = {"returns.csv": "daily net simple return per strategy (column = strategy name)",
                       "weights.csv": f"daily post-trade weights of {focus.label} per ticker and CASH"}
    title = f"{report['source_label']}, {report['span']['start']} .. {span_end}"
    reports.write_plotly(out / "charts.html", agents + bench_results, focus, context.categories, tick, title)
    if tearsheet:
        if agents:
            other, other_label = best, best.label
        else:  # benchmarks only: the best benchmark against equal-weight buy & hold
            other = next((b for b in bench_results if b.name == "equal_weight_bh" and b is not best),
                         bench_results[0] if bench_results[0] is not best else bench_results[-1])
            other_label = other.label
        reports.write_quantstats(out / "tearsheet.html", focus, other, other_label, context, title)
    timings["reports"] = time.perf_counter() - t_rep
    timings["total"] = time.perf_counter() - t0
    report["timings_s"] = timings
    write_json(out / "metrics.json", report)
    log(f"wrote {out}/metrics.json, metrics.md, returns.csv, weights.csv, charts.html"
        f"{', tearsheet.html' if tearsheet else ''} in {time.perf_counter() - t0:.1f} s")
    return report


def load_config(path: Path) -> Any:
    """An ``ExperimentConfig`` from a YAML; sections other than ``data`` may be missing (defaults)."""
    from data.config import load_yaml
    from training.config import SECTIONS, from_raw

    raw = load_yaml(str(path))
    if "data" not in raw:
        raise DataError(f"config file '{path}' has no 'data' section")
    raw = {**{s: {} for s in SECTIONS}, **raw}
    return from_raw(raw, where=f"config file '{path}'")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    from agents.common import device_argument

    p = argparse.ArgumentParser(prog="backtester.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="extend", nargs="+", default=[], metavar="RUN_DIR",
                   help="training run directory (repeat or list several for seeds)")
    p.add_argument("--onnx", default=None, help="exported ONNX policy to run instead of policy.pth")
    p.add_argument("--start", default=None, help="first decision day (ISO); default: day after data.train_end")
    p.add_argument("--end", default=None,
                   help="last day (ISO); default: data.end. A later date extends the load beyond the run's "
                        "data.end (use with a newer --data-dir); normalisation stays the run's")
    p.add_argument("--source", choices=("yfinance", "csv", "synthetic"), default=None, help="override data.source")
    p.add_argument("--data-dir", default=None, help="folder of yfinance-layout CSVs for --source csv")
    p.add_argument("--config", default=None,
                   help="YAML config: the experiment when no --run is given (default configs/quickstart.yaml); "
                        "with --run only its 'evaluation' section is used and its universe must match")
    p.add_argument("--no-tearsheet", action="store_true", help="skip the quantstats HTML tear sheet")
    p.add_argument("--device", type=device_argument, default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--out", default=None,
                   help="report directory (default reports/<first run's folder name>, or reports/benchmarks)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 with one sentence on stderr for bad input)."""
    args = _parse_args(argv)
    try:
        if args.onnx and len(args.run) != 1:
            raise DataError("--onnx needs exactly one --run (its config and manifest describe the policy)")
        runs = [read_run(r) for r in expand_runs(args.run)]
        config = Path(args.config) if args.config else (None if runs else DEFAULT_CONFIG)
        given = load_config(config) if config else None
        if runs:
            experiment = runs[0].experiment
            for run in runs:
                theirs = run.experiment.data.build_universe().tickers
                if given is not None and given.data.build_universe().tickers != theirs:
                    raise DataError(f"run directory '{run.path}' is from another universe than config '{config}'")
            eval_cfg = load_eval_config(given.extra if given else experiment.extra,
                                        given.data if given else experiment.data)
        else:
            experiment, eval_cfg = given, load_eval_config(given.extra, given.data)
        out = Path(args.out) if args.out else Path("reports") / (runs[0].path.name if runs else "benchmarks")
        backtest(runs, experiment, out, args.start, args.end, args.source, args.data_dir,
                 Path(args.onnx) if args.onnx else None, eval_cfg, tearsheet=not args.no_tearsheet,
                 device=args.device)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
