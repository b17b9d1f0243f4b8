"""Real-data study: does a portfolio-gradient warm start make PPO-Transformer learn something?

REAL DATA: the paper universe (configs/paper.yaml; tickers the CSVs lack are dropped and reported) from the
yfinance-style CSVs in ``../shared/data/market`` (``--source csv``). Validation folds only, never data after
2023-12-31: train on 2019-01-01..2021-12-31 and validate 2022, then train to 2022-12-31 and validate 2023
(``--folds``; 2021, trained on 2019-2020 only, is the fold none of the warm-start settings was chosen on; the
feature normalisation is refit on each fold's training span). Small sizes that fit a shared 2-core
machine (window 30, d_model 32, one day layer, ``--ppo-steps`` PPO env steps).

Strategies per fold and seed:

- ``ppo``: PPO from its initialisation (uniform weights) for ``--ppo-steps``;
- ``pg``: the actor trained by ``agents.portfolio_gradient.warm_start`` only (gradient ascent on the exact
  daily log growth net of costs, on the training span);
- ``pg+ppo``: the same warm start, then PPO for ``--ppo-steps`` (critic and exploration std untouched);
- ``pg_risk`` / ``pg_risk+ppo``: the warm start with a downside penalty (``--downside``);
- ``pg_var<lambda>`` / ``pg_var<lambda>+ppo``: the warm start with the variance of the daily log growth
  penalised (``--risk-aversion lambda ...``: mean-variance, which should cut exposure when volatility is high);

against ``equal_weight`` (rebalanced weekly) and ``vol_target`` (equal weight at a 20% annual volatility
target, the rest in BIL), all stepped through ``CryptoHedgeFundEnv`` with the run's costs.

Columns: Sharpe of the daily excess return over the T-bill leg (BIL), annualised over 365 days; max
drawdown; ``active_share`` = mean over days of 0.5 * sum |w - w_ew| (w_ew = 1/k on the k listed assets,
cash 0, post-trade weights); ``regime_response`` = stable+cash share of NAV on the top-decile days of the
trailing 20-day volatility of the equal-weight risky (non-stable) return minus the share on the other
days; mean daily turnover; mean cash+stable share. Every measure comes from ``training.metrics`` through
the backtester's ``MarketContext`` (the same numbers a backtest report shows).

    python benchmarks/study_portfolio_gradient.py [--final] [--seeds 0 1] [--ppo-steps 4096] [--pg-steps 300] ...

``--final`` reruns the committed final configuration (``FINAL_ARGS``: 2 folds x 2 seeds as 4 parallel jobs; see
the JSON's ``minutes`` for how long it took on a loaded 2-core machine).

Writes ``benchmarks/results/study_portfolio_gradient.json`` and prints the table. Every configuration
evaluated on the validation folds (including those tried while developing, listed in ``TRIED``) is counted
in ``n_configurations``: use it for a deflated Sharpe.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import DEFAULT_DATA_DIR

from data.atomic_files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES: dict[str, Any] = {
    "env.window": 30,
    "agent.ppo.d_model": 32,
    "agent.ppo.n_heads": 4,
    "agent.ppo.day_layers": 1,
    "agent.ppo.asset_layers": 1,
    "agent.ppo.dim_feedforward": 64,
    "agent.ppo.n_steps": 128,
    "agent.ppo.batch_size": 128,
    "agent.ppo.n_epochs": 4,
    "training.n_envs": 4,
    "data.start": "2019-01-01",
}
FOLDS = (("2020-12-31", "2021-01-01", "2021-12-31"), ("2021-12-31", "2022-01-01", "2022-12-31"),
         ("2022-12-31", "2023-01-01", "2023-12-31"))
#: Configurations evaluated on the validation folds while developing this study, before the final run
#: (name: what differed). With the plain-PPO baseline they make ``CONFIGURATIONS_SO_FAR``.
TRIED: dict[str, str] = {
    "timing/pg": "pg, 20 steps, fold 2022 seed 0 (a timing run)",
    "timing/pg+ppo": "the same + 512 PPO steps",
    "plain/pg": "pg, 500 steps, batch 32, lr 1e-3, no turnover penalty, no holdout, no noise (seed 0, both folds)",
    "plain/pg+ppo": "the same + 4096 PPO steps",
    "plain/pg_risk": "the same with downside 5",
    "plain/pg_risk+ppo": "the same + 4096 PPO steps",
    "holdout/pg": "pg, 500 steps, batch 32, lr 1e-3, turnover penalty 0.005, holdout 180 days (seed 0)",
    "holdout/pg+ppo": "the same + 4096 PPO steps",
    "holdout/pg_risk": "the same with downside 5",
    "holdout/pg_risk+ppo": "the same + 4096 PPO steps",
    "smoke/pg": "pg, 3 steps, holdout 30 days, 256 PPO steps, fold 2022 (a smoke test of the parallel jobs)",
    "smoke/pg+ppo": "the same + 256 PPO steps",
    "final/pg": "FINAL_ARGS (docs/results/study_portfolio_gradient.json)",
    "final/pg+ppo": "the same + 4096 PPO steps",
    "final/pg_risk": "FINAL_ARGS with downside 5",
    "final/pg_risk+ppo": "the same + 4096 PPO steps",
    "var/pg_var1": "FINAL_ARGS, downside 0, risk aversion 1 (docs/results/study_pg_var.json)",
    "var/pg_var1+ppo": "the same + 4096 PPO steps",
    "var/pg_var3": "FINAL_ARGS, downside 0, risk aversion 3",
    "var/pg_var3+ppo": "the same + 4096 PPO steps",
}
#: Configurations evaluated on these folds so far: the ledger plus the plain-PPO baseline every run includes.
#: A run adds its other strategies to it (``n_configurations``; a setting re-run on more seeds or folds is counted
#: again, which only lowers a deflated Sharpe). ``study_walk_forward.py`` starts its own count from it.
CONFIGURATIONS_SO_FAR = len(TRIED) + 1
#: The settings of the final run (the third set tried: the second plus noise, weight decay, batch 64, lr 3e-4).
FINAL_ARGS = ("--seeds 0 1 --workers 4 --ppo-steps 4096 --pg-steps 400 --pg-batch 64 --pg-lr 3e-4 --downside 5 "
              "--turnover-penalty 0.005 --holdout-days 180 --feature-noise 0.5 --weight-decay 0.01")


def row(result: Any, context: Any) -> dict[str, float]:
    """Every ``training.metrics`` measure of one strategy through the backtester's ``MarketContext`` (the one
    definition of Sharpe, drawdown, ``active_share``, ``regime_response``...), plus ``safe_share``: the mean
    stable + cash share of NAV."""
    from training import metrics as M
    from training.rollout import strategy_metrics

    safe = M.defensive_share(result.weights, context.categories)
    return {**strategy_metrics(result, context), "safe_share": float(np.mean(safe))}


def source_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides for ``--source`` (the CSV folder for real data), ``--action-head`` and ``--set``."""
    from training.config import parse_set_option

    extra = {"agent.ppo.action_head": args.action_head, **dict(parse_set_option(item) for item in args.set)}
    if args.source == "csv":
        return {"data.source": "csv", "data.data_dir": args.data_dir, **extra}
    return {"data.source": "synthetic", **extra}


