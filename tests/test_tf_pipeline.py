"""TFRecord feature store: exact round trip, schema-only parsing, tf.data windows, atomic writes, CLI.

One store is built from a hand-made market and written once per module (TensorFlow's import is the
expensive part).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_features import make_market

from data.feature_engineering import build_feature_store
from data.market import DataError

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("dates", "features", "close", "returns", "volume", "tradable", "listed", "norm_mean", "norm_std")


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def store():
    return build_feature_store(make_market(), "2020-12-15", clip=5.0)


@pytest.fixture(scope="module")
def written(tf, store, tmp_path_factory):
    from data.tf_pipeline import write_store

    out = tmp_path_factory.mktemp("fs") / "store"
    files = write_store(store, out, shard_days=50)
    return out, files


def test_files_and_manifest(written, store):
    from data.tf_pipeline import read_manifest

    out, files = written
    assert sorted(files) == sorted(p.name for p in out.iterdir())  # nothing else, no temp leftovers
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    m = read_manifest(out)
    assert len(m["files"]) == 3 and m["files"][0] == "days-00000-of-00003.tfrecord.gz"
    assert m["tickers"] == list(store.tickers) and m["categories"] == list(store.categories)
    assert m["feature_names"] == list(store.feature_names)
    assert m["dates"] == {"start": str(store.dates[0]), "end": str(store.dates[-1]), "n_days": store.n_days}
    assert m["train_end"] == "2020-12-15" and m["synthetic"] is True and m["source"] == "synthetic"
    assert m["content_hash"] == store.content_hash
    assert np.array_equal(np.asarray(m["norm"]["mean"]), store.norm_mean)  # JSON floats round-trip exactly
    assert m["schema"]["features"]["shape"] == [store.n_assets, store.n_features]


def test_round_trip_is_exact(written, store):
    from data.tf_pipeline import read_store

    back = read_store(written[0])
    for name in ARRAYS:
        a, b = getattr(store, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name  # bit for bit, NaN closes included
    assert np.isnan(back.close).any()
    for name in ("tickers", "categories", "feature_names", "train_end", "source", "content_hash"):
        assert getattr(back, name) == getattr(store, name), name


def test_manifest_schema_alone_parses_the_shards(tf, written, store):
    """A plain tf.data reader written from the manifest only (no project code) recovers the arrays."""
    out = written[0]
    m = json.loads((out / "manifest.json").read_text())
    kinds = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}
    spec = {k: tf.io.FixedLenFeature([v["length"]], kinds[v["kind"]]) for k, v in m["schema"].items()}
    ds = tf.data.TFRecordDataset([str(out / f) for f in m["files"]], compression_type=m["compression"])
    rows = {k: [] for k in spec}
    for ex in ds.map(lambda s: tf.io.parse_single_example(s, spec)):
        for k, v in m["schema"].items():
            x = ex[k]
            if v["kind"] == "bytes":
                x = tf.io.decode_raw(x[0], tf.as_dtype(v["dtype"]), little_endian=v["little_endian"])
            rows[k].append(np.reshape(x.numpy(), v["shape"]))
    assert len(rows["day"]) == store.n_days
    np.testing.assert_array_equal(np.stack(rows["day"]), np.arange(store.n_days))
    np.testing.assert_array_equal(np.stack(rows["date"]), store.dates.astype(np.int64))
    np.testing.assert_array_equal(np.stack(rows["features"]), store.features)
    np.testing.assert_array_equal(np.stack(rows["close"]), store.close)
    np.testing.assert_array_equal(np.stack(rows["returns"]), store.returns)
    np.testing.assert_array_equal(np.stack(rows["tradable"]).astype(bool), store.tradable)
    np.testing.assert_array_equal(np.stack(rows["listed"]).astype(bool), store.listed)


def test_window_dataset_contents_and_coverage(written, store):
    from data.tf_pipeline import window_dataset

    window, batch = 20, 16
    seen = []
    for b in window_dataset(written[0], window, batch, shuffle=True, seed=3).as_numpy_iterator():
        assert b["features"].dtype == np.float32 and b["features"].shape[1:] == (window, store.n_assets,
                                                                                  store.n_features)
        assert b["features"].shape[0] <= batch
        for j, t in enumerate(b["day"]):
            np.testing.assert_array_equal(b["features"][j], store.features[t - window + 1: t + 1])
            np.testing.assert_array_equal(b["target"][j], store.returns[t])
            np.testing.assert_array_equal(b["mask"][j], store.tradable[t])
        seen.extend(b["day"].tolist())
    # every day with a full window and a known next-day return, exactly once per epoch
    assert sorted(seen) == list(range(window - 1, store.n_days - 1))
    assert seen != sorted(seen)  # shuffled


def test_window_dataset_is_deterministic_for_a_seed(written):
    from data.tf_pipeline import window_dataset

    def order(seed):
        ds = window_dataset(written[0], 10, 32, shuffle=True, seed=seed)
        return [np.concatenate([b["day"] for b in ds.as_numpy_iterator()]) for _ in range(2)]

    a, b, c = order(1), order(1), order(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # reshuffled each epoch
    assert not np.array_equal(a[0], c[0])


def test_window_dataset_dates_and_log_target(written, store):
    from data.tf_pipeline import window_dataset

    ds = window_dataset(written[0], 5, 1000, shuffle=False, target="log_returns", start="2020-11-01",
                        end="2020-11-30")
    (b,) = list(ds.as_numpy_iterator())
    assert [str(store.dates[t]) for t in (b["day"][0], b["day"][-1])] == ["2020-11-01", "2020-11-30"]
    np.testing.assert_allclose(b["target"], np.log1p(store.returns[b["day"]]), rtol=1e-15)
    with pytest.raises(DataError, match="unknown target"):
        window_dataset(written[0], 5, 8, target="prices")
    with pytest.raises(DataError, match="no 500-day window"):
        window_dataset(written[0], 500, 8)


def test_overwrite_rules_and_tamper_detection(store, tmp_path):
    from data.tf_pipeline import read_store, write_store

    out = tmp_path / "fs"
    write_store(store, out, shard_days=100)
    write_store(store, out, shard_days=1000)  # replacing a previous store is fine
    assert sorted(p.name for p in out.iterdir()) == ["days-00000-of-00001.tfrecord.gz", "manifest.json"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a feature store"):
        write_store(store, other)
    assert (other / "notes.txt").read_text() == "mine"
    m = json.loads((out / "manifest.json").read_text())
    m["norm"]["mean"][0] += 1.0
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="content hash"):
        read_store(out)
    with pytest.raises(DataError, match="not a feature store"):
        read_store(tmp_path / "nothing")


def test_cli_builds_a_store_from_the_synthetic_market(tf, tmp_path, capsys):
    """The CLI's success path in-process (TensorFlow is loaded already; the exit-2 paths run as
    subprocesses in test_features.py)."""
    from data.feature_engineering import main

    out = tmp_path / "fs"
    code = main(["--config", str(ROOT / "configs/quickstart.yaml"), "--source", "synthetic", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert "SYNTHETIC" in printed and f"{m['n_features']} per asset" in printed
    assert m["synthetic"] and m["tickers"][0] == "BTC-USD" and m["n_features"] >= 50


def test_cli_unwritable_output_exits_2(tf, tmp_path, capsys):
    from data.feature_engineering import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["--config", str(ROOT / "configs/quickstart.yaml"), "--source", "synthetic",
                 "--out", str(blocker / "fs")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write the feature store") and "Traceback" not in err
    assert blocker.read_text() == "x"


def test_cli_csv_source_matches_the_in_memory_pipeline(tf, store, tmp_path, capsys):
    """CSVs written from the hand-made market, read back by ``--source csv``, give the same store."""
    from data.feature_engineering import main
    from data.tf_pipeline import read_store

    market = make_market()
    data_dir = tmp_path / "csv"
    data_dir.mkdir()
    for i, ticker in enumerate(market.tickers):
        rows = np.flatnonzero(market.tradable[:, i])
        cols = ("open", "high", "low", "close", "volume")
        lines = ["Date,Open,High,Low,Close,Volume"] + [
            ",".join([str(market.dates[t])] + [f"{getattr(market, k)[t, i]:.17g}" for k in cols]) for t in rows]
        (data_dir / f"{ticker}.csv").write_text("\n".join(lines) + "\n")
    by_cat: dict[str, list[str]] = {}
    for ticker, cat in zip(market.tickers, market.categories):
        by_cat.setdefault(cat, []).append(ticker)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"data": {"universe": by_cat, "start": str(market.dates[0]),
                                        "end": str(market.dates[-1]), "train_end": "2020-12-15",
                                        "clip": 5.0, "source": "csv"}}))  # JSON is YAML
    code = main(["--config", str(cfg), "--data-dir", str(data_dir), "--out", str(tmp_path / "fs")])
    assert code == 0, capsys.readouterr().err
    back = read_store(tmp_path / "fs")
    assert back.source == "csv" and sorted(back.tickers) == sorted(store.tickers)
    perm = [store.tickers.index(t) for t in back.tickers]  # the config lists the tickers by category
    np.testing.assert_array_equal(back.dates, store.dates)
    np.testing.assert_array_equal(back.listed, store.listed[:, perm])
    np.testing.assert_array_equal(back.tradable, store.tradable[:, perm])
    np.testing.assert_allclose(back.features, store.features[:, perm], rtol=0, atol=1e-5)
    np.testing.assert_allclose(back.returns, store.returns[:, perm], rtol=1e-12, atol=0)


def test_tensorflow_starts_without_log_lines_and_its_loggers_report_errors_only():
    """The C++ lines TensorFlow writes while loading ("All log messages before absl::InitializeLog() ...",
    "oneDNN custom operations are on ...") ignore TF_CPP_MIN_LOG_LEVEL; ``import_tensorflow`` mutes them."""
    import subprocess
    import sys

    code = ("import logging; from data.tf_pipeline import import_tensorflow; tf = import_tensorflow(); "
            "from absl import logging as a; print(tf.constant([2.0]).numpy()[0], "
            "tf.get_logger().level == logging.ERROR, a.get_verbosity() == a.ERROR)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["2.0", "True", "True"]
    assert res.stderr == ""
