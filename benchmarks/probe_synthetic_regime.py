"""Can the agents see the synthetic market's stress regime? A linear probe of the hidden regime on the day's features.

SYNTHETIC market only (``data.synthetic``: its calm/stress Markov regime is known exactly, ``regime_path``). The
positive control of ``study_walk_forward.py`` asks an agent to move to cash in stress; this probe says whether
the information to do so is in what the agent sees. Per expanding fold (train on the days to Y-1, validate Y;
features normalised on the training span, as the agents see them): a logistic regression of "day t is a stress
day" on day t's features of every asset (``features[t]`` flattened, N*F inputs; L2 penalty ``C`` in ``--c``,
all reported), and, as the one-number rule, the trailing 20-day volatility of the equal-weight risky return
(``training.metrics``' regime signal) as a score. Reported: ROC AUC on the training and the validation days, and
the stress share of each span.

    python benchmarks/probe_synthetic_regime.py [--years 2021 2022 2023] [--c 0.01 0.1]

Writes ``benchmarks/results/probe_synthetic_regime.json`` and prints the table.
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


def probe_fold(config: str, year: int, cs: list[float]) -> dict[str, Any]:
    """AUCs of one fold (train on the days to ``year - 1``, validate ``year``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from data.data_loader import load_market
    from data.feature_engineering import build_feature_store
    from data.synthetic import regime_path
    from training import metrics as M
    from training.config import load_experiment

    train_end = f"{year - 1}-12-31"
    cfg = load_experiment(config, {"data.source": "synthetic", "data.train_end": train_end, "data.end": f"{year}-12-31"})
    market = load_market(cfg.data, source="synthetic", verbose=False)
    store = build_feature_store(market, train_end, clip=cfg.data.clip)
    mdates = np.asarray(market.dates, dtype="datetime64[D]")
    stress = regime_path(len(mdates), cfg.data.seed)[np.searchsorted(mdates, store.dates)]
    x = np.nan_to_num(store.features.reshape(len(store.dates), -1))
    train = store.dates <= np.datetime64(train_end)
    val = store.dates >= np.datetime64(f"{year}-01-01")
    out: dict[str, Any] = {"train_days": int(train.sum()), "validate_days": int(val.sum()),
                           "stress_share_train": float(stress[train].mean()), "stress_share_validate": float(stress[val].mean())}
    for c in cs:
        model = LogisticRegression(C=c, max_iter=3000).fit(x[train], stress[train])
        out[f"logistic_C{c:g}"] = {"train_auc": float(roc_auc_score(stress[train], model.decision_function(x[train]))),
                                   "validate_auc": float(roc_auc_score(stress[val], model.decision_function(x[val])))}
    vol = M.trailing_volatility(M.equal_weight_risky_return(store.returns, store.listed, store.categories))
    out["trailing_vol_20d"] = {"train_auc": float(roc_auc_score(stress[train], vol[train])),
                               "validate_auc": float(roc_auc_score(stress[val], vol[val]))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Linear probe of the synthetic market's hidden stress regime.")
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--years", type=int, nargs="+", choices=(2021, 2022, 2023), default=[2021, 2022, 2023])
    p.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1], help="inverse L2 penalties (all reported)")
    args = p.parse_args(argv)
    if any(c <= 0 for c in args.c):
        p.error("--c values must be positive")
    from data.atomic_files import atomic_write_text

    t0 = time.perf_counter()
    folds = {str(y): probe_fold(args.config, y, args.c) for y in args.years}
    probes = [k for k in next(iter(folds.values())) if isinstance(next(iter(folds.values()))[k], dict)]
    lines = [f"{'fold':>5} {'stress train/val':>17} " + " ".join(f"{k:>24}" for k in probes),
             f"{'':>5} {'':>17} " + " ".join(f"{'AUC train / validate':>24}" for _ in probes)]
    for y, f in folds.items():
        cells = " ".join(f"{f[k]['train_auc']:>15.3f} / {f[k]['validate_auc']:.3f}" for k in probes)
        lines.append(f"{y:>5} {f['stress_share_train']:>8.3f} / {f['stress_share_validate']:.3f} {cells}")
    table = "\n".join(lines)
    print(table)
    out = {"data": "SYNTHETIC market (data.synthetic; the regime is its hidden calm/stress state), not real data",
           "config": args.config, "folds": folds, "table": table, "minutes": (time.perf_counter() - t0) / 60}
    path = ROOT / "benchmarks" / "results" / "probe_synthetic_regime.json"
    atomic_write_text(path, json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
