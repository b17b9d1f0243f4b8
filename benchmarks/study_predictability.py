"""Is there anything in the features for an agent to learn? A linear probe of next-day returns and future volatility.

The agents see ``FeatureStore.features`` (T, N, F) and are paid by the next day's returns. If a pooled ridge
regression of the next-day return ``returns[t, i]`` on ``features[t, i]`` has no out-of-sample skill, a policy
that must find return predictability in the same features has little to find, and a residual agent on top of a
volatility rule should stay on the rule. Volatility is the control: the log realised volatility of the next
``--vol-horizon`` days is regressed on the same features and compared with persistence (the trailing volatility
over the same number of days, what the vol-target rule uses).

Per expanding fold (train on [start, Y-1], validate Y; features normalised on the training span as the agents
see them), risky assets only (every category but ``stable``), for each ridge penalty in ``--ridge`` (all
reported, none selected; the penalty is ``alpha * n_samples`` on the coefficients, the intercept free) and for
a gradient-boosted tree model with the fixed settings ``GBM`` (the non-linear probe; ``--no-gbm`` skips it):

- returns: out-of-sample R^2 against the zero forecast and against the training mean; the daily cross-sectional
  rank IC (Spearman of forecast and outcome across the assets listed that day, days with >= 5 assets), its mean
  and t-statistic; the annualised Sharpe of the gross top-minus-bottom quintile spread (no costs);
- volatility: R^2 of the log future volatility against the training mean, for the ridge and for persistence.

Training targets end before the validation year (a day's target is used only if it is realised by the training
span's last close). Writes ``<results-dir>/<name>.json`` and ``.md`` and prints the table.

    python benchmarks/study_predictability.py [--source csv|synthetic] [--years 2021 2022 2023] [--ridge 1 100]
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
#: Ridge penalties reported (each ``alpha * n_samples``), declared before the first real-data run.
RIDGE: tuple[float, ...] = (0.01, 1.0, 100.0)
#: The gradient-boosted probe's fixed settings (declared before its first real-data run; none tuned).
GBM: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 200,
                       "l2_regularization": 1.0, "early_stopping": False, "random_state": 0}
MIN_ASSETS_IC = 5


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--source", choices=("csv", "synthetic"), default="csv", help="csv = real data (default)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--years", type=int, nargs="+", default=[2021, 2022, 2023])
    p.add_argument("--ridge", type=float, nargs="+", default=list(RIDGE))
    p.add_argument("--no-gbm", action="store_true", help="skip the gradient-boosted tree probe")
    p.add_argument("--vol-horizon", type=int, default=20, help="days of future volatility (>= 2)")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--results-name", default="study_predictability")
    return p.parse_args(argv)


def samples(features: np.ndarray, returns: np.ndarray, listed: np.ndarray, risky: np.ndarray, days: np.ndarray,
            horizon: int) -> dict[str, np.ndarray]:
    """The (day, asset) samples of ``days`` whose targets are known by day ``max(days) + 1``'s close.

    ``features`` (T, N, F), ``returns`` (T, N) (``returns[t]``: close t -> t+1), ``listed`` (T, N) bool, ``risky``
    (N,) bool, ``days`` (D,) sorted day indices. A sample needs the asset listed on t and t+1 (next-day return)
    and on ``t - horizon .. t + horizon`` (trailing and future volatility, both over ``horizon`` returns).
    Returns ``x`` (S, F), ``ret`` (S,), ``log_vol`` (S,) = log std(returns[t : t+horizon]), ``trail`` (S,) =
    log std(returns[t-horizon : t]) (known at t's close), ``day`` (S,), ``asset`` (S,).
    """
    last = int(days.max()) + 1  # the last close whose return may enter a target
    out: dict[str, list] = {k: [] for k in ("x", "ret", "log_vol", "trail", "day", "asset")}
    for t in days:
        t = int(t)
        if t - horizon < 0 or t + horizon > last:
            continue
        ok = risky & listed[t - horizon : t + horizon + 1].all(axis=0)
        if not ok.any():
            continue
        idx = np.flatnonzero(ok)
        fut = returns[t : t + horizon, idx].std(axis=0, ddof=1)
        past = returns[t - horizon : t, idx].std(axis=0, ddof=1)
        keep = (fut > 0) & (past > 0)
        idx, fut, past = idx[keep], fut[keep], past[keep]
        out["x"].append(features[t, idx])
        out["ret"].append(returns[t, idx])
        out["log_vol"].append(np.log(fut))
        out["trail"].append(np.log(past))
        out["day"].append(np.full(idx.size, t))
        out["asset"].append(idx)
    n_features = features.shape[2]
    return {k: (np.concatenate(v) if v else np.empty((0, n_features) if k == "x" else 0)) for k, v in out.items()}


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Coefficients (F,) and intercept of ``min |y - b - x w|^2 + alpha * n * |w|^2`` (intercept unpenalised)."""
    mx, my = x.mean(axis=0), float(y.mean())
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * x.shape[0] * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, my - float(mx @ w)


def r2(y: np.ndarray, pred: np.ndarray, reference: np.ndarray | float) -> float:
    """Out-of-sample R^2 ``1 - SSE(pred) / SSE(reference)``; negative = worse than the reference forecast."""
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - reference) ** 2))