def in_sample_span(train_end: str) -> tuple[str, str]:
    """The training span's last 365 days ``(start, end)``: where ``--in-sample`` scores every strategy again."""
    import pandas as pd

    end = pd.Timestamp(train_end)
    return str((end - pd.Timedelta(days=364)).date()), str(end.date())


def _setup(args: argparse.Namespace, train_end: str) -> tuple[Any, Any, Any, Any]:
    """(config, market, feature store refit to ``train_end``, costs) for one fold."""
    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store
    from training.config import costs_of, load_experiment

    cfg = load_experiment(args.config, {**OVERRIDES, **source_overrides(args), "data.train_end": train_end})
    market = load_market(cfg.data, source=args.source, data_dir=args.data_dir, verbose=False)
    return cfg, market, build_feature_store(market, train_end, clip=cfg.data.clip), costs_of(cfg)


def run_job(args: argparse.Namespace, fold: tuple[str, str, str], seed: int) -> dict[str, Any]:
    """Every agent strategy of one fold and seed: ``{"strategies": {name: metrics}, "seconds", "pg_history"}``."""
    import torch

    from agents.common import ObsLayout
    from agents.portfolio_gradient import PortfolioGradientConfig, warm_start
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from environments.vector_env import BatchedHedgeFundEnv
    from evaluation.backtester import run_episode, torch_policy
    from training.config import load_experiment
    from training.rollout import MarketContext
    from training.train import make_agent

    torch.set_num_threads(1)
    train_end, val_start, val_end = fold
    cfg0, _, store, costs = _setup(args, train_end)
    context = MarketContext.from_store(store, cfg0.data)
    out: dict[str, Any] = {"strategies": {}, "seconds": {}, "pg_history": {}}

    def evaluate(agent: Any, name: str) -> None:
        spans = {name: (val_start, val_end)}
        if args.in_sample:
            spans[f"{name}@train"] = in_sample_span(train_end)
        for label, (start, end) in spans.items():
            env = CryptoHedgeFundEnv.from_store(store, cfg0.env, start, end, costs)
            res = run_episode(env, torch_policy(agent.policy_module()), label, label)
            out["strategies"][label] = row(res, context)

    def ppo(agent: Any, name: str) -> None:
        t0 = time.perf_counter()
        agent.train(BatchedHedgeFundEnv(store, cfg.env, cfg.training.n_envs, end=train_end, costs_bps=costs),
                    args.ppo_steps)
        out["seconds"][name] = time.perf_counter() - t0
        evaluate(agent, name)

    cfg = load_experiment(args.config, {**OVERRIDES, **source_overrides(args), "data.train_end": train_end,
                                        "training.seed": seed})
    env = BatchedHedgeFundEnv(store, cfg.env, cfg.training.n_envs, end=train_end, costs_bps=costs)
    layout = ObsLayout.from_dict(env.obs_layout)
    ppo(make_agent(cfg, layout), "ppo")
    for v, (downside, risk_aversion, sharpe) in variants_of(args).items():
        pg_cfg = PortfolioGradientConfig(steps=args.pg_steps, batch_days=args.pg_batch, rollout=args.pg_rollout,
                                         learning_rate=args.pg_lr, seed=seed, turnover_penalty=args.turnover_penalty,
                                         holdout_days=args.holdout_days, feature_noise=args.feature_noise,
                                         weight_decay=args.weight_decay, downside=downside,
                                         risk_aversion=risk_aversion, sharpe=sharpe)
        agent = make_agent(cfg, layout)
        t0 = time.perf_counter()
        hist = warm_start(agent, env.core, pg_cfg)
        out["seconds"][v] = time.perf_counter() - t0
        out["pg_history"][v] = {k: [float(np.mean(h[i:i + 25])) for i in range(0, len(h), 25)]
                                if k in ("objective", "log_growth", "cash") else h for k, h in hist.items()}
        evaluate(agent, v)
        ppo(agent, f"{v}+ppo")
    print(f"fold {val_start[:4]} seed {seed} done", flush=True)
    return out


