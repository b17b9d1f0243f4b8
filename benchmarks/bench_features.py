"""Benchmark: feature build + TFRecord write, and tf.data window throughput against plain numpy.

Real data: the 21 yfinance CSVs in ../shared/data/market (``--data-dir``), all tickers, 2014..2023.
Measured in one run:

- build: ``load_market`` (CSV), ``build_feature_store`` (82 features x 21 assets), ``write_store``
  (GZIP TFRecords); wall time each and peak traced memory (tracemalloc, a separate pass so that the
  timed pass is not slowed by tracing) plus the process's peak RSS.
- read, windows of 60 days, batches of 64, shuffled, one full epoch, every batch handed over as numpy:
  ``tf.data``: ``window_dataset(...).as_numpy_iterator()``; ``numpy peer``: the same arrays saved as
  ``.npy`` in the same run and the same windows (``features[t - 59 .. t]``) gathered per batch with a
  numpy permutation. Two measures: from disk (building the dataset -- reading and decoding the shards
  -- vs ``np.load``, plus the epoch) and built once (the epoch only, dataset/arrays reused). Throughput
  in days/s (one sample = the window ending at day t), median and best of the epochs (the best is
  the least disturbed by other processes on a shared machine), and the ratio tf.data / numpy.
  Goals: build < 30 s, ratio >= 0.5. ``data.tf_pipeline`` turns on TensorFlow's pooled CPU allocator
  (``TF_CPU_ALLOCATOR_USE_BFC=true`` unless set); run with it set to ``false`` to see the cost of
  page-faulting a fresh 26 MB tensor per batch.

Usage: ``python benchmarks/bench_features.py [--data-dir DIR] [--epochs N]``; prints a table and
writes ``benchmarks/results/bench_features.json``.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from bench_common import DEFAULT_DATA_DIR, UNIVERSE

from data.config import DataConfig
from data.data_loader import load_market
from data.feature_engineering import build_feature_store
from data.market import DataError

WINDOW, BATCH = 60, 64


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def numpy_windows(feats: np.ndarray, returns: np.ndarray, tradable: np.ndarray, window: int, batch: int,
                  seed: int):
    """The numpy peer's batches: shuffled sample days, each batch's windows gathered by fancy indexing."""
    days = np.random.default_rng(seed).permutation(np.arange(window - 1, feats.shape[0] - 1))
    offsets = np.arange(-window + 1, 1)
    for lo in range(0, days.size, batch):
        t = days[lo:lo + batch]
        yield {"features": feats[t[:, None] + offsets], "target": returns[t], "mask": tradable[t], "day": t}


def numpy_from_disk(npy_dir: Path, window: int, batch: int, seed: int) -> int:
    """One epoch of the numpy peer including ``np.load`` of the arrays."""
    arrays = [np.load(npy_dir / f"{k}.npy") for k in ("features", "returns", "tradable")]
    return sum(b["features"].shape[0] for b in numpy_windows(*arrays, window, batch, seed))


def tf_from_disk(store_dir: Path, window: int, batch: int, seed: int) -> int:
    """One epoch of ``window_dataset`` including building it (reading and decoding the shards)."""
    from data.tf_pipeline import window_dataset

    ds = window_dataset(store_dir, window, batch, shuffle=True, seed=seed)
    return sum(b["features"].shape[0] for b in ds.as_numpy_iterator())


def _pair(median: float, best: float) -> str:
    return f"{median:,.0f} / {best:,.0f} days/s"


def _timed(fn, *args) -> tuple[int, float]:
    t = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--start", default="2014-01-01")
    parser.add_argument("--end", default="2023-12-31")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    cfg = DataConfig(universe=UNIVERSE, start=args.start, end=args.end, train_end="2021-12-31", source="csv",
                     data_dir=args.data_dir, risk_free="BIL")
    try:
        t = time.perf_counter()
        market = load_market(cfg, verbose=False)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        store = build_feature_store(market, cfg.train_end, clip=cfg.clip)
        t_build = time.perf_counter() - t
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rss_build = _rss_mb()
    tracemalloc.start()
    build_feature_store(load_market(cfg, verbose=False), cfg.train_end, clip=cfg.clip)
    peak_build = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    t = time.perf_counter()
    import tensorflow as tf  # noqa: F401  (timed on its own: a one-off cost per process)

    from data.tf_pipeline import read_store, window_dataset, write_store

    t_tf_import = time.perf_counter() - t
    work = Path(tempfile.mkdtemp(prefix="bench_features-"))
    try:
        store_dir = work / "store"
        t = time.perf_counter()
        files = write_store(store, store_dir)
        t_write = time.perf_counter() - t
        disk_mb = sum((store_dir / f).stat().st_size for f in files) / 2**20
        t = time.perf_counter()
        back = read_store(store_dir)
        t_read_store = time.perf_counter() - t
        assert back.content_hash == store.content_hash
        npy_dir = work / "npy"
        npy_dir.mkdir()
        for k in ("features", "returns", "tradable"):
            np.save(npy_dir / f"{k}.npy", getattr(store, k))
        npy_mb = sum(p.stat().st_size for p in npy_dir.iterdir()) / 2**20

        arrays = [getattr(store, k) for k in ("features", "returns", "tradable")]
        built = window_dataset(store_dir, WINDOW, BATCH, shuffle=True, seed=0)
        epoch_tf = lambda: sum(b["features"].shape[0] for b in built.as_numpy_iterator())  # noqa: E731
        epoch_np = lambda: sum(b["features"].shape[0] for b in numpy_windows(*arrays, WINDOW, BATCH, 0))  # noqa: E731
        tf_from_disk(store_dir, WINDOW, BATCH, 0)  # warm-up: graph tracing, page cache
        epoch_tf()
        times: dict[str, list[float]] = {"tf_disk": [], "np_disk": [], "tf_mem": [], "np_mem": []}
        for e in range(args.epochs):  # interleaved so that machine load hits both alike
            n_tf, dt = _timed(tf_from_disk, store_dir, WINDOW, BATCH, e + 1)
            times["tf_disk"].append(dt)
            n_np, dt = _timed(numpy_from_disk, npy_dir, WINDOW, BATCH, e + 1)
            times["np_disk"].append(dt)
            times["tf_mem"].append(_timed(epoch_tf)[1])
            times["np_mem"].append(_timed(epoch_np)[1])
        assert n_tf == n_np
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {k: n_tf / float(np.median(v)) for k, v in times.items()}
    best = {k: n_tf / float(np.min(v)) for k, v in times.items()}
    build_total = t_load + t_build + t_write
    result = {
        "data": {"tickers": list(store.tickers), "dropped": list(market.dropped), "start": str(store.dates[0]),
                 "end": str(store.dates[-1]), "n_days": store.n_days, "n_assets": store.n_assets,
                 "n_features": store.n_features, "market_days": market.n_days},
        "build": {"load_csv_s": t_load, "features_s": t_build, "write_tfrecords_s": t_write,
                  "total_s": build_total, "tensorflow_import_s": t_tf_import,
                  "peak_traced_mb_features": peak_build, "peak_rss_mb_after_build": rss_build,
                  "peak_rss_mb_end": _rss_mb(), "store_mb_on_disk": disk_mb, "npy_mb": npy_mb,
                  "read_store_s": t_read_store, "goal_total_s": 30.0},
        "read": {"window": WINDOW, "batch": BATCH, "samples_per_epoch": n_tf, "epochs": args.epochs,
                 "epoch_s": times, "days_per_s_median": rate, "days_per_s_best": best,
                 "ratio_from_disk": rate["tf_disk"] / rate["np_disk"],
                 "ratio_built_once": rate["tf_mem"] / rate["np_mem"],
                 "ratio_from_disk_best": best["tf_disk"] / best["np_disk"],
                 "ratio_built_once_best": best["tf_mem"] / best["np_mem"], "goal_ratio": 0.5,
                 "load_average_1m": os.getloadavg()[0]},
    }
    rows = [
        ("market (CSV load)", f"{market.n_assets} assets x {market.n_days} days", f"{t_load:.2f} s"),
        ("features", f"{store.n_days} days x {store.n_assets} x {store.n_features}", f"{t_build:.2f} s"),
        ("write TFRecords", f"{len(files) - 1} shards, {disk_mb:.1f} MB", f"{t_write:.2f} s"),
        ("build total (goal < 30 s)", "load + features + write", f"{build_total:.2f} s"),
        ("tensorflow import", "one-off per process", f"{t_tf_import:.2f} s"),
        ("peak memory, features", "tracemalloc peak", f"{peak_build:.0f} MB"),
        ("peak RSS", "after build / at end (TF loaded)", f"{rss_build:.0f} / {_rss_mb():.0f} MB"),
        ("read_store", "all shards -> FeatureStore", f"{t_read_store:.2f} s"),
        ("tf.data epoch from disk", f"build dataset + {n_tf} windows of {WINDOW}, batch {BATCH}",
         _pair(rate["tf_disk"], best["tf_disk"])),
        ("numpy peer from disk", "np.load + same windows (fancy-index gather)",
         _pair(rate["np_disk"], best["np_disk"])),
        ("ratio tf.data / numpy (disk)", "goal >= 0.5",
         f"{rate['tf_disk'] / rate['np_disk']:.2f} / {best['tf_disk'] / best['np_disk']:.2f}"),
        ("tf.data epoch, built once", "dataset reused across epochs", _pair(rate["tf_mem"], best["tf_mem"])),
        ("numpy peer, in memory", "same windows from loaded arrays", _pair(rate["np_mem"], best["np_mem"])),
        ("ratio tf.data / numpy (mem)", "goal >= 0.5",
         f"{rate['tf_mem'] / rate['np_mem']:.2f} / {best['tf_mem'] / best['np_mem']:.2f}"),
        ("machine load", "1-minute load average (2 cores)", f"{os.getloadavg()[0]:.1f}"),
    ]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'step':<{w0}}  {'size':<{w1}}  result (read rates: median / best of {args.epochs} epochs)")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    out = Path(__file__).resolve().parent / "results" / "bench_features.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