def rank_ic(day: np.ndarray, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-day Spearman correlation (D,) of ``pred`` and ``y`` across assets, days with >= MIN_ASSETS_IC assets."""
    out = []
    for t in np.unique(day):
        m = day == t
        if m.sum() < MIN_ASSETS_IC:
            continue
        a = np.argsort(np.argsort(pred[m])).astype(float)
        b = np.argsort(np.argsort(y[m])).astype(float)
        if a.std() > 0 and b.std() > 0:
            out.append(float(np.corrcoef(a, b)[0, 1]))
    return np.asarray(out)


def quintile_spread(day: np.ndarray, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-day return (D,) of the top fifth of assets by ``pred`` minus the bottom fifth (equal weight, gross)."""
    out = []
    for t in np.unique(day):
        m = np.flatnonzero(day == t)
        if m.size < MIN_ASSETS_IC:
            continue
        k = max(1, m.size // 5)
        order = m[np.argsort(pred[m], kind="stable")]
        out.append(float(y[order[-k:]].mean() - y[order[:k]].mean()))
    return np.asarray(out)


def ridge_model(alpha: float) -> Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``fit(x, y) -> predict`` for ``ridge_fit`` at penalty ``alpha``."""
    def fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        w, b = ridge_fit(x, y, alpha)
        return lambda z: z @ w + b
    return fit


def gbm_fit(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A gradient-boosted tree model with fixed settings (``GBM``; no early stopping, seeded): the non-linear probe."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(**GBM).fit(x, y)
    return model.predict


def models_of(alphas: list[float], gbm: bool) -> dict[str, Callable]:
    """The probes by name: ``ridge <alpha>`` for each penalty, then ``gbm`` when asked."""
    out = {f"ridge {a:g}": ridge_model(a) for a in alphas}
    if gbm:
        out["gbm"] = gbm_fit
    return out


def probe(train: dict[str, np.ndarray], val: dict[str, np.ndarray], models: dict[str, Callable],
          periods: int) -> dict[str, Any]:
    """Every measure of the module docstring for one fold (``samples`` of the training and validation days),
    for each of ``models`` (name -> ``fit(x, y) -> predict``)."""
    from training.metrics import sharpe_ratio

    res: dict[str, Any] = {"n_train": int(train["ret"].size), "n_val": int(val["ret"].size),
                           "vol_persistence_r2": r2(val["log_vol"], val["trail"], float(train["log_vol"].mean())),
                           "returns": {}, "volatility": {}}
    for name, fit in models.items():
        pred = fit(train["x"], train["ret"])(val["x"])
        ic = rank_ic(val["day"], pred, val["ret"])
        spread = quintile_spread(val["day"], pred, val["ret"])
        res["returns"][name] = {
            "r2_vs_zero": r2(val["ret"], pred, 0.0),
            "r2_vs_train_mean": r2(val["ret"], pred, float(train["ret"].mean())),
            "rank_ic_mean": float(ic.mean()) if ic.size else float("nan"),
            "rank_ic_t": float(ic.mean() / ic.std(ddof=1) * np.sqrt(ic.size)) if ic.size > 1 and ic.std() > 0
            else float("nan"),
            "quintile_spread_sharpe": sharpe_ratio(spread, 0.0, periods) if spread.size > 1 else float("nan"),
            "ic_days": int(ic.size)}
        vol_pred = fit(train["x"], train["log_vol"])(val["x"])
        res["volatility"][name] = {"r2_vs_train_mean": r2(val["log_vol"], vol_pred, float(train["log_vol"].mean()))}
    return res


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from data.atomic_files import atomic_write_text, write_json
    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store
    from training.config import DataError, load_experiment
    from training.rollout import periods_of
    from training.walk_forward import expanding_folds

    try:
        if any(not a > 0 for a in args.ridge):
            raise DataError(f"--ridge penalties must be positive, got {args.ridge}")
        if args.vol_horizon < 2:
            raise DataError(f"--vol-horizon must be at least 2 days, got {args.vol_horizon}")
        data_dir = args.data_dir if args.source == "csv" else None
        cfg = load_experiment(args.config, {"data.source": args.source, "data.data_dir": data_dir})
        folds = expanding_folds(cfg.data.start, cfg.data.end, args.years)
        market = load_market(cfg.data, source=args.source, data_dir=data_dir, verbose=False)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label = ("SYNTHETIC market (not real data)" if args.source == "synthetic"
             else f"REAL daily prices (csv: {args.data_dir}, to 2023-12-31)")
    t0 = time.perf_counter()
    folds_out = []
    for fold in folds:
        store = build_feature_store(market, fold.train_end, clip=cfg.data.clip)
        dates = np.asarray(store.dates, dtype="datetime64[D]")
        risky = np.array([c != "stable" for c in store.categories])
        periods = periods_of(store)
        train_days = np.flatnonzero(dates < np.datetime64(fold.train_end, "D"))
        val_days = np.flatnonzero((dates >= np.datetime64(fold.val_start, "D"))
                                  & (dates < np.datetime64(fold.val_end, "D")))
        feats, rets, listed = store.features, np.asarray(store.returns, dtype=np.float64), store.listed
        train = samples(feats, rets, listed, risky, train_days, args.vol_horizon)
        val = samples(feats, rets, listed, risky, val_days, args.vol_horizon)
        if train["ret"].size == 0 or val["ret"].size == 0:
            print(f"error: fold {fold.year} has no samples with {args.vol_horizon} days of volatility around them",
                  file=sys.stderr)
            return 2
        folds_out.append({"year": fold.year, "train": f"{fold.train_start}..{fold.train_end}",
                          "validate": f"{fold.val_start}..{fold.val_end}", "n_features": int(feats.shape[2]),
                          "n_risky_assets": int(risky.sum()),
                          **probe(train, val, models_of(args.ridge, not args.no_gbm), periods)})
    table = text_table(folds_out, args)
    print(f"{label}\n{table}\n({time.perf_counter() - t0:.1f} s)")
    res_dir = Path(args.results_dir)
    report = {"data": label, "settings": {"config": args.config, "years": args.years, "ridge": args.ridge,
                                          "vol_horizon": args.vol_horizon}, "folds": folds_out, "table": table}
    write_json(res_dir / f"{args.results_name}.json", report)
    atomic_write_text(res_dir / f"{args.results_name}.md", f"# Predictability probe: {label}\n\n```\n{table}\n```\n")
    print(f"wrote {res_dir / args.results_name}.json and .md")
    return 0


def text_table(folds: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (f"{'fold':>5} {'model':>10} {'ret R2 vs 0':>12} {'ret R2 vs mean':>15} {'rank IC':>8} {'IC t':>6} "
            f"{'Q5-Q1 Sharpe':>13} {'logvol R2':>10} {'persistence R2':>15}")
    lines = [head, "-" * len(head)]
    for f in folds:
        for name in f["returns"]:
            r, v = f["returns"][name], f["volatility"][name]
            lines.append(f"{f['year']:>5} {name:>10} {r['r2_vs_zero']:>12.4f} {r['r2_vs_train_mean']:>15.4f} "
                         f"{r['rank_ic_mean']:>8.4f} {r['rank_ic_t']:>6.2f} {r['quintile_spread_sharpe']:>13.2f} "
                         f"{v['r2_vs_train_mean']:>10.3f} {f['vol_persistence_r2']:>15.3f}")
    lines.append(f"(pooled ridge and gradient-boosted trees on {folds[0]['n_features']} features, risky assets; "
                 f"vol = log std of the next "
                 f"{args.vol_horizon} daily returns; persistence = the trailing {args.vol_horizon} days')")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