def variants_of(args: argparse.Namespace) -> dict[str, tuple[float, float, bool]]:
    """Warm-start variants ``{name: (downside, risk_aversion, sharpe)}``: ``pg`` (pure log growth) unless
    ``--skip-plain``, ``pg_risk`` when ``--downside`` > 0, ``pg_var<lambda>`` for each ``--risk-aversion``,
    ``pg_sharpe`` (the scale-free Sharpe objective) with ``--sharpe``."""
    out: dict[str, tuple[float, float, bool]] = {} if args.skip_plain else {"pg": (0.0, 0.0, False)}
    if args.downside > 0:
        out["pg_risk"] = (args.downside, 0.0, False)
    for lam in args.risk_aversion:
        out[f"pg_var{lam:g}"] = (0.0, lam, False)
    if args.sharpe:
        out["pg_sharpe"] = (0.0, 0.0, True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Portfolio-gradient warm start vs PPO (validation folds; real data "
                                            "by default, or the synthetic market as a positive control).")
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--source", choices=("csv", "synthetic"), default="csv",
                   help="csv = real data (default); synthetic = the simulated market (a positive control)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--action-head", choices=("assets", "exposure"), default="assets",
                   help="the policy's action head (agent.ppo.action_head): per-asset logits or one exposure logit")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override on top of the study's reduced settings (e.g. agent.ppo.encoder=lstm)")
    p.add_argument("--in-sample", action="store_true",
                   help="also score every strategy on the training span's last 365 days (<name>@train)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ppo-steps", type=int, default=4096)
    p.add_argument("--pg-steps", type=int, default=300)
    p.add_argument("--pg-batch", type=int, default=32)
    p.add_argument("--pg-rollout", type=int, default=4)
    p.add_argument("--pg-lr", type=float, default=1e-3)
    p.add_argument("--downside", type=float, default=0.0, help="> 0 adds the pg_risk strategies")
    p.add_argument("--risk-aversion", type=float, nargs="*", default=[],
                   help="each value > 0 adds pg_var<value> strategies (variance of the daily log growth penalised)")
    p.add_argument("--sharpe", action="store_true", help="adds the pg_sharpe strategies (batch Sharpe objective)")
    p.add_argument("--skip-plain", action="store_true", help="leave out the pure log-growth pg strategies")
    p.add_argument("--turnover-penalty", type=float, default=0.0, help="extra training cost per unit turnover")
    p.add_argument("--holdout-days", type=int, default=0, help="early stopping on the training span's last days")
    p.add_argument("--feature-noise", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--folds", type=int, nargs="+", choices=(2021, 2022, 2023), default=[2022, 2023],
                   help="validation years (2021 trains on 2019-2020 only)")
    p.add_argument("--results-name", default="study_portfolio_gradient")
    p.add_argument("--workers", type=int, default=2, help="(fold, seed) jobs run in parallel processes")
    p.add_argument("--final", action="store_true", help="the final configuration (FINAL_ARGS)")
    args = p.parse_args(argv)
    if args.final:
        given = sys.argv[1:] if argv is None else list(argv)
        args = p.parse_args(FINAL_ARGS.split() + [a for a in given if a != "--final"])

    if any(lam <= 0 for lam in args.risk_aversion):
        p.error("--risk-aversion values must be positive")
    from concurrent.futures import ProcessPoolExecutor

    from evaluation.backtester import run_benchmarks
    from evaluation.benchmarks import EvaluationConfig
    from training.rollout import MarketContext

    t_start = time.perf_counter()
    folds = [f for f in FOLDS if int(f[1][:4]) in args.folds]
    strategies = ["ppo"] + [s for v in variants_of(args) for s in (v, f"{v}+ppo")]
    if args.in_sample:
        strategies += [f"{s}@train" for s in strategies]
    jobs = [(f, seed) for f in folds for seed in args.seeds]
    with ProcessPoolExecutor(max_workers=max(1, min(args.workers, len(jobs)))) as pool:
        futures = [pool.submit(run_job, args, f, seed) for f, seed in jobs]
        done = [fut.result() for fut in futures]
    results: dict[str, Any] = {"folds": []}
    for fold in folds:
        cfg0, market, store, costs = _setup(args, fold[0])
        context = MarketContext.from_store(store, cfg0.data)
        entry: dict[str, Any] = {"train": f"{cfg0.data.start}..{fold[0]}", "validate": f"{fold[1]}..{fold[2]}",
                                 "risk_free": context.risk_free_label, "strategies": {s: {} for s in strategies},
                                 "seconds": {}, "pg_history": {}}
        for (f, seed), out in zip(jobs, done):
            if f != fold:
                continue
            for name, metrics in out["strategies"].items():
                entry["strategies"][name][str(seed)] = metrics
            for name, sec in out["seconds"].items():
                entry["seconds"].setdefault(name, []).append(sec)
            for name, hist in out["pg_history"].items():
                entry["pg_history"][f"{name}/{seed}"] = hist
        eval_cfg = EvaluationConfig(tbill=cfg0.data.risk_free)
        spans = {"": (fold[1], fold[2])}
        if args.in_sample:
            spans["@train"] = in_sample_span(fold[0])
        for suffix, (start, end) in spans.items():
            for res in run_benchmarks(store, cfg0.env, eval_cfg, context.risk_free, start, end, costs,
                                      names=["equal_weight", "vol_target"]):
                entry["strategies"][res.name + suffix] = {"-": row(res, context)}
        results["folds"].append(entry)

    keys = ("sharpe", "max_drawdown", "active_share", "regime_response", "turnover", "safe_share")
    head = f"{'fold':>5} {'strategy':<20}" + "".join(f"{k:>16}" for k in keys)
    lines = [head, "-" * len(head)]
    for fold in results["folds"]:
        for name, per_seed in fold["strategies"].items():
            vals = {k: np.array([m[k] for m in per_seed.values()]) for k in keys}
            cells = "".join(f"{v.mean():>10.3f}±{v.std(ddof=1) if v.size > 1 else 0.0:<5.3f}" for v in vals.values())
            lines.append(f"{fold['validate'][:4]:>5} {name:<20}{cells}")
            fold["strategies"][name]["mean"] = {k: float(v.mean()) for k, v in vals.items()}
    table = "\n".join(lines)
    results.update({
        "data": (f"REAL data: yfinance-style CSVs in {args.data_dir} (not synthetic)" if args.source == "csv" else
                 "SYNTHETIC market (data.synthetic, simulated prices with a hidden calm/stress regime; not real data)"),
        "span": f"{cfg0.data.start}..{FOLDS[-1][2]} (validation folds only; nothing after 2023-12-31)",
        "tickers": list(store.tickers), "categories": list(store.categories),
        "settings": {"source": args.source, "action_head": args.action_head, "set": args.set, "in_sample": args.in_sample, "overrides": OVERRIDES, "ppo_steps": args.ppo_steps, "pg_steps": args.pg_steps,
                     "pg_batch": args.pg_batch, "pg_rollout": args.pg_rollout, "pg_lr": args.pg_lr,
                     "downside": args.downside, "risk_aversion": args.risk_aversion, "sharpe": args.sharpe,
                     "turnover_penalty": args.turnover_penalty,
                     "holdout_days": args.holdout_days, "feature_noise": args.feature_noise,
                     "weight_decay": args.weight_decay, "seeds": args.seeds},
        "tried_before": TRIED,
        # "ppo" is the baseline already counted; synthetic runs are a control and count only themselves
        "n_configurations": (CONFIGURATIONS_SO_FAR + len(strategies) - 1 if args.source == "csv"
                             else len([n for n in strategies if not n.endswith("@train")])),
        "table": table, "minutes": (time.perf_counter() - t_start) / 60,
    })
    print(table)
    print(f"{results['data']}; {results['span']}; {results['n_configurations']} configurations counted; "
          f"{results['minutes']:.1f} min")
    out = ROOT / "benchmarks" / "results" / f"{args.results_name}.json"
    atomic_write_text(out, json.dumps(results, indent=1))  # parents created
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
