"""Expanding-window walk-forward: train on [start, Dec 31 of Y-1], validate on year Y, for every fold.

Fold k of validation years ``Y_1 < Y_2 < ...`` trains on ``[data.start, (Y_k - 1)-12-31]`` and validates on
``[Y_k-01-01, Y_k-12-31]`` (clipped to ``data.end``). Each fold rebuilds the feature store with its own
``train_end``, so the normalisation statistics are refit on that fold's training span only; the
manifests written into every run directory are checked for leaks (train span ends before the validation
span starts, statistics fitted with the fold's train_end). Every (fold, seed) job is an independent
``train.py`` run in ``OUT/fold_<Y>/seed_<s>``; they fan out over local processes or Ray
(``training.parallel``). Model selection per fold: the seed with the best validation net Sharpe after
costs (excess over the T-bill leg); its run is copied to ``OUT/fold_<Y>/best``.

Usage::

    python training/walk_forward.py --config configs/paper.yaml --years 2021 2022 2023 --seeds 0 1 2 \
        --out runs/walk_forward [--workers 2] [--ray-address auto]
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_dir import make_temp_dir, publish_dir
from data.atomic_files import atomic_write_text
from data.market import DataError
from training.config import (
    ExperimentConfig,
    apply_overrides,
    from_raw,
    load_experiment,
    parse_set_option,
    to_raw,
)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold (ISO dates, inclusive): train ``[train_start, train_end]``, validate
    ``[val_start, val_end]``; ``year`` is the validation year."""

    year: int
    train_start: str
    train_end: str
    val_start: str
    val_end: str


def expanding_folds(start: str, end: str, years: list[int] | tuple[int, ...]) -> list[Fold]:
    """The expanding-window folds validating each year in ``years`` (sorted, unique).

    A fold needs at least one training day before its validation year and one validation day on or
    before ``end``; anything else raises ``DataError``.
    """
    if not years:
        raise DataError("walk-forward needs at least one validation year")
    d_start = np.datetime64(start, "D")
    d_end = np.datetime64(end, "D")
    folds = []
    for year in sorted(set(int(y) for y in years)):
        val_start = np.datetime64(f"{year:04d}-01-01", "D")
        train_end = val_start - np.timedelta64(1, "D")
        val_end = min(np.datetime64(f"{year:04d}-12-31", "D"), d_end)
        if train_end <= d_start:
            raise DataError(f"validation year {year} leaves no training data after data.start {start}")
        if val_start > d_end:
            raise DataError(f"validation year {year} starts after data.end {end}")
        folds.append(Fold(year, str(d_start), str(train_end), str(val_start), str(val_end)))
    return folds


def fold_raw_config(raw: dict[str, Any], fold: Fold, seed: int) -> dict[str, Any]:
    """The raw experiment mapping of one (fold, seed) job: train_end, val_end and seed overridden."""
    return apply_overrides(
        raw,
        {"data.train_end": fold.train_end, "training.val_end": fold.val_end, "training.seed": seed},
    )


def run_fold_job(raw: dict[str, Any], out: str, source: str | None, data_dir: str | None,
                 device: str = "cpu") -> dict[str, Any]:
    """Train and validate one (fold, seed) job into ``out``; returns the validation metrics mapping.

    Module level so that process pools and Ray can import it.
    """
    from training.train import run_training

    cfg = from_raw(raw, where="walk-forward job")
    return run_training(cfg, Path(out), source=source, data_dir=data_dir, progress=False, device=device)


