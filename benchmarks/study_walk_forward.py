"""Real-data walk-forward study: PPO-Transformer against every benchmark of the backtester.

Paper universe (configs/paper.yaml) on the yfinance CSVs in ``/work/shared/data/market`` (``--source csv``),
expanding folds validating 2021, 2022 and 2023, several seeds per fold. Every PPO run is a full
``training.walk_forward`` job (feature store refit on the fold's training span, leak checks on the manifests).
The benchmarks run through the same environment, on the same validation days, with the same costs, via
``evaluation.backtester.run_benchmarks``; the agents are re-run through ``evaluation.backtester.run_episode``
so every row is measured by the one metrics module (``training.metrics`` via ``training.rollout.strategy_metrics``,
the code training's validation and the backtester use), and the training layer's own validation Sharpe is
cross-checked against it.

Columns: net Sharpe of the excess daily return over the T-bill leg (BIL), annualised over 365 days; max
drawdown (a return: negative = loss); mean daily turnover (sum of |risky weight change|, fraction of NAV); total return.
The PPO row is the mean ± sd over seeds; "best seed" is the seed selected on that same validation year
(optimistic by construction: selection and measurement on one span). On the synthetic market (``--source
synthetic``) every strategy also gets a stress response: the regime response on the market's hidden stress state
(``probe_synthetic_regime.with_stress_response``), the measure of hedging the planted regime that a control needs.

    python benchmarks/study_walk_forward.py [--timesteps 8192] [--seeds 0 1 2 3 4] [--workers 2]
        [--rewards log_return risk_adjusted dsr] [--full-size] [--set SECTION.KEY=VALUE] [--prior-trials 19]

One walk-forward per reward (``env.reward``; runs in ``--out/<reward>``). The best reward is chosen by the
pre-declared rule "highest mean PPO validation Sharpe over all folds and seeds" -- selection and measurement on
the same folds, so its rows are optimistic; the deflated Sharpe ratio (Bailey & Lopez de Prado) of the best
reward's seed-mean fund in each fold counts every configuration tried on these folds (``--prior-trials`` before
this call, plus this call's rewards) and uses the variance of the rewards' per-day Sharpes as the trials' variance.

Writes ``benchmarks/results/<name>.json``, ``<name>.md`` (the tables with bootstrap intervals and the deflated
Sharpe) and ``<name>_weights_2022.png`` (the best reward's seed-mean weights by category through the 2022 fold,
the volatile days shaded), and prints the table. Budget knobs (window, model size, steps) are printed with the
results: the paper's config trains for 200k steps with a 60-day window; a 2-core CI box cannot, so the study uses
the reduced settings in ``STUDY_OVERRIDES`` unless ``--full-size`` (the paper config as is: window 60, d_model
64, n_steps 256 x 8 envs, batch 256, 10 epochs) is given.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import DEFAULT_DATA_DIR
from probe_synthetic_regime import stress_days, with_stress_response
from study_portfolio_gradient import CONFIGURATIONS_SO_FAR as PG_CONFIGURATIONS

from evaluation.benchmarks import BENCHMARKS as EVAL_BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
#: The study's short labels for the backtester's benchmarks (the rest keep ``evaluation.benchmarks``' label).
SHORT_LABELS: dict[str, str] = {"equal_weight_bh": "equal-weight B&H", "equal_weight": "equal weight rebal.",
                                "vol_target": "vol-target EW 20%", "min_variance": "minimum variance"}
#: Every benchmark of the backtester (``evaluation.benchmarks.BENCHMARKS``, the one registry), with its table
#: label, run through the same env and costs on every fold.
BENCHMARKS: tuple[tuple[str, str], ...] = tuple((name, SHORT_LABELS.get(name, b.label))
                                              for name, b in EVAL_BENCHMARKS.items())
#: The rules in the detailed per-fold table: the classical references and the volatility-targeted equal weight
#: (the classical rule for the hedging behaviour the agent is meant to learn); every other benchmark is in the
#: compact table of every benchmark.
CORE: tuple[str, ...] = ("equal_weight_bh", "equal_weight", "vol_target", "min_variance")

STUDY_OVERRIDES: dict[str, Any] = {
    "env.window": 30,
    "agent.ppo.d_model": 32,
    "agent.ppo.n_heads": 4,
    "agent.ppo.dim_feedforward": 64,
    "agent.ppo.n_steps": 64,
    "agent.ppo.batch_size": 64,
    "agent.ppo.n_epochs": 4,
    "training.n_envs": 4,
    "training.checkpoint_every": 0,
    "training.eval_every": 0,
}
#: Configurations evaluated on these validation folds before: the 8k and 65k-step runs of this study, the
#: paper-size run's 3 rewards, and study_portfolio_gradient.py's (its ledger plus its plain-PPO baseline).
#: The committed paper-size run counted 19 before it (the ledger then held 17).
#: Residual-policy runs (``env.action_prior``) evaluated on these folds, each one configuration.
RESIDUAL_RUNS: tuple[str, ...] = ("vol_target prior 20%, floor 2%, dsr, 16,384 steps",
                                  "the same, 65,536 steps", "the same, 16,384 steps, init_log_std -2",
                                  "the same as the first, reward log_return", "the same as the first, reward risk_adjusted")
#: Exposure-head runs (``agent.ppo.action_head: exposure``) evaluated on these folds, each one configuration
#: (docs/results/study_walk_forward_exposure_{mlp_w1,prior,transformer}.*: each declared before it ran, after its
#: synthetic control).
EXPOSURE_RUNS: tuple[str, ...] = ("exposure head, per-asset MLP (d_model 16) on the day's features (window 1), "
                                  "warm start risk aversion 3 + PPO 16,384 steps, log_return",
                                  "the same as a residual on the vol-target prior 20%, no holdout, warm start risk "
                                  "aversion 1 + PPO 16,384 steps, log_return",
                                  "the same with the Transformer encoder (window 1, d_model 16: attention across the "
                                  "day's asset and cash tokens)")
PRIOR_TRIALS = 2 + 3 + PG_CONFIGURATIONS + len(RESIDUAL_RUNS) + len(EXPOSURE_RUNS)
#: What the agent's seed-mean fund is compared with (bootstrap intervals): the rebalanced and buy-and-hold equal
#: weight, the 20% vol-target rule and the vol-target rule at the fund's own average risky exposure.
COMPARED: tuple[tuple[str, str], ...] = (("equal_weight_bh", "equal-weight B&H"), ("equal_weight", "equal weight rebal."),
                                         ("vol_target", "vol-target EW 20%"),
                                         ("vol_target_matched", "vol-target EW, same risky exposure"))
#: Rules whose annual volatility is below this in some fold (minimum variance sits in T-bills and USDT) get no
#: Sharpe-difference interval: their excess return over the T-bill leg is about zero.
MIN_BOOTSTRAP_VOL = 0.01
REWARDS = ("log_return", "risk_adjusted", "dsr")
#: With ``env.action_prior`` set the agent is a residual policy; its prior alone (zero tilt, what the agent
#: starts from) is then one more row, so that what training added is measured against it.
PRIOR_ALONE = ("prior_alone", "its prior alone (zero tilt)")


def rules_of(rows: list[dict[str, Any]], core: bool = False) -> tuple[tuple[str, str], ...]:
    """The rules next to PPO in this study's rows: ``BENCHMARKS`` (only the ``CORE`` ones if ``core``), plus
    ``PRIOR_ALONE`` for a residual policy."""
    rules = tuple(r for name in CORE for r in BENCHMARKS if r[0] == name) if core else BENCHMARKS
    return rules + ((PRIOR_ALONE,) if rows and PRIOR_ALONE[0] in rows[0] else ())


def compared_of(rows: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """``COMPARED`` (the bootstrap columns), plus ``PRIOR_ALONE`` for a residual policy."""
    return COMPARED + ((PRIOR_ALONE,) if rows and PRIOR_ALONE[0] in rows[0] else ())


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Walk-forward study on real data (paper universe).")
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--source", choices=("csv", "synthetic"), default="csv", help="csv = real data (default)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--years", type=int, nargs="+", default=[2021, 2022, 2023])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--rewards", nargs="+", choices=REWARDS, default=["log_return"],
                   help="env.reward values, one walk-forward each (the issue's study: all three)")
    p.add_argument("--timesteps", type=int, default=8192, help="PPO env steps per run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--full-size", action="store_true", help="use the paper config as is (no STUDY_OVERRIDES)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    p.add_argument("--prior-trials", type=int, default=None,
                   help="configurations already evaluated on these folds (for the deflated Sharpe; default: the "
                   "real-data ledger PRIOR_TRIALS with --source csv, 0 on the synthetic market)")
    p.add_argument("--out", default=str(ROOT / "runs" / "study_walk_forward"))
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--results-name", default="study_walk_forward", help="file stem under --results-dir")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate the runs already in --out/<reward> (their summary.json) instead of training them")
    args = p.parse_args(argv)
    if args.prior_trials is None:  # the ledger counts configurations tried on the real folds only
        args.prior_trials = PRIOR_TRIALS if args.source == "csv" else 0
    return args


def agg(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from data.atomic_files import atomic_write_text, write_json
    from data.data_loader import load_market
    from training.config import DataError, load_experiment, parse_set_option
    from training.walk_forward import format_table, walk_forward

    try:
        if args.prior_trials < 0:
            raise DataError(f"--prior-trials must be non-negative, got {args.prior_trials}")
        overrides = {} if args.full_size else dict(STUDY_OVERRIDES)
        overrides.update(dict(parse_set_option(item) for item in args.set))
        data_dir = args.data_dir if args.source == "csv" else None
        overrides.update({"data.source": args.source, "data.data_dir": data_dir,
                          "training.total_timesteps": args.timesteps})
        cfgs = {r: load_experiment(args.config, {**overrides, "env.reward": r}) for r in args.rewards}
        out = Path(args.out)
        t0 = time.perf_counter()
        summaries = {}
        for reward, cfg in cfgs.items():
            if args.reuse:
                summaries[reward] = json.loads((out / reward / "summary.json").read_text())
            else:
                print(f"reward {reward}: {len(args.years) * len(args.seeds)} runs", flush=True)
                summaries[reward] = walk_forward(cfg, out / reward, args.years, args.seeds, source=args.source,
                                                 data_dir=data_dir, workers=args.workers)
            print(f"reward {reward}\n{format_table(summaries[reward])}", flush=True)
        train_minutes = None if args.reuse else (time.perf_counter() - t0) / 60
        cfg0 = next(iter(cfgs.values()))
        market = load_market(cfg0.data, source=args.source, data_dir=data_dir, verbose=False)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, series = evaluate(args, cfgs, market, out)
    run_minutes = sum(e["train_seconds"] for e in rows) / 60
    best = max(args.rewards, key=lambda r: np.mean([m["sharpe"] for e in rows for m in e["ppo"][r].values()]))
    report = summarise(args, rows, series, best)
    table = text_table(args, rows, best, report)
    print()
    print(table)
    print(f"\n{len(cfgs) * len(args.years) * len(args.seeds)} PPO runs, {args.timesteps} steps each, "
          + ("reused, not retrained" if train_minutes is None else f"{train_minutes:.1f} min of training"))
    res_dir = Path(args.results_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    figure = res_dir / f"{args.results_name}_weights_2022.png"
    fig_fold = 2022 if 2022 in series else rows[-1]["year"]
    plot_weights(series[fig_fold], best, figure, "synthetic" if args.source == "synthetic" else "real data")
    result = {
        "data": data_label(args),
        "settings": {"config": args.config, "overrides": overrides,
                     "years": args.years, "seeds": args.seeds, "rewards": args.rewards,
                     "timesteps": args.timesteps, "workers": args.workers, "train_minutes": train_minutes,
                     "run_train_minutes": run_minutes,
                     "full_size": args.full_size, "source": args.source, "data_dir": data_dir,
                     "tickers": list(market.tickers), "dropped": list(market.dropped)},
        "best_reward": best, "folds": rows, "report": report,
        "walk_forward_summaries": summaries, "table": table, "figure": figure.name,
        "env": {r: dataclasses.asdict(c.env) for r, c in cfgs.items()},
    }
    write_json(res_dir / f"{args.results_name}.json", result)
    atomic_write_text(res_dir / f"{args.results_name}.md", markdown(args, rows, best, report, train_minutes, run_minutes))
    print(f"wrote {res_dir / args.results_name}.json, .md and {figure.name}")
    return 0


def data_label(args: argparse.Namespace) -> str:
    from evaluation.reports import SYNTHETIC_LABEL

    if args.source == "synthetic":
        return SYNTHETIC_LABEL
    return f"REAL daily prices (csv: {args.data_dir}, to 2023-12-31)"


def evaluate(args: argparse.Namespace, cfgs: dict[str, Any], market: Any,
             out: Path) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """Every run and benchmark re-run through the evaluation layer, per fold.

    Returns the fold rows (metrics per reward and seed, benchmarks, validation-Sharpe gaps) and, per fold, the
    series the summary needs: dates, risk-free, volatility, categories, seed-mean fund returns and weights per
    reward, benchmark returns and weights.
    """
    from agents.io import load_agent
    from data.feature_engineering import build_feature_store
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from evaluation.backtester import run_benchmarks
    from evaluation.benchmarks import EvaluationConfig
    from training.config import costs_of
    from training.metrics import sharpe_ratio_rows
    from training.rollout import MarketContext, run_episode, torch_policy
    from training.walk_forward import expanding_folds

    cfg0 = next(iter(cfgs.values()))
    import torch

    torch.set_num_threads(cfg0.training.torch_threads)  # the runs' own thread count: their validation to the bit
    eval_cfg = EvaluationConfig(tbill=cfg0.data.risk_free or EvaluationConfig.tbill)
    rows, series = [], {}
    for fold in expanding_folds(cfg0.data.start, cfg0.data.end, args.years):
        store = build_feature_store(market, fold.train_end, clip=cfg0.data.clip)
        context = MarketContext.from_store(store, cfg0.data)
        # on the synthetic market every strategy is also scored on its hidden regime
        stress = stress_days(market, store, cfg0.data.seed) if args.source == "synthetic" else None
        costs = costs_of(cfg0)
        entry: dict[str, Any] = {"year": fold.year, "train": f"{fold.train_start}..{fold.train_end}",
                                 "validate": f"{fold.val_start}..{fold.val_end}",
                                 "risk_free": context.risk_free_label, "ppo": {}, "validation_sharpe_gap": {}, "train_seconds": 0.0}
        funds: dict[str, dict[str, np.ndarray]] = {}
        for reward, cfg in cfgs.items():
            entry["ppo"][reward], returns, weights, gap = {}, [], [], 0.0
            for seed in args.seeds:
                run = out / reward / f"fold_{fold.year}" / f"seed_{seed}"
                agent = load_agent(run)
                res = run_episode(CryptoHedgeFundEnv.from_store(store, cfg.env, fold.val_start, fold.val_end, costs),
                                  torch_policy(agent.policy_module()), "ppo", "PPO-Transformer")
                m = with_stress_response(res, context, stress)
                own = json.loads((run / "validation.json").read_text())
                entry["train_seconds"] += own.get("train_seconds", 0.0)  # the run's own training time
                gap = max(gap, abs(own["sharpe"] - m["sharpe"]))
                entry["ppo"][reward][str(seed)] = m
                returns.append(res.returns)
                weights.append(res.weights)
            entry["validation_sharpe_gap"][reward] = gap
            rf = context.risk_free[context.day_index(res.dates)]
            funds[reward] = {"returns": np.mean(returns, axis=0), "weights": np.mean(weights, axis=0),
                             "seed_sharpes_per_day": sharpe_ratio_rows(np.asarray(returns) - rf, 1).tolist()}
        benches = {}
        if cfg0.env.action_prior != "none":  # the residual policy's starting point: every score 1, i.e. p_t
            res = run_episode(CryptoHedgeFundEnv.from_store(store, cfg0.env, fold.val_start, fold.val_end, costs),
                              lambda t, obs, w: np.ones_like(w), *PRIOR_ALONE)
            entry[PRIOR_ALONE[0]] = with_stress_response(res, context, stress)
            benches[PRIOR_ALONE[0]] = {"returns": res.returns, "weights": res.weights}
        for res in run_benchmarks(store, cfg0.env, eval_cfg, context.risk_free, fold.val_start, fold.val_end, costs,
                                  names=[name for name, _ in BENCHMARKS]):
            entry[res.name] = with_stress_response(res, context, stress)
            benches[res.name] = {"returns": res.returns, "weights": res.weights}
        # the vol-target rule at each reward's own average risky exposure (the like-for-like comparison)
        entry["vol_target_matched"] = {}
        for reward, fund in funds.items():
            exposure = risky_exposure(fund["weights"], context.categories)
            target, match = matched_vol_target(exposure, context, vol_target_runner(
                store, cfg0.env, eval_cfg, context.risk_free, fold.val_start, fold.val_end, costs))
            entry["vol_target_matched"][reward] = {
                "vol_target": target, "fund_exposure": exposure,
                "rule_exposure": risky_exposure(match.weights, context.categories),
                "metrics": with_stress_response(match, context, stress)}
            benches[f"vol_target_matched_{reward}"] = {"returns": match.returns, "weights": match.weights}
        idx = context.day_index(res.dates)
        series[fold.year] = {"dates": res.dates, "rf": context.risk_free[idx], "volatility": context.volatility[idx],
                             "categories": tuple(context.categories), "periods": context.periods,
                             "funds": funds, "benchmarks": benches}
        rows.append(entry)
    return rows, series


def risky_exposure(weights: np.ndarray, categories: tuple[str, ...] | list[str]) -> float:
    """Mean over days of the share of NAV outside the stable category and cash; weights (T, N+1), cash last."""
    from training.metrics import defensive_share

    return float(np.mean(1.0 - defensive_share(weights, tuple(categories))))


def vol_target_runner(store: Any, env_cfg: Any, eval_cfg: Any, rf: np.ndarray, start: str, end: str,
                      costs: Any) -> Any:
    """``run(target) -> StrategyResult`` of the vol-target benchmark at annual target ``target`` over [start, end]."""
    from evaluation.backtester import run_benchmarks

    def run(target: float) -> Any:
        cfg = dataclasses.replace(eval_cfg, vol_target=target)
        return run_benchmarks(store, env_cfg, cfg, rf, start, end, costs, names=["vol_target"])[0]

    return run


def matched_vol_target(exposure: float, context: Any, run: Any, iters: int = 14) -> tuple[float, Any]:
    """The vol-target rule's annual target (and its result) whose mean risky exposure equals ``exposure``.

    ``run(target) -> StrategyResult``. The exposure rises with the target (the sleeve scale is
    ``min(1, target / vol)``), so a bisection on log(target) in [1%, 400%] finds it; an exposure above the
    uncapped rule's (equal weight's) returns the uncapped rule.
    """
    lo, hi = np.log(0.01), np.log(4.0)
    top = run(float(np.exp(hi)))
    if risky_exposure(top.weights, context.categories) <= exposure:
        return float(np.exp(hi)), top
    best = (float("inf"), float(np.exp(hi)), top)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        res = run(float(np.exp(mid)))
        gap = risky_exposure(res.weights, context.categories) - exposure
        if abs(gap) < best[0]:
            best = (abs(gap), float(np.exp(mid)), res)
        lo, hi = (mid, hi) if gap < 0 else (lo, mid)
    return best[1], best[2]


def summarise(args: argparse.Namespace, rows: list[dict[str, Any]], series: dict[int, dict[str, Any]],
              best: str) -> dict[str, Any]:
    """Bootstrap intervals of every reward's seed-mean fund against the benchmarks (per fold and the mean over
    folds), the best reward's deflated Sharpe per fold, and the issue's goals checked."""
    from evaluation import significance as sig

    n_trials = args.prior_trials + len(args.rewards)
    report: dict[str, Any] = {"n_trials": n_trials, "ci": {}, "mean_ci": {}, "dsr": {}, "goals": {}}
    for reward in args.rewards:
        report["ci"][reward], report["mean_ci"][reward] = {}, {}
        for name, _ in rules_of(rows):
            if any(e[name]["annual_volatility"] < MIN_BOOTSTRAP_VOL for e in rows):
                continue  # a T-bill-like rule: its excess Sharpe is a ratio of float residues
            pairs = []
            for e in rows:
                s = series[e["year"]]
                a, b = s["funds"][reward]["returns"] - s["rf"], s["benchmarks"][name]["returns"] - s["rf"]
                iv = sig.sharpe_difference_interval(a, b, s["periods"], n_boot=2000, seed=e["year"])
                report["ci"][reward].setdefault(str(e["year"]), {})[name] = dataclasses.asdict(iv)
                pairs.append((a, b))
            iv = sig.mean_sharpe_difference_interval(pairs, series[rows[0]["year"]]["periods"], n_boot=2000, seed=7)
            report["mean_ci"][reward][name] = dataclasses.asdict(iv)
        for e in rows:  # against the vol-target rule at the fund's own risky exposure
            s = series[e["year"]]
            a, b = s["funds"][reward]["returns"] - s["rf"], s["benchmarks"][f"vol_target_matched_{reward}"]["returns"]
            iv = sig.sharpe_difference_interval(a, b - s["rf"], s["periods"], n_boot=2000, seed=e["year"])
            report["ci"][reward][str(e["year"])]["vol_target_matched"] = dataclasses.asdict(iv)
    for e in rows:
        s = series[e["year"]]
        # the trials' variance: the per-day Sharpes of every (reward, seed) run of this fold
        per_day = [x for r in args.rewards for x in s["funds"][r]["seed_sharpes_per_day"]]
        # seeds of one configuration barely differ, so their spread understates that of the configurations
        # counted in n_trials: use the larger of it and a Sharpe estimate's sampling variance (the lower DSR)
        excess = s["funds"][best]["returns"] - s["rf"]
        var = float(np.var(per_day, ddof=1)) if len(per_day) > 1 else 0.0
        dsr, sr0 = min(sig.deflated_sharpe_ratio(excess, n_trials, var), sig.deflated_sharpe_ratio(excess, n_trials))
        psr = sig.probabilistic_sharpe_ratio(excess)
        report["dsr"][str(e["year"])] = {"dsr": dsr, "sr0_per_day": sr0, "psr": psr, "runs_sharpe_variance": var}
    ppo = {e["year"]: list(e["ppo"][best].values()) for e in rows}
    goals = {
        "active_share_ge_0.20": {str(y): agg([m["active_share"] for m in v])[0] for y, v in ppo.items()},
        "regime_response_ge_+0.15": {str(y): agg([m["regime_response"] for m in v])[0] for y, v in ppo.items()},
    }
    if 2022 in ppo:
        e22 = next(e for e in rows if e["year"] == 2022)
        dd = agg([m["max_drawdown"] for m in ppo[2022]])[0]
        goals["drawdown_2022_vs_ew_bh"] = {"ppo": dd, "ew_bh": e22["equal_weight_bh"]["max_drawdown"],
                                           "ratio": dd / e22["equal_weight_bh"]["max_drawdown"], "goal": 0.6}
    goals["mean_sharpe_minus_ew_rebalanced"] = report["mean_ci"][best]["equal_weight"]
    goals["sharpe_minus_vol_target_at_same_exposure"] = {
        str(e["year"]): report["ci"][best][str(e["year"])]["vol_target_matched"] for e in rows}
    if "stress_response" in ppo[rows[0]["year"]][0]:  # synthetic: the hidden regime is known
        goals["stress_response_synthetic"] = {str(y): agg([m["stress_response"] for m in v])[0] for y, v in ppo.items()}
    report["goals"] = goals
    return report


def text_table(args: argparse.Namespace, rows: list[dict[str, Any]], best: str, report: dict[str, Any]) -> str:
    head = (f"{'fold':>5} {'strategy':<30} {'net Sharpe':>14} {'max DD':>8} {'turnover/d':>10} {'total ret':>10} "
            f"{'active sh.':>10} {'regime resp.':>12}")
    lines = [head, "-" * len(head)]
    for e in rows:
        for reward in args.rewards:
            ppo = list(e["ppo"][reward].values())
            s_m, s_s = agg([m["sharpe"] for m in ppo])
            label = f"PPO {reward}{' (best)' if reward == best else ''}"
            lines.append(f"{e['year']:>5} {label:<30} {s_m:>8.2f}±{s_s:<5.2f} "
                         f"{agg([m['max_drawdown'] for m in ppo])[0]:>8.1%} {agg([m['turnover'] for m in ppo])[0]:>10.4f} "
                         f"{agg([m['total_return'] for m in ppo])[0]:>10.1%} "
                         f"{agg([m['active_share'] for m in ppo])[0]:>10.3f} "
                         f"{agg([m['regime_response'] for m in ppo])[0]:>+12.3f}")
        for name, label in rules_of(rows, core=True):
            m = e[name]
            lines.append(f"{'':>5} {label:<30} {m['sharpe']:>8.2f}{'':<6} {m['max_drawdown']:>8.1%} "
                         f"{m['turnover']:>10.4f} {m['total_return']:>10.1%} {m['active_share']:>10.3f} "
                         f"{m['regime_response']:>+12.3f}")
        for reward in args.rewards:
            vm = e["vol_target_matched"][reward]
            m = vm["metrics"]
            label = f"vol-target {vm['vol_target']:.0%} (= {reward})"
            lines.append(f"{'':>5} {label:<30} {m['sharpe']:>8.2f}{'':<6} {m['max_drawdown']:>8.1%} "
                         f"{m['turnover']:>10.4f} {m['total_return']:>10.1%} {m['active_share']:>10.3f} "
                         f"{m['regime_response']:>+12.3f}")
        ci = report["ci"][best][str(e["year"])]
        d = report["dsr"][str(e["year"])]
        lines.append(f"{'':>5} PPO {best} seed-mean fund minus " + "; ".join(
            f"{label}: {ci[n]['estimate']:+.2f} [{ci[n]['low']:+.2f}, {ci[n]['high']:+.2f}]"
            for n, label in compared_of(rows) if n in ci) + f"; deflated Sharpe {d['dsr']:.2f} ({report['n_trials']} trials)")
    lines.append("-" * len(head))
    for reward in args.rewards:
        mc = report["mean_ci"][reward]
        lines.append(f"{'all':>5} PPO {reward}: mean Sharpe over folds minus " + "; ".join(
            f"{label}: {mc[n]['estimate']:+.2f} [{mc[n]['low']:+.2f}, {mc[n]['high']:+.2f}]"
            for n, label in rules_of(rows, core=True) if n in mc))
    lines += ["", f"Every benchmark of the backtester (Sharpe / max drawdown / regime response per fold; PPO {best} "
              "seed-mean fund minus it, mean Sharpe over folds):"]
    lines += [" | ".join(cells) for cells in every_benchmark_cells(rows, best, report)]
    lines.append("(Sharpe differences: paired stationary bootstrap, 2,000 resamples, 95% percentile interval)")
    gaps = max(g for e in rows for g in e["validation_sharpe_gap"].values())
    lines.append(f"training-layer validation Sharpe vs evaluation-layer re-run: max |difference| {gaps:.2e}")
    return "\n".join(lines)


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]], best: str, report: dict[str, Any],
             train_minutes: float | None, run_minutes: float) -> str:
    """The study's markdown: ``train_minutes`` is this call's wall time of training (None: runs reused),
    ``run_minutes`` the runs' own training time summed (their ``validation.json`` ``train_seconds``)."""
    out = [f"# Walk-forward study: {data_label(args)}", "",
           f"Rewards {', '.join(args.rewards)}; seeds {args.seeds}; {args.timesteps:,} env steps per run; "
           f"{'paper config as is' if args.full_size else 'reduced STUDY_OVERRIDES'}"
           + (f", overrides {args.set}" if args.set else "")
           + (f"; {train_minutes:.1f} min of training" if train_minutes is not None else "; runs reused")
           + f" ({run_minutes:.1f} min summed over the runs' own training time).",
           f"Best reward by mean validation Sharpe over folds and seeds: **{best}** (chosen on these folds: the "
           f"deflated Sharpe counts {report['n_trials']} configurations).", "",
           "| fold | strategy | net Sharpe | max drawdown | turnover / day | total return | active share | "
           "regime response | hedge response |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in rows:
        for reward in args.rewards:
            ppo = list(e["ppo"][reward].values())
            s_m, s_s = agg([m["sharpe"] for m in ppo])
            out.append(f"| {e['year']} | PPO {reward}{' (best)' if reward == best else ''} | {s_m:.2f} +- {s_s:.2f} | "
                       f"{agg([m['max_drawdown'] for m in ppo])[0]:.1%} | {agg([m['turnover'] for m in ppo])[0]:.3f} | "
                       f"{agg([m['total_return'] for m in ppo])[0]:.1%} | {agg([m['active_share'] for m in ppo])[0]:.3f} | "
                       f"{agg([m['regime_response'] for m in ppo])[0]:+.3f} | "
                       f"{agg([m['hedge_response'] for m in ppo])[0]:+.3f} |")
        matched = [(f"vol-target EW at PPO {r}'s risky exposure ({e['vol_target_matched'][r]['fund_exposure']:.0%}; "
                    f"target {e['vol_target_matched'][r]['vol_target']:.0%})", e["vol_target_matched"][r]["metrics"])
                   for r in args.rewards]
        for label, m in [(label, e[name]) for name, label in rules_of(rows, core=True)] + matched:
            out.append(f"| {e['year']} | {label} | {m['sharpe']:.2f} | {m['max_drawdown']:.1%} | {m['turnover']:.3f} | "
                       f"{m['total_return']:.1%} | {m['active_share']:.3f} | {m['regime_response']:+.3f} | "
                       f"{m['hedge_response']:+.3f} |")
    out += ["", f"PPO ({best}) seed-mean fund minus each benchmark, Sharpe difference with a 95% paired stationary-"
            "bootstrap interval, and the deflated Sharpe ratio (probability that the true Sharpe exceeds the best of "
            f"{report['n_trials']} unskilled trials):", "", "| fold | " + " | ".join(
                label for _, label in compared_of(rows)) + " | PSR | DSR |",
            "|---|" + "---:|" * (len(compared_of(rows)) + 2)]
    for e in rows:
        ci, d = report["ci"][best][str(e["year"])], report["dsr"][str(e["year"])]
        out.append(f"| {e['year']} | " + " | ".join(
            f"{ci[n]['estimate']:+.2f} [{ci[n]['low']:+.2f}, {ci[n]['high']:+.2f}]" for n, _ in compared_of(rows))
            + f" | {d['psr']:.2f} | {d['dsr']:.2f} |")
    out += ["", "Mean over the folds of the Sharpe difference (each fold bootstrapped on its own):", ""]
    for reward in args.rewards:
        mc = report["mean_ci"][reward]
        out.append(f"- PPO {reward}: " + "; ".join(
            f"{label} {mc[n]['estimate']:+.2f} [{mc[n]['low']:+.2f}, {mc[n]['high']:+.2f}]"
            for n, label in rules_of(rows, core=True) if n in mc))
    out += stress_lines(args, rows)
    cells = every_benchmark_cells(rows, best, report)
    out += ["", f"Every benchmark of the backtester through the same env and costs, on the same days (PPO {best}: "
            "its seed-mean fund; last column: PPO minus the rule, mean Sharpe difference over the folds with a 95% "
            "paired stationary-bootstrap interval, each fold bootstrapped on its own):", "",
            "| " + " | ".join(cells[0]) + " |", "|---|" + "---:|" * (len(cells[0]) - 1)]
    out += ["| " + " | ".join(c) + " |" for c in cells[1:]]
    return "\n".join(out) + "\n"


def stress_lines(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown of the stress response per fold (synthetic market only, else nothing): each reward's seed mean and
    the core rules, from the ``stress_response`` that ``evaluate`` adds to every row's metrics."""
    if "stress_response" not in next(iter(rows[0]["ppo"][args.rewards[0]].values())):
        return []
    rules = rules_of(rows, core=True)
    out = ["", "Stress response (SYNTHETIC market only): the regime response measured on the market's hidden stress "
           "state instead of the trailing-volatility days (stable + cash share on the decisions whose next-day return "
           "falls in stress, minus the share on the others):", "",
           "| fold | " + " | ".join([f"PPO {r}" for r in args.rewards] + [label for _, label in rules]) + " |",
           "|---|" + "---:|" * (len(args.rewards) + len(rules))]
    for e in rows:
        cells = [f"{agg([m['stress_response'] for m in e['ppo'][r].values()])[0]:+.3f}" for r in args.rewards]
        out.append(f"| {e['year']} | " + " | ".join(cells + [f"{e[n]['stress_response']:+.3f}" for n, _ in rules]) + " |")
    return out


def every_benchmark_cells(rows: list[dict[str, Any]], best: str, report: dict[str, Any]) -> list[list[str]]:
    """The compact table of every rule: a header, then per rule its Sharpe, max drawdown and regime response in
    each fold (``a / b / c``), its mean Sharpe over the folds and the best reward's mean difference to it."""
    years = " / ".join(str(e["year"]) for e in rows)
    cells = [["strategy", f"net Sharpe {years}", "mean Sharpe", f"max drawdown {years}",
              f"regime response {years}", f"PPO {best} minus it"]]

    def line(label: str, ms: list[dict[str, Any]], diff: str) -> list[str]:
        return [label, " / ".join(f"{m['sharpe']:.2f}" for m in ms), f"{np.mean([m['sharpe'] for m in ms]):.2f}",
                " / ".join(f"{m['max_drawdown']:.1%}" for m in ms),
                " / ".join(f"{m['regime_response']:+.2f}" for m in ms), diff]

    seed_mean = [{k: agg([m[k] for m in e["ppo"][best].values()])[0]
                  for k in ("sharpe", "max_drawdown", "regime_response")} for e in rows]
    cells.append(line(f"PPO {best} (mean of seeds)", seed_mean, ""))
    mc = report["mean_ci"][best]
    for name, label in rules_of(rows):
        iv = mc.get(name)
        diff = (f"{iv['estimate']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]" if iv
                else f"(volatility < {MIN_BOOTSTRAP_VOL:.0%}: excess return ~0)")
        cells.append(line(label, [e[name] for e in rows], diff))
    return cells


def plot_weights(s: dict[str, Any], best: str, path: Path, label: str) -> None:
    """The best reward's seed-mean weights by category, and the vol-target rule's, through one fold, with the
    volatile days (top decile of trailing volatility, the regime_response days) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.atomic_files import atomic_path
    from training.metrics import volatile_days, weight_by_category

    dates = np.asarray(s["dates"], dtype="datetime64[D]")
    vol = volatile_days(s["volatility"])
    panels = [(f"PPO-Transformer ({best}), seed mean", s["funds"][best]["weights"]),
              ("vol-target equal weight 20%", s["benchmarks"]["vol_target"]["weights"])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 6.5), sharex=True)
    for ax, (title, w) in zip(axes, panels):
        by_cat = weight_by_category(w, s["categories"])
        ax.stackplot(dates, *by_cat.values(), labels=list(by_cat), alpha=0.85)
        start = None
        for k in range(len(vol) + 1):  # shade each run of volatile days
            if k < len(vol) and vol[k] and start is None:
                start = k
            elif (k == len(vol) or not vol[k]) and start is not None:
                ax.axvspan(dates[start], dates[min(k, len(vol) - 1)], color="black", alpha=0.18, lw=0)
                start = None
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of NAV")
        ax.set_title(title, fontsize=10)
    axes[0].legend(loc="upper left", fontsize=8, ncol=5)
    fig.suptitle(f"Weights by category, validation year {str(dates[0])[:4]} ({label}); shaded: top-decile "
                 "trailing-volatility days", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
