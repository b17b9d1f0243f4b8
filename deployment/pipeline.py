"""The whole job in one command: features -> training -> backtest -> export -> one ONNX allocation.

Usage (from the repository root)::

    python deployment/pipeline.py [--config configs/quickstart.yaml] [--source synthetic|csv|yfinance]
                                  [--data-dir DIR] [--seed N] [--total-timesteps N] [--out DIR]

``--out`` defaults to ``outputs/demo`` for the synthetic quickstart and to ``outputs/<source>-<config name>``
otherwise (``outputs/csv-paper`` for the paper config on CSVs), so a real-data run never overwrites the demo.

Each stage is the project's own command-line tool run as a subprocess, exactly as a user would type it
(the commands are printed), so the demo exercises the documented contract end to end:

1. ``data/feature_engineering.py``  builds the TFRecord feature store;
2. ``training/train.py``            trains PPO-Transformer into a run directory;
3. ``evaluation/backtester.py``     backtests it out of sample against the classical benchmarks;
4. ``deployment/model_export.py``   exports TorchScript, ONNX, SavedModel and tf2onnx with a parity check
   on real observations from stage 1's feature store (``--store``);
5. a plain ``onnxruntime`` session loads ``policy.onnx`` and allocates once on the last observation.

It prints the metrics table and where the reports and exports are. A failing stage stops the run with
that stage's one-sentence error and its exit code.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, here and in the stages
# oneDNN's start-up notice (and absl's pre-init warning that precedes it) ignore the level above; with oneDNN's
# custom ops off TensorFlow prints nothing, and the export's parity check still compares every format.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _run_stage(name: str, argv: list[str]) -> float:
    """Run one CLI stage with the current interpreter; return its wall time in seconds."""
    cmd = [sys.executable, *argv]
    print(f"\n=== {name}\n$ python {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        print(f"error: stage '{name}' failed with exit code {result.returncode}", file=sys.stderr)
        raise SystemExit(result.returncode)
    return time.perf_counter() - t0


def allocate_once_with_onnxruntime(export_dir: Path, store_dir: Path) -> dict[str, float]:
    """Load ``policy.onnx`` in a plain onnxruntime session and allocate on the store's last observation.

    The store must be the one the policy was trained on (same content hash as the export's manifest).
    The observation is built exactly as the environment lays it out:
    ``[features window (window, N, F) | weights (N+1) | tradable mask (N)]`` with an all-cash portfolio.
    Returns ``{ticker: weight}`` plus ``"CASH"``.
    """
    import onnxruntime as ort

    from data.tf_pipeline import read_store

    session = ort.InferenceSession(str(export_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    window = int(json.loads(meta["obs_layout"])["window"])
    store = read_store(str(store_dir))
    trained_on = json.loads((export_dir / "manifest.json").read_text())["content_hash"]
    if store.content_hash != trained_on:
        raise SystemExit(f"error: {store_dir} is not the feature store the exported policy was trained on")
    n = store.n_assets
    # The last day on which every listed asset trades (a Sunday would leave the ETFs closed).
    all_open = np.flatnonzero((store.tradable == store.listed).all(axis=1))
    t = int(all_open[-1]) if all_open.size else store.n_days - 1
    print(f"  observation of {str(store.dates[t])} (window {window} days), starting from all cash")
    feats = store.features[t - window + 1 : t + 1].reshape(-1)
    weights = np.zeros(n + 1, dtype=np.float32)
    weights[-1] = 1.0
    mask = store.tradable[t].astype(np.float32)
    obs = np.concatenate([feats, weights, mask]).astype(np.float32)[None, :]
    input_name = session.get_inputs()[0].name
    (out,) = session.run(None, {input_name: obs})
    tickers = json.loads(meta["tickers"])
    return {t: float(w) for t, w in zip([*tickers, "CASH"], out[0])}


def default_out(config: str, source: str | None) -> str:
    """``outputs/demo`` for the synthetic quickstart, else ``outputs/<source>-<config stem>``; the source is
    ``--source`` or the config's ``data.source`` (synthetic when the config cannot be read: stage 1 then
    reports the problem)."""
    from data.config import load_yaml
    from data.market import DataError

    if source is None:
        try:
            source = str((load_yaml(str(ROOT / config) if not Path(config).is_absolute() else config).get("data")
                          or {}).get("source", "synthetic"))
        except (DataError, OSError, AttributeError):
            source = "synthetic"
    stem = Path(config).stem
    return "outputs/demo" if (source, stem) == ("synthetic", "quickstart") else f"outputs/{source}-{stem}"


def main(argv: list[str] | None = None) -> int:
    from agents.common import device_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--source", choices=["synthetic", "csv", "yfinance"], default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for the store, run, report and export (default "
                        "outputs/demo for the synthetic quickstart, else outputs/<source>-<config name>)")
    parser.add_argument("--device", type=device_argument, default="auto", help="auto, cpu or cuda (default auto)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_out(args.config, args.source)

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = [] if args.source is None else ["--source", args.source]
    data_dir = [] if args.data_dir is None else ["--data-dir", args.data_dir]
    steps = [] if args.total_timesteps is None else ["--total-timesteps", str(args.total_timesteps)]
    store_dir, run_dir, report_dir, export_dir = (out / s for s in ("feature_store", "run", "report", "export"))

    timings = {}
    t_start = time.perf_counter()
    timings["features"] = _run_stage(
        "1/5 feature store",
        ["data/feature_engineering.py", "--config", args.config, *source, *data_dir, "--out", str(store_dir)],
    )
    timings["train"] = _run_stage(
        "2/5 train PPO-Transformer",
        ["training/train.py", "--config", args.config, "--algo", "ppo", *source, *data_dir,
         "--seed", str(args.seed), *steps, "--device", args.device, "--out", str(run_dir)],
    )
    timings["backtest"] = _run_stage(
        "3/5 out-of-sample backtest",
        ["evaluation/backtester.py", "--run", str(run_dir), *source, *data_dir, "--device", args.device,
         "--out", str(report_dir)],
    )
    timings["export"] = _run_stage(
        "4/5 export (TorchScript, ONNX, SavedModel, tf2onnx)",
        ["deployment/model_export.py", "--run", str(run_dir), "--store", str(store_dir), "--out", str(export_dir)],
    )
    print("\n=== 5/5 allocate once with a plain onnxruntime session", flush=True)
    t0 = time.perf_counter()
    alloc = allocate_once_with_onnxruntime(export_dir, store_dir)
    timings["onnx_allocate"] = time.perf_counter() - t0
    for ticker, w in alloc.items():
        print(f"  {ticker:>10s}  {w:7.2%}")
    print(f"  {'sum':>10s}  {sum(alloc.values()):7.2%}")

    print("\n=== metrics (out of sample)")
    print((report_dir / "metrics.md").read_text())
    parity = json.loads((export_dir / "parity.json").read_text())
    print("=== where things are")
    print(f"  feature store : {store_dir}")
    print(f"  run           : {run_dir}")
    print(f"  report        : {report_dir} (metrics.md, metrics.json, HTML tear sheet and charts)")
    print(f"  export        : {export_dir} (policy.ts, policy.onnx, saved_model/, policy_tf.onnx)")
    print(f"  parity        : {json.dumps(parity.get('max_abs_diff', parity))} on {parity.get('observations')}")
    total = time.perf_counter() - t_start
    print("  stage seconds : " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f", total {total:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