def check_no_leak(run_dir: Path, fold: Fold) -> None:
    """Assert from the run directory's manifest and metrics that the fold did not look ahead.

    The manifest's normalisation ``train_end`` must equal the fold's, and every validation day must fall
    strictly after it. Raises ``AssertionError`` naming the run otherwise.
    """
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    metrics = json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))
    train_end = str(manifest["train_end"])[:10]
    assert train_end == fold.train_end, f"{run_dir}: normalisation fitted up to {train_end}, fold says {fold.train_end}"
    assert metrics["start"] > train_end, f"{run_dir}: validation starts {metrics['start']} <= train_end {train_end}"
    assert metrics["end"] <= fold.val_end, f"{run_dir}: validation ends {metrics['end']} after {fold.val_end}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(folds: list[Fold], seeds: list[int], results: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """Per-fold and overall summary of validation metrics; selects the best seed per fold by net Sharpe."""
    rows = []
    for fold in folds:
        per_seed = {s: results[(fold.year, s)] for s in seeds}
        best_seed = max(seeds, key=lambda s: per_seed[s]["sharpe"])
        sharpe_mean, sharpe_std = _mean_std([m["sharpe"] for m in per_seed.values()])
        rows.append(
            {
                "year": fold.year,
                "train": f"{fold.train_start}..{fold.train_end}",
                "validate": f"{fold.val_start}..{fold.val_end}",
                "sharpe_mean": sharpe_mean,
                "sharpe_std": sharpe_std,
                "max_drawdown_mean": _mean_std([m["max_drawdown"] for m in per_seed.values()])[0],
                "turnover_mean": _mean_std([m["turnover"] for m in per_seed.values()])[0],
                "best_seed": best_seed,
                "best_sharpe": per_seed[best_seed]["sharpe"],
                "best_total_return": per_seed[best_seed]["total_return"],
                "per_seed": {str(s): per_seed[s] for s in seeds},
            }
        )
    overall = {
        "sharpe_mean_all_runs": _mean_std([m["sharpe"] for m in results.values()])[0],
        "sharpe_std_all_runs": _mean_std([m["sharpe"] for m in results.values()])[1],
        "selected_sharpe_mean": _mean_std([r["best_sharpe"] for r in rows])[0],
        "max_drawdown_mean": _mean_std([m["max_drawdown"] for m in results.values()])[0],
        "turnover_mean": _mean_std([m["turnover"] for m in results.values()])[0],
        "n_runs": len(results),
    }
    return {"folds": rows, "overall": overall, "seeds": list(seeds)}


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per fold, then the overall row."""
    head = f"{'fold':>6} {'train':>23} {'validate':>23} {'Sharpe mean±sd':>16} {'maxDD':>7} {'turn/d':>7} {'best seed':>9} {'best Sharpe':>11}"
    lines = [head, "-" * len(head)]
    for r in summary["folds"]:
        lines.append(
            f"{r['year']:>6} {r['train']:>23} {r['validate']:>23} "
            f"{r['sharpe_mean']:>8.2f}±{r['sharpe_std']:<7.2f} {r['max_drawdown_mean']:>7.1%} "
            f"{r['turnover_mean']:>7.3f} {r['best_seed']:>9} {r['best_sharpe']:>11.2f}"
        )
    o = summary["overall"]
    lines.append("-" * len(head))
    lines.append(
        f"{'all':>6} {'':>23} {'':>23} {o['sharpe_mean_all_runs']:>8.2f}±{o['sharpe_std_all_runs']:<7.2f} "
        f"{o['max_drawdown_mean']:>7.1%} {o['turnover_mean']:>7.3f} {'':>9} {o['selected_sharpe_mean']:>11.2f}"
    )
    return "\n".join(lines)


def walk_forward(
    cfg: ExperimentConfig,
    out: Path,
    years: list[int],
    seeds: list[int],
    source: str | None = None,
    data_dir: str | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every (fold, seed) job, check the folds for leaks, select per fold, write ``summary.json``.

    ``progress`` prints one line when the work starts and one per finished run (runs done / total, ETA).
    """
    from training.parallel import run_jobs

    if cfg.algo == "forecaster":
        raise DataError("walk-forward selects models on validation Sharpe; use --algo ppo, sac or ddpg")
    folds = expanding_folds(cfg.data.start, cfg.data.end, years)
    raw = to_raw(cfg)
    out.mkdir(parents=True, exist_ok=True)
    keys = [(f.year, s) for f in folds for s in seeds]
    jobs = [
        {
            "raw": fold_raw_config(raw, f, s),
            "out": str(out / f"fold_{f.year}" / f"seed_{s}"),
            "source": source,
            "data_dir": data_dir,
            "device": device,
        }
        for f in folds
        for s in seeds
    ]
    if progress:
        print(f"walk-forward: {len(folds)} folds x {len(seeds)} seeds = {len(jobs)} runs of {cfg.algo} "
              f"({cfg.training.total_timesteps} steps each) into {out}", flush=True)
    outputs = run_jobs(run_fold_job, jobs, workers=workers, ray_address=ray_address,
                       label="walk-forward runs" if progress else None)
    results = dict(zip(keys, outputs))
    for f in folds:
        for s in seeds:
            check_no_leak(out / f"fold_{f.year}" / f"seed_{s}", f)
    summary = summarise(folds, list(seeds), results)
    for row in summary["folds"]:
        fold_dir = out / f"fold_{row['year']}"
        tmp = make_temp_dir(fold_dir / "best")
        try:
            shutil.copytree(fold_dir / f"seed_{row['best_seed']}", tmp, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoints", "tb"))
            publish_dir(tmp, fold_dir / "best")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    from agents.common import device_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="experiment YAML (default configs/quickstart.yaml)")
    parser.add_argument("--years", type=int, nargs="+", default=None, help="validation years (default training.val_years)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per fold (default training.seeds)")
    parser.add_argument("--algo", default=None)
    parser.add_argument("--source", choices=("yfinance", "csv", "synthetic"), default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--workers", type=int, default=1, help="local processes (default 1)")
    parser.add_argument("--ray-address", default=None, help="run the jobs as Ray tasks on this cluster")
    parser.add_argument("--out", default="runs/walk_forward")
    parser.add_argument("--device", type=device_argument, default="auto", help="auto, cpu or cuda (default auto)")
    args = parser.parse_args(argv)
    try:
        overrides: dict[str, Any] = dict(parse_set_option(s) for s in args.set)
        overrides.update({"training.algo": args.algo, "training.total_timesteps": args.total_timesteps})
        if args.source:
            overrides["data.source"] = args.source
        cfg = load_experiment(args.config, overrides)
        years = args.years or list(cfg.training.val_years)
        seeds = args.seeds or list(cfg.training.seeds)
        summary = walk_forward(cfg, Path(args.out), years, seeds, args.source, args.data_dir, args.workers, args.ray_address,
                               args.device)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    print(f"summary written to {Path(args.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
