"""Wall time of a full backtest: every benchmark plus one PPO-Transformer agent, 3 years x 21 assets, real data.

    python benchmarks/bench_backtest.py [--data-dir ../shared/data/market] [--repeat 1]

Runs ``evaluation.backtester.backtest`` on the 21 CSVs of ``--data-dir`` (decisions 2021-01-01 ..
2023-12-31, window 60) with an untrained PPO agent saved the way ``training/train.py`` saves one, once
with the skfolio optimisers (the default) and once with the SciPy SLSQP optimisers as the peer (after an
untimed warm-up of both), and prints the stage times, wall and CPU. Goal: the whole backtest under 10 s on 2 cores. Writes
``benchmarks/results/bench_backtest.json``.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_common import DEFAULT_DATA_DIR, UNIVERSE

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, raw: dict, store) -> Path:
    """An untrained PPO-Transformer (default size) in a run directory laid out like train.py's."""
    from agents.common import ObsLayout
    from agents.io import save_agent
    from agents.ppo_agent import PPOAgent

    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": raw}))
    layout = ObsLayout(raw["env"]["window"], store.n_assets, store.n_features)
    agent = PPOAgent(layout.obs_dim, layout.action_dim, layout=layout, window=layout.window, seed=0)
    save_agent(agent, run)
    manifest = {"tickers": list(store.tickers), "feature_names": list(store.feature_names),
                "norm": {"mean": store.norm_mean.tolist(), "std": store.norm_std.tolist()}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions per optimiser (best kept)")
    args = parser.parse_args()
    if not Path(args.data_dir).is_dir():
        print(f"error: data folder '{args.data_dir}' does not exist", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)
    from evaluation import backtester as bt
    from training.config import from_raw

    raw = {
        "data": {"universe": UNIVERSE, "start": "2019-06-01", "end": "2023-12-31", "train_end": "2020-12-31",
                 "source": "csv", "data_dir": args.data_dir, "risk_free": "BIL"},
        "env": {"window": 60},
        "agent": {},
        "training": {},
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp = from_raw(raw)
        store = bt.build_store(exp.data, None, None, None)
        run_dir = make_run(tmp, raw, store)
        run = bt.read_run(str(run_dir))
        for optimiser in ("skfolio", "scipy"):  # untimed warm-up: imports and first-call costs
            warm = from_raw({**raw, "evaluation": {"optimiser": optimiser}})
            bt.backtest([run], warm, tmp / f"warm_{optimiser}", start="2023-11-01", end="2023-12-31",
                        log=lambda s: None)
        for optimiser in ("skfolio", "scipy"):
            best = None
            for rep in range(args.repeat):
                raw_eval = {**raw, "evaluation": {"optimiser": optimiser}}
                cfg = from_raw(raw_eval)
                t0, c0 = time.perf_counter(), time.process_time()
                report = bt.backtest([run], cfg, tmp / f"report_{optimiser}_{rep}", start="2021-01-01",
                                     end="2023-12-31", log=lambda s: None)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if best is None or wall < best[0]:
                    best = (wall, cpu, report)
            wall, cpu, report = best
            rows.append({"optimiser": optimiser, "wall_s": wall, "cpu_s": cpu, "timings_s": report["timings_s"],
                         "n_days": report["span"]["n_days"], "n_assets": len(report["tickers"]),
                         "sharpe": {r["name"]: r["metrics"]["sharpe"] for r in report["strategies"]}})

    sk, sp = rows
    stages = [k for k in sk["timings_s"] if k != "total"]
    print(f"backtest: {sk['n_days']} decision days x {sk['n_assets']} assets, 1 PPO agent + "
          f"{sum(k.startswith('strategy:') for k in stages) - 1} benchmarks, real data ({args.data_dir})")
    print(f"{'stage':34s} {'skfolio (s)':>12s} {'scipy peer (s)':>15s}")
    for k in stages + ["total"]:
        print(f"{k:34s} {sk['timings_s'][k]:12.2f} {sp['timings_s'][k]:15.2f}")
    ratio = sk["wall_s"] / sp["wall_s"]
    goal = "met" if sk["wall_s"] < 10.0 else "NOT met"
    print(f"wall time: skfolio {sk['wall_s']:.2f} s, scipy {sp['wall_s']:.2f} s, ratio skfolio/scipy {ratio:.2f}; "
          f"goal < 10 s {goal}")
    print(f"CPU time (the backtest is single-threaded): skfolio {sk['cpu_s']:.2f} s, scipy {sp['cpu_s']:.2f} s; "
          f"load average during the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    diffs = {k: abs(sk["sharpe"][k] - sp["sharpe"][k]) for k in sk["sharpe"]}
    worst = max(diffs, key=diffs.get)
    print(f"largest Sharpe difference between the two optimiser backends: {diffs[worst]:.4f} ({worst})")
    out = ROOT / "benchmarks" / "results" / "bench_backtest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"rows": rows, "ratio_skfolio_over_scipy": ratio, "loadavg_1min": os.getloadavg()[0], "goal_s": 10.0, "goal_met": sk["wall_s"] < 10.0,
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
