"""The feature store on disk: sharded GZIP TFRecords plus ``manifest.json``, and tf.data readers.

Layout of a store folder::

    manifest.json                       tickers, categories, dates, feature names, norm stats,
                                        train_end, source, content hash and the record schema
    days-00000-of-00004.tfrecord.gz     one tf.train.Example per day, days in calendar order
    ...

One example per day ``t`` holds (see ``manifest["schema"]``, which is enough for any tf.data reader):

- ``day``      int64 [1]            row index t in the store (0-based)
- ``date``     int64 [1]            days since 1970-01-01
- ``features`` float_list [N*F]     float32 (N, F), C order
- ``close``, ``returns``, ``volume`` bytes [1]: raw little-endian float64 (N,) (``tf.io.decode_raw``),
  so the float64 values (and NaN closes before listing) round-trip bit for bit
- ``tradable``, ``listed`` int64_list [N] 0/1

TensorFlow is imported inside the functions only, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_dir import make_temp_dir, publish_dir, sigterm_interrupts
from data.market import DataError, FeatureStore, store_content_hash

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: Days per shard: 512 days x 22 assets x 82 features x 4 bytes ~ 3.7 MB before compression.
SHARD_DAYS = 512
_EPOCH = np.datetime64("1970-01-01", "D")


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C++ writes included), then restore it."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> Any:
    """Import TensorFlow quietly (lazily: ``import data.tf_pipeline`` itself costs nothing); the one place
    the project imports it (``deployment`` calls this too).

    Process-wide defaults, set only if the user has not set them and effective only if TensorFlow has not
    run an op yet: quiet C++ logs (``TF_CPP_MIN_LOG_LEVEL=2``) and the pooled (BFC) CPU allocator. Without
    the pool every [B, window, N, F] batch is a fresh ~26 MB allocation whose page faults cost more than the
    copy itself (window batches 3-4x slower; see benchmarks/bench_features.py). The lines TensorFlow's C++
    core writes while it loads ("All log messages before absl::InitializeLog() ...", "oneDNN custom
    operations are on ...") ignore ``TF_CPP_MIN_LOG_LEVEL``, so stderr is muted during the import itself;
    afterwards TensorFlow's and absl's Python loggers report errors only. An import error still raises.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    with _stderr_fd_silenced():
        import tensorflow as tf
    tf.get_logger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass
    return tf


_tf = import_tensorflow


def schema_of(n_assets: int, n_features: int) -> dict[str, dict[str, Any]]:
    """The per-example schema: for every key its proto list type, length, decoded dtype and shape."""
    n, f = n_assets, n_features
    raw64 = {"kind": "bytes", "length": 1, "decode": "tf.io.decode_raw", "little_endian": True, "dtype": "float64"}
    return {
        "day": {"kind": "int64", "length": 1, "dtype": "int64", "shape": [], "meaning": "row index in the store"},
        "date": {"kind": "int64", "length": 1, "dtype": "int64", "shape": [], "meaning": "days since 1970-01-01"},
        "features": {"kind": "float", "length": n * f, "dtype": "float32", "shape": [n, f],
                     "meaning": "normalised features, C order (asset, feature)"},
        "close": {**raw64, "shape": [n], "meaning": "adjusted close, NaN where not listed"},
        "returns": {**raw64, "shape": [n], "meaning": "close[t+1]/close[t]-1, 0 where unknown"},
        "volume": {**raw64, "shape": [n], "meaning": "dollar volume of the day"},
        "tradable": {"kind": "int64", "length": n, "dtype": "bool", "shape": [n], "meaning": "1 = tradable at t"},
        "listed": {"kind": "int64", "length": n, "dtype": "bool", "shape": [n], "meaning": "1 = listed at t"},
    }


def _iso(d: np.datetime64) -> str:
    return str(np.datetime64(d, "D"))


@sigterm_interrupts
def write_store(store: FeatureStore, out_dir: str | os.PathLike, shard_days: int = SHARD_DAYS) -> list[str]:
    """Write ``store`` to ``out_dir`` (GZIP TFRecord shards + manifest.json); returns the file names.

    The folder is written under a temporary name next to ``out_dir`` and renamed into place, so a
    reader never sees half a store. An existing ``out_dir`` is replaced only if it is empty or holds a
    previous store (a ``manifest.json``); anything else raises ``DataError``.
    """
    tf = _tf()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise DataError(f"output '{out}' exists and is not a feature store; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    T, N, F = store.features.shape
    n_shards = max(1, -(-T // shard_days))
    tmp = make_temp_dir(out)  # killed writers' leftovers are swept first; SIGTERM runs the finally below
    try:
        files = []
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        days = (store.dates.astype("datetime64[D]") - _EPOCH).astype(np.int64)
        feats = np.ascontiguousarray(store.features, dtype=np.float32).reshape(T, N * F)
        raw = {k: np.ascontiguousarray(getattr(store, k), dtype="<f8") for k in ("close", "returns", "volume")}
        masks = {k: getattr(store, k).astype(np.int64) for k in ("tradable", "listed")}
        shard_rows = []
        for s in range(n_shards):
            name = f"days-{s:05d}-of-{n_shards:05d}.tfrecord.gz"
            lo, hi = s * shard_days, min(T, (s + 1) * shard_days)
            with tf.io.TFRecordWriter(str(tmp / name), options=options) as writer:
                for t in range(lo, hi):
                    feature = {
                        "day": tf.train.Feature(int64_list=tf.train.Int64List(value=[t])),
                        "date": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(days[t])])),
                        # .tolist(): 5x faster than handing protobuf a numpy row; float32 -> float -> float32 is exact
                        "features": tf.train.Feature(float_list=tf.train.FloatList(value=feats[t].tolist())),
                    }
                    for k, arr in raw.items():
                        feature[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[arr[t].tobytes()]))
                    for k, arr in masks.items():
                        feature[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=arr[t].tolist()))
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
            files.append(name)
            shard_rows.append([lo, hi])
        manifest = {
            "format_version": FORMAT_VERSION,
            "tickers": list(store.tickers),
            "categories": list(store.categories),
            "feature_names": list(store.feature_names),
            "n_days": T, "n_assets": N, "n_features": F,
            "dates": {"start": _iso(store.dates[0]), "end": _iso(store.dates[-1]), "n_days": T},
            "train_end": _iso(store.train_end),
            "source": store.source,
            "synthetic": store.synthetic,
            "norm": {"mean": [float(x) for x in store.norm_mean], "std": [float(x) for x in store.norm_std],
                     "fitted_on": f"listed asset-days with date <= {_iso(store.train_end)}"},
            "content_hash": store.content_hash,
            "compression": "GZIP",
            "files": files,
            "shard_rows": shard_rows,
            "schema": schema_of(N, F),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        publish_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files + [MANIFEST]


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The store's ``manifest.json`` as a dict; a missing or unreadable one raises ``DataError``."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"'{out_dir}' is not a feature store (no {MANIFEST}); build one with "
                        "data/feature_engineering.py") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"'{path}' cannot be read ({err})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"feature store '{out_dir}' has format version {manifest.get('format_version')}, "
                        f"this code reads version {FORMAT_VERSION}; rebuild it")
    return manifest


