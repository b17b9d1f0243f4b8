"""benchmarks/study_predictability.py: the probe finds a planted signal, finds nothing in noise, builds its
samples without looking past the span, and the script labels synthetic data and refuses bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _study():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("study_predictability", ROOT / "benchmarks" / "study_predictability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def market(planted: float, seed: int = 0, n_days: int = 400, n_assets: int = 10, n_features: int = 4):
    """Random returns; feature 0 = planted * (next-day return) + noise, the others pure noise."""
    rng = np.random.default_rng(seed)
    returns = 0.02 * rng.standard_normal((n_days, n_assets))
    features = rng.standard_normal((n_days, n_assets, n_features))
    features[:, :, 0] = planted * returns / 0.02 + rng.standard_normal((n_days, n_assets))
    return features, returns, np.ones((n_days, n_assets), dtype=bool), np.ones(n_assets, dtype=bool)


@pytest.mark.parametrize("planted, finds", [(1.0, True), (0.0, False)])
def test_probe_finds_a_planted_signal_and_nothing_in_noise(planted, finds):
    s = _study()
    features, returns, listed, risky = market(planted)
    train = s.samples(features, returns, listed, risky, np.arange(0, 250), 5)
    val = s.samples(features, returns, listed, risky, np.arange(260, 399), 5)
    out = s.probe(train, val, s.models_of([1e-3], gbm=True), 365)["returns"]
    for name in ("ridge 0.001", "gbm"):
        res = out[name]
        if finds:  # corr(feature, return) = 1/sqrt(2): a strong signal
            assert res["rank_ic_mean"] > 0.4 and res["rank_ic_t"] > 10 and res["r2_vs_zero"] > 0.2
            assert res["quintile_spread_sharpe"] > 5
        else:
            assert abs(res["rank_ic_mean"]) < 0.05 and res["r2_vs_zero"] < 0.01


def test_samples_by_hand_and_no_target_past_the_span():
    s = _study()
    returns = np.array([[0.01], [-0.01], [0.03], [0.0], [0.02], [-0.02], [0.05]])
    features = np.arange(7, dtype=float).reshape(7, 1, 1)
    out = s.samples(features, returns, np.ones((7, 1), dtype=bool), np.array([True]), np.arange(0, 5), 2)
    # day t needs t - 2 >= 0 and t + 2 <= last = 5: days 2, 3
    np.testing.assert_array_equal(out["day"], [2, 3])
    np.testing.assert_array_equal(out["ret"], [0.03, 0.0])
    np.testing.assert_allclose(out["log_vol"], np.log([np.std([0.03, 0.0], ddof=1), np.std([0.0, 0.02], ddof=1)]))
    np.testing.assert_allclose(out["trail"], np.log([np.std([0.01, -0.01], ddof=1), np.std([-0.01, 0.03], ddof=1)]))
    np.testing.assert_array_equal(out["x"][:, 0], [2.0, 3.0])


def test_ridge_matches_least_squares_as_the_penalty_vanishes():
    s = _study()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(200)
    w, b = s.ridge_fit(x, y, 1e-12)
    ref = np.linalg.lstsq(np.column_stack([x, np.ones(200)]), y, rcond=None)[0]
    np.testing.assert_allclose(np.append(w, b), ref, atol=1e-8)


def test_script_labels_synthetic_and_refuses_bad_input(tmp_path, capsys):
    s = _study()
    args = ["--source", "synthetic", "--years", "2023", "--ridge", "1", "--results-dir", str(tmp_path),
            "--results-name", "p"]
    assert s.main(args) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["data"].startswith("SYNTHETIC") and report["folds"][0]["year"] == 2023
    assert (tmp_path / "p.md").read_text().startswith("# Predictability probe: SYNTHETIC")
    capsys.readouterr()
    assert s.main(args[:-4] + ["--ridge", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ridge penalties must be positive") and "\n" not in err
