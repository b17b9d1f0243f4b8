"""Can the agents see the synthetic market's stress regime? A linear probe of the hidden regime on the day's features.

SYNTHETIC market only (``data.synthetic``: its calm/stress Markov regime is known exactly, ``regime_path``). The
positive control of ``study_walk_forward.py`` asks an agent to move to cash in stress; this probe says whether
the information to do so is in what the agent sees. Per expanding fold (train on the days to Y-1, validate Y;
features normalised on the training span, as the agents see them): a logistic regression of "day t is a stress
day" on day t's features of every asset (``features[t]`` flattened, N*F inputs; L2 penalty ``C`` in ``--c``,
all reported), the same on the mean of the features over assets (F inputs, smallest ``C``: what a pooled
per-asset encoder without asset identity can compute), and, as the one-number rule, the trailing 20-day volatility of the equal-weight risky return
(``training.metrics``' regime signal) as a score. Reported: ROC AUC on the training and the validation days, and
the stress share of each span.

With ``--funds`` it also says what hedging on the regime would have earned in each validation year, so that a
failed control can be told apart from an unwinnable fold: funds stepped through the study's environment (same
costs, slippage and closed-market rules) that hold the weekly equal weight in calm and move to the stable legs
(equal weight over the listed T-bill and stablecoin assets, capped, the rest cash) in stress, trading on a switch
and otherwise weekly, next to weekly equal weight itself. The stress call comes from (a) the hidden state of the
day (``nowcast oracle``: the best any agent that sees day t can do, since day t's features at best reveal day t's
state), (b) the next day's state (``clairvoyant``: it knows the regime of the return it is exposed to), (c) the
logistic probe with the smallest ``--c``, stress when its probability exceeds 0.5 (visible features only, but
trained on the hidden labels an agent does not get) and (d) the trailing 20-day volatility above its training
span's 80th percentile (a rule any agent could copy) and (e) a forecast from returns alone, the labels a real
market has: the same logistic regression on "the equal-weight risky sleeve loses over the next 5 days"
(``forecast_call``), on the day's features and on their mean over assets.

    python benchmarks/probe_synthetic_regime.py [--years 2021 2022 2023] [--c 0.01 0.1] [--seed 0] [--funds]
        [--runs runs/study_walk_forward ...]

Every fund also gets a ``stress response``: the regime response measured on the hidden state instead of the
trailing-volatility days. With ``--runs`` (``study_walk_forward.py --out`` folders trained on the same market)
the trained agents are stepped through the same fold and reported the same way.

Writes ``benchmarks/results/probe_synthetic_regime[_seed<seed>].json`` and prints the table.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Horizon of the returns-only forecast fund: a week, the benchmarks' rebalancing period.
FORECAST_DAYS = 5


def fold_market(config: str, year: int, seed: int = 0) -> tuple[Any, Any, np.ndarray]:
    """The experiment config, feature store and hidden stress flag (T,) bool per store day of the fold validating
    ``year`` on the synthetic market drawn with ``seed``: the whole market to the config's end (as
    ``study_walk_forward.py`` draws it), features normalised on the days to ``year - 1``."""
    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store
    from training.config import load_experiment

    train_end = f"{year - 1}-12-31"
    cfg = load_experiment(config, {"data.source": "synthetic", "data.seed": seed, "data.train_end": train_end})
    market = load_market(cfg.data, source="synthetic", verbose=False)
    store = build_feature_store(market, train_end, clip=cfg.data.clip)
    return cfg, store, stress_days(market, store, cfg.data.seed)


def stress_days(market: Any, store: Any, seed: int) -> np.ndarray:
    """The hidden stress flag (T,) bool of each ``store`` day of the synthetic ``market`` drawn with ``seed``."""
    from data.synthetic import regime_path

    mdates = np.asarray(market.dates, dtype="datetime64[D]")
    return regime_path(len(mdates), seed)[np.searchsorted(mdates, store.dates)]


def probe_fold(config: str, year: int, cs: list[float], seed: int = 0, funds: bool = False,
               runs: list[Path] | tuple[Path, ...] = ()) -> dict[str, Any]:
    """AUCs of one fold (train on the days to ``year - 1``, validate ``year``) of the market drawn with ``seed``;
    with ``funds`` also the regime-hedge funds of the module docstring (their metrics under ``"funds"``), with
    ``runs`` the trained agents of :func:`agent_funds` (under ``"agents"``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from training import metrics as M

    train_end = f"{year - 1}-12-31"
    cfg, store, stress = fold_market(config, year, seed)
    x = np.nan_to_num(store.features.reshape(len(store.dates), -1))
    train = store.dates <= np.datetime64(train_end)
    val = (store.dates >= np.datetime64(f"{year}-01-01")) & (store.dates <= np.datetime64(f"{year}-12-31"))
    out: dict[str, Any] = {"train_days": int(train.sum()), "validate_days": int(val.sum()),
                           "stress_share_train": float(stress[train].mean()), "stress_share_validate": float(stress[val].mean())}
    models = {}
    for c in cs:
        model = models[c] = LogisticRegression(C=c, max_iter=3000).fit(x[train], stress[train])
        out[f"logistic_C{c:g}"] = {"train_auc": float(roc_auc_score(stress[train], model.decision_function(x[train]))),
                                   "validate_auc": float(roc_auc_score(stress[val], model.decision_function(x[val])))}
    # the same probe on the cross-sectional mean of the features (F inputs): what a pooled per-asset encoder with
    # shared weights and no asset identity (the exposure head's MLP) can compute
    pooled = np.nan_to_num(store.features).mean(axis=1)
    c = min(cs)
    model = LogisticRegression(C=c, max_iter=3000).fit(pooled[train], stress[train])
    out[f"pooled_logistic_C{c:g}"] = {"train_auc": float(roc_auc_score(stress[train], model.decision_function(pooled[train]))),
                                      "validate_auc": float(roc_auc_score(stress[val], model.decision_function(pooled[val])))}
    ew = M.equal_weight_risky_return(store.returns, store.listed, store.categories)  # ew[t]: after close t
    vol = M.trailing_volatility(ew)
    out["trailing_vol_20d"] = {"train_auc": float(roc_auc_score(stress[train], vol[train])),
                               "validate_auc": float(roc_auc_score(stress[val], vol[val]))}
    if funds:
        calls = {"nowcast oracle": stress, "clairvoyant": np.append(stress[1:], stress[-1]),
                 f"logistic probe C{min(cs):g}": models[min(cs)].predict_proba(x)[:, 1] > 0.5,
                 "trailing vol > train p80": vol > np.nanpercentile(vol[train], 80),
                 f"5-day forecast C{min(cs):g}": forecast_call(ew, x, train, min(cs)),
                 "5-day forecast, asset-mean": forecast_call(ew, pooled, train, min(cs))}
        out["funds"] = regime_funds(cfg, store, f"{year}-01-01", f"{year}-12-31", calls, stress)
    if runs:
        out["agents"] = {k: m for r in runs for k, m in agent_funds(store, stress, r, year).items()}
    return out


def forecast_call(ew: np.ndarray, x: np.ndarray, train: np.ndarray, c: float, horizon: int = FORECAST_DAYS) -> np.ndarray:
    """Hedge calls (T,) bool from returns alone, the labels a real market has: a logistic regression (L2 ``c``) of
    "the equal-weight risky sleeve loses over the next ``horizon`` days" (``ew`` (T,) its simple return after each
    close) on the day's features ``x`` (T, K), fitted on the training days whose whole horizon ends inside the
    training span (no look-ahead); hedge when its probability exceeds 0.5."""
    from sklearn.linear_model import LogisticRegression

    r = np.log1p(ew)
    ahead = np.convolve(r, np.ones(horizon), mode="full")[horizon - 1:]  # ahead[t] = r[t] + ... + r[t+horizon-1]
    fit = train.copy()
    fit[max(int(np.flatnonzero(train)[-1]) - horizon + 1, 0):] = False  # r[t+horizon-1] must be a training return
    model = LogisticRegression(C=c, max_iter=3000).fit(x[fit], ahead[fit] < 0)
    return model.predict_proba(x)[:, 1] > 0.5


def regime_funds(cfg: Any, store: Any, start: str, end: str, calls: dict[str, np.ndarray],
                 stress: np.ndarray) -> dict[str, dict[str, float]]:
    """Metrics (with :func:`with_stress_response`) of weekly equal weight and of one regime-hedge fund per entry
    of ``calls`` ((T,) bool per store day: hedge at that day's close) over [start, end], through the study's
    environment and costs; ``stress`` (T,) the hidden state per store day."""
    from environments.action_prior import cap_weights
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from evaluation.backtester import benchmark_env_config, run_benchmarks
    from evaluation.benchmarks import EvaluationConfig, benchmark_target
    from training.config import costs_of
    from training.rollout import MarketContext, run_episode

    context, costs = MarketContext.from_store(store, cfg.data), costs_of(cfg)
    eval_cfg = EvaluationConfig(tbill=cfg.data.risk_free or EvaluationConfig.tbill)
    env_cfg = benchmark_env_config(cfg.env, buy_and_hold=False)
    stable = np.asarray(store.categories) == "stable"
    out = {"equal weight rebal.": with_stress_response(run_benchmarks(
        store, env_cfg, eval_cfg, context.risk_free, start, end, costs, names=["equal_weight"])[0], context, stress)}
    for name, hedge in calls.items():
        state: dict[str, Any] = {"last": None, "hedged": None}

        def policy(t: int, obs: np.ndarray, w: np.ndarray, hedge: np.ndarray = hedge,
                   state: dict[str, Any] = state) -> np.ndarray:
            due = (state["last"] is None or hedge[t] != state["hedged"]
                   or t - state["last"] >= eval_cfg.rebalance_every)
            if not (due and np.all(store.tradable[t] | ~store.listed[t])):
                return np.maximum(np.asarray(w, dtype=np.float64), 0.0)
            state["last"], state["hedged"] = t, bool(hedge[t])
            if not hedge[t]:
                return benchmark_target("equal_weight", t, store.returns, store.listed, store.tickers, 0.0,
                                        eval_cfg, env_cfg.max_weight)
            legs = stable & store.listed[t]
            target = np.zeros(len(store.tickers) + 1)
            target[:-1] = cap_weights(legs.astype(np.float64), env_cfg.max_weight)
            target[-1] = max(1.0 - target[:-1].sum(), 0.0)
            return target

        env = CryptoHedgeFundEnv.from_store(store, env_cfg, start, end, costs)
        out[name] = with_stress_response(run_episode(env, policy, name, name), context, stress)
    return out


def with_stress_response(result: Any, context: Any, stress: np.ndarray | None) -> dict[str, float]:
    """``strategy_metrics`` of ``result`` plus ``stress_response``: ``training.metrics.regime_response`` with the
    hidden state in place of the trailing-volatility days (stable + cash share on the decisions whose next-day
    return falls in stress minus the share on the others; ``stress`` (T,) bool per store day). ``stress`` None
    (a market without a known regime): ``strategy_metrics`` alone."""
    from training.metrics import regime_response
    from training.rollout import strategy_metrics

    if stress is None:
        return strategy_metrics(result, context)
    days = context.day_index(result.dates)
    earned_in_stress = stress[np.minimum(days + 1, len(stress) - 1)]
    return {**strategy_metrics(result, context),
            "stress_response": regime_response(result.weights, context.categories, earned_in_stress)}


def agent_funds(store: Any, stress: np.ndarray, runs: Path, year: int) -> dict[str, dict[str, float]]:
    """Per seed, the validation-year metrics (with ``stress_response``) of the trained runs
    ``runs/<reward>/fold_<year>/seed_<s>`` (``study_walk_forward.py --out``), each through its own env config;
    keyed ``"<runs folder name>/<reward> seed <s>"``."""
    from agents.io import load_agent
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from evaluation.backtester import read_run
    from training.config import costs_of
    from training.rollout import MarketContext, run_episode, torch_policy

    out = {}
    for run in sorted(runs.glob(f"*/fold_{year}/seed_*")):
        exp = read_run(str(run)).experiment
        context = MarketContext.from_store(store, exp.data)
        env = CryptoHedgeFundEnv.from_store(store, exp.env, f"{year}-01-01", f"{year}-12-31", costs_of(exp))
        res = run_episode(env, torch_policy(load_agent(run).policy_module()), "agent", "agent")
        key = f"{runs.name}/{run.parents[1].name} {run.name.replace('_', ' ')}"
        out[key] = with_stress_response(res, context, stress)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Linear probe of the synthetic market's hidden stress regime.")
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--years", type=int, nargs="+", choices=(2021, 2022, 2023), default=[2021, 2022, 2023])
    p.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1], help="inverse L2 penalties (all reported)")
    p.add_argument("--seed", type=int, default=0, help="data.seed of the synthetic market (0 = the tuning market)")
    p.add_argument("--funds", action="store_true", help="also run the regime-hedge funds (module docstring)")
    p.add_argument("--runs", nargs="+", default=[], help="with --funds: study_walk_forward.py --out folders trained "
                   "on this market; their agents' rows (mean of seeds, named by folder) join the table")
    args = p.parse_args(argv)
    if any(c <= 0 for c in args.c):
        p.error("--c values must be positive")
    if args.seed < 0:
        p.error("--seed must be non-negative")
    bad = [r for r in args.runs if not Path(r).is_dir()]
    if args.runs and (not args.funds or bad):
        p.error("--runs needs --funds and existing folders" + (f"; not a folder: '{bad[0]}'" if bad else ""))
    runs = [Path(r) for r in args.runs]
    from data.atomic_files import atomic_write_text

    t0 = time.perf_counter()
    folds = {str(y): probe_fold(args.config, y, args.c, args.seed, args.funds, runs) for y in args.years}
    probes = [k for k in next(iter(folds.values())) if k.startswith(("logistic", "pooled", "trailing"))]
    lines = [f"{'fold':>5} {'stress train/val':>17} " + " ".join(f"{k:>24}" for k in probes),
             f"{'':>5} {'':>17} " + " ".join(f"{'AUC train / validate':>24}" for _ in probes)]
    for y, f in folds.items():
        cells = " ".join(f"{f[k]['train_auc']:>15.3f} / {f[k]['validate_auc']:.3f}" for k in probes)
        lines.append(f"{y:>5} {f['stress_share_train']:>8.3f} / {f['stress_share_validate']:.3f} {cells}")
    if args.funds:
        keys = ("sharpe", "max_drawdown", "regime_response", "stress_response", "turnover")
        lines += ["", f"{'fold':>5} {'fund':<44} {'Sharpe':>7} {'max DD':>8} {'regime resp.':>13} "
                      f"{'stress resp.':>13} {'turnover/d':>11}"]
        for y, f in folds.items():
            rows = dict(f["funds"])
            for reward in sorted({k.split(" seed ")[0] for k in f.get("agents", {})}):
                seeds = [m for k, m in f["agents"].items() if k.startswith(f"{reward} seed ")]
                rows[f"{reward} ({len(seeds)} seeds)"] = {k: float(np.mean([m[k] for m in seeds])) for k in keys}
            for name, m in rows.items():
                lines.append(f"{y:>5} {name:<44} {m['sharpe']:>7.2f} {m['max_drawdown']:>8.1%} "
                             f"{m['regime_response']:>+13.3f} {m['stress_response']:>+13.3f} {m['turnover']:>11.4f}")
    table = "\n".join(lines)
    print(table)
    out = {"data": f"SYNTHETIC market, data.seed {args.seed} (data.synthetic; the regime is its hidden calm/stress "
                   "state), not real data",
           "config": args.config, "seed": args.seed, "runs": [str(r) for r in runs], "folds": folds, "table": table,
           "minutes": (time.perf_counter() - t0) / 60}
    stem = "probe_synthetic_regime" + (f"_seed{args.seed}" if args.seed else "")
    path = ROOT / "benchmarks" / "results" / f"{stem}.json"
    atomic_write_text(path, json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