def parse_fn(schema: dict[str, dict[str, Any]], batched: bool = False):
    """A function serialized ``tf.train.Example`` -> dict of decoded tensors, built from ``schema`` alone.

    ``batched=True``: the function takes a vector [B] of serialized examples (``tf.io.parse_example``,
    much faster than one parse per day) and returns tensors with a leading B axis.
    """
    tf = _tf()
    kinds = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}
    spec = {k: tf.io.FixedLenFeature([v["length"]], kinds[v["kind"]]) for k, v in schema.items()}
    lead = [-1] if batched else []

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec) if batched else tf.io.parse_single_example(serialized, spec)
        out = {}
        for k, v in schema.items():
            x = ex[k]
            if v["kind"] == "bytes":
                x = tf.io.decode_raw(x[..., 0], tf.dtypes.as_dtype(v["dtype"]), little_endian=v["little_endian"])
            elif v["dtype"] == "bool":
                x = tf.not_equal(x, 0)
            out[k] = tf.reshape(x, lead + v["shape"])
        return out

    return parse


def _read_all(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every day of the store through tf.data, decoded and stacked: ``{key: tensor (T, ...)}``."""
    tf = _tf()
    paths = [str(Path(out_dir) / f) for f in manifest["files"]]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"feature store '{out_dir}' is missing its shard '{Path(missing[0]).name}'")
    T = int(manifest["n_days"])
    ds = tf.data.TFRecordDataset(paths, compression_type=manifest["compression"], buffer_size=8 << 20)
    whole = ds.batch(T + 1).map(parse_fn(manifest["schema"], batched=True)).get_single_element()
    day = whole["day"].numpy()
    if day.shape[0] != T or not np.array_equal(day, np.arange(T)):
        raise DataError(f"feature store '{out_dir}' is incomplete or out of order; rebuild it")
    return whole


def read_store(out_dir: str | os.PathLike) -> FeatureStore:
    """Read a store written by ``write_store`` back into a ``FeatureStore`` (bit-exact round trip).

    The content hash is recomputed and checked against the manifest; a mismatch raises ``DataError``.
    """
    manifest = read_manifest(out_dir)
    a = {k: v.numpy() for k, v in _read_all(out_dir, manifest).items()}
    store = FeatureStore(
        dates=_EPOCH + a["date"].astype("timedelta64[D]"),
        tickers=tuple(manifest["tickers"]), categories=tuple(manifest["categories"]),
        feature_names=tuple(manifest["feature_names"]), features=a["features"],
        close=a["close"], returns=a["returns"], volume=a["volume"], tradable=a["tradable"], listed=a["listed"],
        norm_mean=np.asarray(manifest["norm"]["mean"], dtype=np.float64),
        norm_std=np.asarray(manifest["norm"]["std"], dtype=np.float64),
        train_end=np.datetime64(manifest["train_end"], "D"), source=manifest["source"],
        content_hash=manifest["content_hash"],
    )
    if store_content_hash(store) != manifest["content_hash"]:
        raise DataError(f"feature store '{out_dir}' does not match its content hash; it was modified, rebuild it")
    return store


def window_dataset(out_dir: str | os.PathLike, window: int, batch_size: int, shuffle: bool = True,
                   seed: int = 0, target: str = "returns", start: str | None = None,
                   end: str | None = None, drop_remainder: bool = False):
    """Shuffled, batched, prefetched windows of the store as a ``tf.data.Dataset`` of dicts.

    Sample ``t`` (the last day of its window, ``window - 1 <= t <= T - 2`` so that the next-day
    return is known; with ``start``/``end`` (ISO, inclusive) further limited to those dates):

    - ``features`` float32 [B, window, N, F]: days ``t - window + 1 .. t``
    - ``target``   float64 [B, N]: ``returns[t]`` (simple, close t -> t+1) or with
      ``target="log_returns"`` ``log1p(returns[t])``
    - ``mask``     bool [B, N]: ``tradable[t]`` (the asset can be traded at t's close)
    - ``day``      int64 [B]: t, the row index in the store

    The shards are read once (when the dataset is built) through tf.data into one tensor; each batch
    of windows is one gather from it (no per-window copies on disk). Deterministic for a
    ``seed``; reshuffled each epoch. Hand the batches to PyTorch with ``ds.as_numpy_iterator()``.
    """
    tf = _tf()
    if target not in ("returns", "log_returns"):
        raise DataError(f"unknown target '{target}'; expected returns or log_returns")
    if window < 1 or batch_size < 1:
        raise DataError(f"window and batch_size must be positive, got {window} and {batch_size}")
    manifest = read_manifest(out_dir)
    T = int(manifest["n_days"])
    whole = _read_all(out_dir, manifest)
    dates = _EPOCH + whole["date"].numpy().astype("timedelta64[D]")
    lo, hi = window - 1, T - 2
    if start is not None:
        lo = max(lo, int(np.searchsorted(dates, np.datetime64(start, "D"), "left")))
    if end is not None:
        hi = min(hi, int(np.searchsorted(dates, np.datetime64(end, "D"), "right")) - 1)
    if hi < lo:
        raise DataError(f"no {window}-day window with a known next-day return in '{out_dir}' "
                        f"between {start or 'the start'} and {end or 'the end'}")
    feats, mask = whole["features"], whole["tradable"]
    tgt = whole["returns"] if target == "returns" else tf.math.log1p(whole["returns"])

    offsets = tf.range(-window + 1, 1, dtype=tf.int64)

    def gather(t):  # t: [B] sample days -> one gather of the B x window rows (a single copy)
        return {"features": tf.gather(feats, t[:, None] + offsets[None, :]), "target": tf.gather(tgt, t),
                "mask": tf.gather(mask, t), "day": t}

    ds = tf.data.Dataset.range(lo, hi + 1)
    if shuffle:
        ds = ds.shuffle(hi - lo + 1, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
