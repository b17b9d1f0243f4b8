"""The second paper's Table 4 on crypto4: SAC-LSTM and DDPG-LSTM against Markowitz, equal weight and every
other benchmark of the backtester, on real daily prices.

Universe ``configs/crypto4.yaml`` (BTC, ETH, LTC, DOGE + cash). Spans: train ``data.start``..2021-12-31
(normalisation fitted there), validate 2022 (``validation.json`` of each run), test 2023 (never seen while
training or choosing anything). Training is ``training.train.train_seed_job`` (the ``train.py --seeds``
job) once per algorithm and seed; evaluation is the backtester's machinery: the run's policy through
``training.rollout.run_episode`` (as ``evaluation.backtester`` does), the benchmarks through
``evaluation.backtester.run_benchmarks`` with the same env, costs and days, every row through
``evaluation.backtester.strategy_row`` (so every number is ``training.metrics`` via
``training.rollout.strategy_metrics``; nothing is redefined here). Intervals: ``evaluation.significance``
(paired stationary bootstrap) for Sharpe(SAC) - Sharpe(X) and, with the same resampled days,
final value(SAC) - final value(X), X = Markowitz, equal weight (weekly rebalanced and buy & hold), DDPG.

    python benchmarks/study_crypto4.py [--seeds 0 1] [--timesteps 12288] [--full-size] [--workers 1]
        [--source csv|synthetic] [--data-dir DIR] [--set SECTION.KEY=VALUE ...] [--reuse]

``--full-size`` is the issue's size: 5 seeds x 100,000 steps per algorithm (hours on 2 cores). Writes
``benchmarks/results/study_crypto4.{json,md}`` and the convergence curves per episode of both algorithms,
``study_crypto4_curves.{csv,png}``; runs go to ``runs/study_crypto4/<algo>/seed_<s>``. The paper's own
Table 4 numbers are not in this repository: their column is left empty and says so.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
TRAIN_END, VAL_END = "2021-12-31", "2022-12-31"
TEST_START, TEST_END = "2023-01-01", "2023-12-31"
REDUCED_SEEDS, REDUCED_STEPS = [0, 1], 12_288
FULL_SEEDS, FULL_STEPS = [0, 1, 2, 3, 4], 100_000
#: The paper's Table 4 columns (``training.metrics`` names), then the behaviour diagnostics.
TABLE4 = (("final_value", "Final value", "{:.3f}"), ("mean_log_return", "Mean log ret", "{:.2e}"),
          ("std", "Std (daily)", "{:.4f}"), ("sharpe", "Sharpe", "{:.2f}"), ("sortino", "Sortino", "{:.2f}"),
          ("max_drawdown", "Max DD", "{:.1%}"), ("var_95", "VaR 95", "{:.2%}"), ("cvar_95", "CVaR 95", "{:.2%}"))
DIAGNOSTICS = (("active_share", "Active share", "{:.2f}"), ("regime_response", "Regime resp.", "{:+.2f}"))
#: What SAC is compared with, by name (benchmarks of ``evaluation.benchmarks.BENCHMARKS``, or ``ddpg``).
COMPARATORS = ("markowitz", "equal_weight", "equal_weight_bh", "ddpg")
PAPER_NOTE = ("The paper's own Table 4 numbers are not in this repository (docs/, README.md and the code were "
              "searched); the 'paper' column is left empty for them.")
CURVE_KEYS = ("reward", "nav", "sharpe", "max_drawdown", "active_share", "regime_response")


def study_overrides(args: argparse.Namespace, algo: str, seed: int) -> dict[str, Any]:
    """Dotted-key overrides of one run: the study's spans and budget on top of ``--set``."""
    from training.config import parse_set_option

    out: dict[str, Any] = dict(parse_set_option(item) for item in args.set)
    out.update({"training.algo": algo, "training.seed": seed, "training.total_timesteps": args.timesteps,
                "data.source": args.source, "data.train_end": TRAIN_END, "data.end": TEST_END,
                "training.val_end": VAL_END, "training.checkpoint_every": 0, "training.eval_every": 0})
    if args.source == "csv":
        out["data.data_dir"] = args.data_dir
    return out


