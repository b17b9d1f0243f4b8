"""The README's main command: the whole job end to end on the synthetic quickstart (small step count)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_runs_every_stage_and_allocates_with_onnxruntime(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "deployment/pipeline.py", "--config", "configs/quickstart.yaml",
         "--total-timesteps", "256", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr  # TensorFlow is quiet
    for path in ["feature_store/manifest.json", "run/policy.pth", "run/config.json", "report/metrics.md",
                 "report/metrics.json", "export/policy.onnx", "export/policy.ts", "export/policy_tf.onnx",
                 "export/saved_model", "export/parity.json"]:
        assert (out / path).exists(), path
    # The printed allocation is a point of the simplex over the universe plus cash.
    printed = dict(re.findall(r"^\s+([A-Z-]+)\s+(-?[0-9.]+)%$", result.stdout, flags=re.M))
    manifest = json.loads((out / "feature_store" / "manifest.json").read_text())
    assert set(manifest["tickers"]) | {"CASH"} <= set(printed)
    weights = np.array([float(printed[t]) for t in [*manifest["tickers"], "CASH"]]) / 100
    assert (weights >= 0).all() and abs(weights.sum() - 1) < 1e-3
    # The metrics table is printed, labelled synthetic, with the agent and the benchmarks.
    assert "SYNTHETIC" in result.stdout and "Equal-weight" in result.stdout and "agent" in result.stdout
    parity = json.loads((out / "export" / "parity.json").read_text())
    assert parity["passed"] is True
    # parity ran on the pipeline's own feature store, not on random N(0,1) inputs
    assert parity["observations"] == f"feature store '{out / 'feature_store'}'"
    # the report folder holds the daily series for researchers' own tools
    assert (out / "report" / "returns.csv").is_file() and (out / "report" / "weights.csv").is_file()
    # A plain onnxruntime session (no project code) accepts a batch of observations of the documented size.
    sess = ort.InferenceSession(str(out / "export" / "policy.onnx"), providers=["CPUExecutionProvider"])
    dim = sess.get_inputs()[0].shape[1]
    w = sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, dim), np.float32)})[0]
    assert w.shape == (3, len(manifest["tickers"]) + 1)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)


def test_pipeline_stops_with_the_stage_error_on_a_bad_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "deployment/pipeline.py", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr


def test_real_data_runs_do_not_overwrite_the_synthetic_demo(tmp_path):
    sys.path.insert(0, str(ROOT))
    from deployment.pipeline import default_out

    assert default_out("configs/quickstart.yaml", None) == "outputs/demo"
    assert default_out("configs/quickstart.yaml", "synthetic") == "outputs/demo"
    assert default_out("configs/quickstart.yaml", "csv") == "outputs/csv-quickstart"
    assert default_out("configs/paper.yaml", "csv") == "outputs/csv-paper"
    assert default_out("configs/paper.yaml", None) == "outputs/synthetic-paper"  # paper.yaml's data.source
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("data:\n  source: csv\n")
    assert default_out(str(cfg), None) == "outputs/csv-mine"
    assert default_out(str(tmp_path / "missing.yaml"), None) == "outputs/synthetic-missing"