def train_all(args: argparse.Namespace, out: Path) -> dict[tuple[str, int], Path]:
    """Train every (algo, seed) with ``train_seed_job`` (skipping finished runs with ``--reuse``)."""
    from training.parallel import run_jobs
    from training.train import train_seed_job

    runs, jobs = {}, []
    for algo in args.algos:
        for seed in args.seeds:
            run = out / algo / f"seed_{seed}"
            runs[(algo, seed)] = run
            if args.reuse and (run / "validation.json").is_file():
                done = json.loads((run / "validation.json").read_text(encoding="utf-8"))
                if done.get("global_step", 0) >= args.timesteps:
                    print(f"reusing {run} ({done['global_step']} steps)", flush=True)
                    continue
            jobs.append({"config_path": args.config, "overrides": study_overrides(args, algo, seed),
                         "out": str(run), "source": args.source,
                         "data_dir": args.data_dir if args.source == "csv" else None})
    print(f"training {len(jobs)} runs ({', '.join(args.algos)} x seeds {args.seeds}, {args.timesteps} steps each, "
          f"{args.workers} worker(s)) into {out}", flush=True)
    run_jobs(train_seed_job, jobs, workers=args.workers)
    return runs


def evaluate_span(runs: dict[tuple[str, int], Path], store: Any, context: Any, experiment: Any, eval_cfg: Any,
                  start: str, end: str) -> tuple[list[Any], list[Any]]:
    """Agents and benchmarks stepped through the same env, costs and days (the backtester's ``_simulate``)."""
    from agents.io import load_agent
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from evaluation.backtester import run_benchmarks
    from training.config import costs_of, load_experiment
    from training.rollout import run_episode, torch_policy

    costs = costs_of(experiment)
    agents = []
    for (algo, seed), run in runs.items():
        env = CryptoHedgeFundEnv.from_store(store, load_experiment(run / "config.json").env, start, end, costs)
        policy = torch_policy(load_agent(run).policy_module())
        agents.append(run_episode(env, policy, f"{algo}_seed_{seed}", f"{algo.upper()}-LSTM seed {seed}"))
    benches = run_benchmarks(store, experiment.env, eval_cfg, context.risk_free, start, end, costs)
    return agents, benches


def excess_per_period(result: Any, context: Any) -> np.ndarray:
    """Per-period excess returns of a result, folded as the metrics fold them (``training.metrics``)."""
    from training import metrics as M

    idx = context.day_index(result.dates)
    r, rf, _, _ = M.fold_to_periods(result.dates, result.returns, context.risk_free[idx], result.turnover,
                                    result.cost, context.periods)
    return r - rf


def difference_cis(a: Any, b: Any, context: Any, n_boot: int, seed: int) -> dict[str, Any]:
    """Sharpe(a) - Sharpe(b) and final value(a) - final value(b) with paired stationary-bootstrap 95% CIs."""
    from evaluation import significance as sig
    from training import metrics as M

    ex_a, ex_b = excess_per_period(a, context), excess_per_period(b, context)
    block = sig.default_block_length(ex_a.shape[0])
    sharpe = sig.sharpe_difference_interval(ex_a, ex_b, context.periods, 0.95, n_boot, block, seed)
    idx = sig.stationary_bootstrap_indices(a.returns.shape[0], n_boot, block, seed)
    boot = np.array([M.final_value(a.returns[i]) - M.final_value(b.returns[i]) for i in idx])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    fv = {"estimate": M.final_value(a.returns) - M.final_value(b.returns), "low": float(lo), "high": float(hi),
          "level": 0.95}
    return {"sharpe_diff": dataclasses.asdict(sharpe), "final_value_diff": fv, "n_boot": n_boot, "block": block}


def seed_mean_result(results: list[Any], name: str, label: str) -> Any:
    """The seeds as one fund: capital split equally over the seed policies and re-split daily (the daily
    return is the mean of the seeds' net returns; the cost of re-splitting is ignored), weights averaged."""
    from training.rollout import StrategyResult

    r = np.mean([x.returns for x in results], axis=0)
    nav = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    return StrategyResult(name, label, results[0].dates, r, nav, np.mean([x.weights for x in results], axis=0),
                          np.mean([x.turnover for x in results], axis=0), np.mean([x.cost for x in results], axis=0),
                          {})


def comparisons(agents: list[Any], benches: list[Any], context: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """SAC per seed and as the seed-mean fund against each comparator (DDPG paired by seed)."""
    by_name = {b.name: b for b in benches}
    sac = [a for a in agents if a.name.startswith("sac_")]
    ddpg = {a.name.split("_seed_")[1]: a for a in agents if a.name.startswith("ddpg_")}
    subjects = [(a, a.name.split("_seed_")[1]) for a in sac]
    if len(sac) > 1:
        subjects.append((seed_mean_result(sac, "sac_mean", "SAC seed-mean fund"), "mean"))
        if len(ddpg) == len(sac):
            ddpg["mean"] = seed_mean_result(list(ddpg.values()), "ddpg_mean", "DDPG seed-mean fund")
    out = []
    for subject, seed in subjects:
        for other in COMPARATORS:
            b = ddpg.get(seed) if other == "ddpg" else by_name.get(other)
            if b is None:
                continue
            entry = {"sac": subject.label, "versus": b.label, "versus_name": b.name}
            entry.update(difference_cis(subject, b, context, args.n_boot, 0))
            out.append(entry)
    return out


def curves(runs: dict[tuple[str, int], Path], res_dir: Path, name: str) -> Path:
    """Per-episode convergence curves of every run: one CSV (algo, seed, then ``curves.csv``'s columns) and
    one PNG (per run a rolling mean over two rounds of its parallel envs' episodes; both algorithms on each
    panel)."""
    from matplotlib.figure import Figure

    from data.atomic_files import atomic_path, atomic_write_text
    from training.config import load_experiment
    from training.curves import CURVE_COLUMNS, read_curves_csv

    lines = ["algo,seed," + ",".join(CURVE_COLUMNS)]
    fig = Figure(figsize=(15, 7.5))
    axes = fig.subplots(2, 3, sharex=True)
    colours = {"sac": "tab:blue", "ddpg": "tab:orange"}
    for (algo, seed), run in runs.items():
        recs = read_curves_csv(run / "curves.csv")
        for rec in recs:
            lines.append(f"{algo},{seed}," + ",".join(repr(getattr(rec, c)) for c in CURVE_COLUMNS))
        ep = np.array([r.episode for r in recs], dtype=np.float64)
        window = 2 * load_experiment(run / "config.json").training.n_envs
        for ax, key in zip(axes.ravel(), CURVE_KEYS):
            y = np.array([getattr(r, key) for r in recs], dtype=np.float64)
            k = min(window, max(1, y.size))
            if y.size == 0:
                continue
            smooth = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(ep, y, ".", color=colours.get(algo, "k"), alpha=0.15, markersize=2)
            ax.plot(ep[k - 1:], smooth, "-", color=colours.get(algo, "k"), alpha=0.8,
                    label=f"{algo.upper()} seed {seed}")
    for ax, key in zip(axes.ravel(), CURVE_KEYS):
        ax.set_title(f"{key} (training episode)", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("episode")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("crypto4 training curves per episode (lines: rolling mean over two rounds of the parallel envs)")
    fig.tight_layout()
    atomic_write_text(res_dir / f"{name}_curves.csv", "\n".join(lines) + "\n")
    png = res_dir / f"{name}_curves.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80)
    return png


def _fmt(value: Any, fmt: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else fmt.format(value)


def markdown(rows: list[dict[str, Any]], tickers: list[str], title: str) -> str:
    """The Table 4 columns, the diagnostics, the average weights and the (empty) paper column."""
    cols = TABLE4 + DIAGNOSTICS
    head = ["Strategy"] + [c[1] for c in cols] + [f"avg w {t.split('-')[0]}" for t in tickers] + ["avg cash", "paper"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        m, sd = row["metrics"], row.get("spread")
        cells = [row["label"]]
        for key, _, fmt in cols:
            cell = _fmt(m[key], fmt)
            if sd is not None and sd.get(key) is not None and np.isfinite(sd[key]):
                cell += " ± " + _fmt(sd[key], fmt).lstrip("+")
            cells.append(cell)
        w = row["avg_weight"]
        cells += [f"{w[t]:.1%}" for t in tickers] + [f"{w['cash']:.1%}", "not in repo"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(agents: list[Any], benches: list[Any], context: Any, tickers: tuple[str, ...]) -> list[dict[str, Any]]:
    """``strategy_row`` of every strategy, with a mean ± sd row per algorithm after its seeds."""
    from evaluation.backtester import strategy_row
    from evaluation.reports import aggregate_rows

    rows: list[dict[str, Any]] = []
    for algo in dict.fromkeys(a.name.split("_seed_")[0] for a in agents):
        mine = [strategy_row(a, context, tickers, "agent") for a in agents if a.name.startswith(algo + "_")]
        rows += mine
        if len(mine) > 1:
            agg = aggregate_rows(mine, f"{algo.upper()}-LSTM mean ± sd over {len(mine)} seeds")
            agg["name"] = f"{algo}_mean"
            agg["avg_weight"] = {k: float(np.mean([r["avg_weight"][k] for r in mine])) for k in mine[0]["avg_weight"]}
            rows.append(agg)
    rows += [strategy_row(b, context, tickers, "benchmark") for b in benches]
    return rows


def goals(test_rows: list[dict[str, Any]], cmp: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's SAC goal in 2023, on the SAC mean (or its single seed): final value and Sharpe above
    Markowitz's and equal weight's (weekly rebalanced), active share >= 0.15."""
    by = {r["name"]: r["metrics"] for r in test_rows}
    sac = by.get("sac_mean") or next(r["metrics"] for r in test_rows if r["name"].startswith("sac_"))
    out = {}
    for other in ("markowitz", "equal_weight"):
        if other in by:
            out[f"final_value_above_{other}"] = bool(sac["final_value"] > by[other]["final_value"])
            out[f"sharpe_above_{other}"] = bool(sac["sharpe"] > by[other]["sharpe"])
    out["active_share_at_least_0.15"] = bool(sac["active_share"] >= 0.15)
    out["all_met"] = all(out.values())
    n_assets = len(test_rows[0]["avg_weight"]) - 1
    out["uniform_with_cash_active_share"] = 1.0 / (n_assets + 1)
    out["note"] = (f"uniform weights over the {n_assets} assets and cash (an untrained softmax policy) already "
                   f"score an active share of 1/{n_assets + 1} = {1 / (n_assets + 1):.2f}, so the 0.15 threshold "
                   "alone does not show that the agent left its initial policy; compare the average weights")
    out["significant_differences"] = [
        f"{c['sac']} - {c['versus']}: {label} {c[key]['estimate']:+.3f} [{c[key]['low']:+.3f}, {c[key]['high']:+.3f}]"
        for c in cmp for key, label in (("sharpe_diff", "Sharpe"), ("final_value_diff", "final value"))
        if c[key]["low"] > 0 or c[key]["high"] < 0]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The second paper's Table 4 on crypto4 (SAC/DDPG-LSTM vs benchmarks).")
    p.add_argument("--config", default=str(ROOT / "configs" / "crypto4.yaml"))
    p.add_argument("--source", choices=("csv", "synthetic"), default="csv", help="csv = real data (default)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--algos", nargs="+", choices=("sac", "ddpg"), default=["sac", "ddpg"])
    p.add_argument("--seeds", type=int, nargs="+", default=REDUCED_SEEDS)
    p.add_argument("--timesteps", type=int, default=REDUCED_STEPS, help="env steps per run")
    p.add_argument("--full-size", action="store_true", help=f"seeds {FULL_SEEDS} x {FULL_STEPS} steps (hours)")
    p.add_argument("--workers", type=int, default=1, help="local processes for the runs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--reuse", action="store_true", help="keep finished runs of the same step count")
    p.add_argument("--out", default=str(ROOT / "runs" / "study_crypto4"))
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--results-name", default="study_crypto4")
    args = p.parse_args(argv)
    if args.full_size:
        args.seeds, args.timesteps = FULL_SEEDS, FULL_STEPS
    return args


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from data.atomic_files import atomic_write_text, write_json
    from evaluation.backtester import build_store, load_eval_config
    from evaluation.reports import SYNTHETIC_LABEL
    from training.config import load_experiment
    from training.rollout import MarketContext

    if args.timesteps < 1 or args.n_boot < 10:
        from data.market import DataError

        raise DataError("--timesteps must be positive and --n-boot at least 10")
    out, res_dir = Path(args.out), Path(args.results_dir)
    t0 = time.perf_counter()
    runs = train_all(args, out)
    train_minutes = (time.perf_counter() - t0) / 60
    first = next(iter(runs.values()))
    experiment = load_experiment(first / "config.json")
    manifest = json.loads((first / "manifest.json").read_text(encoding="utf-8"))
    data_dir = args.data_dir if args.source == "csv" else None
    store = build_store(experiment.data, args.source, data_dir, manifest)
    context = MarketContext.from_store(store, experiment.data)
    eval_cfg = dataclasses.replace(load_eval_config(experiment.extra, experiment.data), n_boot=args.n_boot)
    tickers = tuple(store.tickers)
    spans, report_spans = {}, {}
    with threadpool_limits(limits=1):
        for key, (start, end) in (("validation_2022", (experiment.val_start, VAL_END)), ("test_2023", (TEST_START, TEST_END))):
            agents, benches = evaluate_span(runs, store, context, experiment, eval_cfg, start, end)
            spans[key] = (agents, benches)
            report_spans[key] = {"start": str(benches[0].dates[0]), "end": str(benches[0].dates[-1]),
                                 "n_days": int(benches[0].dates.shape[0]),
                                 "rows": table_rows(agents, benches, context, tickers)}
    gap, train_seconds = 0.0, {}  # the training layer's validation.json against this re-run of the same policy
    for (algo, seed), run in runs.items():
        val = json.loads((run / "validation.json").read_text(encoding="utf-8"))
        train_seconds[f"{algo}_seed_{seed}"] = val.get("train_seconds")
        ours = next(r for r in report_spans["validation_2022"]["rows"] if r["name"] == f"{algo}_seed_{seed}")
        gap = max(gap, abs(val["sharpe"] - ours["metrics"]["sharpe"]))
    cmp = comparisons(*spans["test_2023"], context, args) if "sac" in args.algos else []
    label = SYNTHETIC_LABEL if store.synthetic else f"REAL daily prices ({args.source}: {args.data_dir})"
    res_dir.mkdir(parents=True, exist_ok=True)
    png = curves(runs, res_dir, args.results_name)
    result = {
        "data": {"label": label, "synthetic": store.synthetic, "source": store.source, "tickers": list(tickers),
                 "loaded": f"{store.dates[0]}..{store.dates[-1]} (after the feature warm-up)",
                 "train": f"{store.dates[0]}..{TRAIN_END} (normalisation fitted here)",
                 "risk_free": context.risk_free_label, "periods_per_year": context.periods},
        "size": {"algos": args.algos, "seeds": args.seeds, "timesteps_per_run": args.timesteps,
                 "full_size": args.full_size, "workers": args.workers, "train_minutes_this_call": round(train_minutes, 2),
                 "train_seconds_per_run": train_seconds,
                 "n_boot": args.n_boot, "config": args.config, "overrides": study_overrides(args, "<algo>", -1)},
        "spans": report_spans, "comparisons_2023": cmp,
        "goals_2023": goals(report_spans["test_2023"]["rows"], cmp) if cmp else None,
        "validation_json_vs_rerun_max_sharpe_gap": gap, "paper_table4": None, "paper_note": PAPER_NOTE,
        "evaluation_config": dataclasses.asdict(eval_cfg), "env": dataclasses.asdict(experiment.env),
        "curves": {"csv": f"{args.results_name}_curves.csv", "png": png.name},
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    }
    md = [f"# crypto4: the second paper's Table 4 ({label})", "",
          f"{len(args.seeds)} seeds x {args.timesteps:,} env steps per algorithm"
          f"{' (full size)' if args.full_size else ' (REDUCED size; --full-size is 5 x 100,000)'}; "
          f"train {result['data']['train']}; risk-free {context.risk_free_label}; {context.periods} periods/yr.", ""]
    for key, span in report_spans.items():
        md += [markdown(span["rows"], list(tickers), f"{key.replace('_', ' ')}: {span['start']}..{span['end']} "
                        f"({span['n_days']} decision days)"), ""]
    md += ["### SAC minus X in 2023 (paired stationary bootstrap, 95% CI)", "",
           "| SAC | versus | Sharpe diff [95% CI] | final value diff [95% CI] |", "|---|---|---|---|"]
    for c in cmp:
        s, f = c["sharpe_diff"], c["final_value_diff"]
        md.append(f"| {c['sac']} | {c['versus']} | {s['estimate']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}] | "
                  f"{f['estimate']:+.3f} [{f['low']:+.3f}, {f['high']:+.3f}] |")
    md += ["", "Goals 2023 (SAC mean of seeds): " + ", ".join(
        f"{k} {v}" for k, v in (result["goals_2023"] or {}).items() if isinstance(v, bool))]
    if result["goals_2023"]:
        md += ["", "Differences whose 95% CI excludes zero: "
               + ("; ".join(result["goals_2023"]["significant_differences"]) or "none"),
               "", result["goals_2023"]["note"] + "."]
    md += ["", PAPER_NOTE, ""]
    result["markdown"] = "\n".join(md)
    write_json(res_dir / f"{args.results_name}.json", result)
    atomic_write_text(res_dir / f"{args.results_name}.md", result["markdown"])
    return result


def main(argv: list[str] | None = None) -> int:
    from data.market import DataError

    args = parse_args(argv)
    try:
        result = run_study(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"validation.json vs re-run, max |Sharpe gap|: {result['validation_json_vs_rerun_max_sharpe_gap']:.2e}; "
          f"{result['minutes']:.1f} min; wrote {args.results_dir}/{args.results_name}.{{json,md}} and _curves.{{csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
