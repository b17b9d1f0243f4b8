"""Export a trained policy to TorchScript, ONNX and a TensorFlow SavedModel, and prove they agree.

Command line::

    python deployment/model_export.py --run RUN_DIR --out EXPORT_DIR [--store STORE_DIR] [--n-obs 1000]

writes into ``EXPORT_DIR`` (built in a temporary folder next to it, renamed into place at the end):

- ``policy.ts``: ``torch.jit.trace`` of the agent's ``policy_module()``;
- ``policy.onnx``: ``torch.onnx.export`` (opset 17, dynamic batch, input ``obs``, output ``weights``),
  checked with ``onnx.checker``; ``metadata_props`` carry tickers, categories, feature names, window,
  obs layout, normalisation (mean/std/clip), algorithm and version;
- ``policy_market.onnx``, ``policy_act.onnx``, ``policy_split.ts``: the market-only part and the
  portfolio part as separate graphs (``deployment.split_export``), so the server computes the market
  part once per day; their parity is in ``parity.json`` too;
- ``saved_model/``: the forward pass re-written in TensorFlow with the PyTorch weights copied in
  (``deployment.tf_policy``), signature ``allocate``; ``policy_tf.onnx``: that SavedModel via tf2onnx;
- ``parity.json``: max |weights - PyTorch weights| of each of the four on ``--n-obs`` observations built
  from the run's own features (days sampled from the feature store, random current weights, the day's
  tradable mask); synthetic N(0,1) observations only when no store can be found or rebuilt;
- ``config.json``, ``manifest.json``, ``policy.pth`` (copied, so the folder is self-contained for serving)
  and ``drift_reference.json`` (training-span feature quantiles for drift detection).

Exit status: 0 on success, 1 when any format differs from PyTorch by more than ``--tolerance`` (1e-5;
nothing is written then), 2 on bad input (one sentence, no traceback).
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_dir import make_temp_dir, publish_dir, sigterm_interrupts
from data.market import DataError, FeatureStore
from deployment.deployed_fund import ServingSpec, _section, read_json_config
from deployment.drift import DriftReference
from deployment.split_export import cpu_session, export_split

OPSET = 17
TOLERANCE = 1e-5
FORMATS = ("torchscript", "onnx", "saved_model", "tf_onnx")


class ParityError(Exception):
    """An exported format disagrees with PyTorch beyond the tolerance."""


def _log(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


# -- observations --------------------------------------------------------------------------------------

def find_store(run: Path, config: dict, store_dir: str | None) -> tuple[FeatureStore | None, str]:
    """The run's feature store: ``--store``, ``RUN/store``, or rebuilt from the config's data section."""
    from data.config import DataConfig, from_mapping

    candidates = [Path(store_dir)] if store_dir else [run / "store", run / "feature_store"]
    for c in candidates:
        if (c / "manifest.json").is_file():
            from data.tf_pipeline import read_store

            return read_store(c), f"feature store '{c}'"
    if store_dir:
        raise DataError(f"--store '{store_dir}' is not a feature store folder (no manifest.json)")
    section = _section(config, "data")
    if not section:
        return None, "synthetic N(0,1) observations (the run records no data section)"
    try:
        from data.feature_engineering import load_feature_store

        cfg = from_mapping(DataConfig, section, "data")
        return load_feature_store(cfg), f"features rebuilt from the run's data config (source {cfg.source})"
    except (DataError, OSError) as err:
        return None, f"synthetic N(0,1) observations (could not rebuild the run's features: {err})"


class ObservationSampler:
    """``n`` observations (obs_dim,) float32 from a store, materialised in chunks (a window is large).

    Day t (>= window-1) uniform; features ``store.features[t-window+1 : t+1]``; current weights drawn from
    a flat Dirichlet over the tradable assets plus cash; mask ``store.tradable[t]``.
    """

    def __init__(self, spec: ServingSpec, store: FeatureStore | None, n: int, seed: int = 0) -> None:
        self.spec, self.store, self.n = spec, store, n
        lay = spec.layout
        rng = np.random.default_rng(seed)
        self.rng_seed = seed
        if store is not None:
            if tuple(store.tickers) != spec.tickers or tuple(store.feature_names) != spec.feature_names:
                raise DataError("the feature store's tickers or features differ from the run's manifest")
            if store.n_days < lay.window:
                raise DataError(f"the feature store has {store.n_days} days, fewer than the window {lay.window}")
            self.days = rng.integers(lay.window - 1, store.n_days, size=n)
            self.mask = store.tradable[self.days].astype(np.float32)
        else:
            self.days = np.zeros(n, dtype=int)
            self.mask = (rng.random((n, lay.n_assets)) < 0.8).astype(np.float32)
        alpha = np.concatenate([self.mask, np.ones((n, 1), np.float32)], axis=1)
        g = rng.gamma(1.0, size=alpha.shape) * alpha
        self.weights = (g / g.sum(axis=1, keepdims=True)).astype(np.float32)

    def chunks(self, size: int = 128):
        lay = self.spec.layout
        rng = np.random.default_rng(self.rng_seed + 1)
        for lo in range(0, self.n, size):
            hi = min(self.n, lo + size)
            if self.store is not None:
                idx = self.days[lo:hi, None] + np.arange(-lay.window + 1, 1)[None, :]
                feats = self.store.features[idx]  # (b, window, N, F)
            else:
                feats = rng.standard_normal((hi - lo, lay.window, lay.n_assets, lay.n_features)).astype(np.float32)
            yield lay.join_numpy(feats, self.weights[lo:hi], self.mask[lo:hi])


# -- exporters -----------------------------------------------------------------------------------------

def export_torchscript(module, example, path: Path) -> None:
    import torch

    # nn.LSTM's internal weight-layout checks emit TracerWarnings that do not affect the graph; parity
    # on other batch sizes is checked afterwards.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def export_onnx(module, example, path: Path, metadata: dict[str, str]) -> None:
    """``torch.onnx.export`` at opset 17 with a dynamic batch axis, metadata attached, checker passed."""
    import onnx
    import torch

    # With gradients on, nn.TransformerEncoderLayer skips its fused fast path
    # (aten::_transformer_encoder_layer_fwd has no ONNX symbolic) and traces plain ops.
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), opset_version=OPSET, input_names=["obs"],
                          output_names=["weights"], dynamic_axes={"obs": {0: "batch"}, "weights": {0: "batch"}},
                          dynamo=False)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def tf_module_for(algo: str, agent, layout):
    """The TensorFlow twin of ``agent.policy_module()``, chosen by the policy's encoder (``agents.registry``:
    PPO's ``config.encoder``, LSTM for SAC/DDPG); the forecaster is not a policy."""
    from agents.registry import REGISTRY, algorithm
    from deployment import tf_policy

    spec = algorithm(algo)
    if not spec.policy:
        policies = ", ".join(name for name, a in REGISTRY.items() if a.policy)
        raise DataError(f"exporting algorithm '{algo}' is not supported; expected {policies}")
    encoder = spec.policy_encoder(agent.config)
    if encoder == "transformer":
        state = {k: v.detach().cpu().numpy() for k, v in agent.model_state().items()}
        return tf_policy.transformer_policy(state, layout, agent.config.n_heads,
                                            agent.config.action_head == "exposure")
    module = agent.policy_module()  # LSTMPolicyModule: SAC/DDPG actors, PPO-LSTM and PPO-MLP
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    exposure = bool(getattr(module, "exposure", False))
    if encoder == "lstm":
        return tf_policy.lstm_policy(state, layout, bool(module.cash_reference), exposure)
    if encoder == "mlp":
        return tf_policy.mlp_policy(state, layout, exposure)
    raise DataError(f"exporting a policy with encoder '{encoder}' is not supported; expected transformer, lstm or mlp")


def _ort(path: Path):
    sess = cpu_session(path, threads=1)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def parity(module, tmp: Path, sampler: ObservationSampler) -> dict[str, Any]:
    """Max |w_format - w_torch| over the sampler's observations for the four formats."""
    import torch

    import deployment.tf_policy as tfp

    tf = tfp._tf()
    ts = torch.jit.load(str(tmp / "policy.ts"))
    runners = {
        "torchscript": lambda x: ts(torch.from_numpy(x)).detach().numpy(),
        "onnx": _ort(tmp / "policy.onnx"),
        "saved_model": None,
        "tf_onnx": _ort(tmp / "policy_tf.onnx"),
    }
    sig = tf.saved_model.load(str(tmp / "saved_model")).signatures[tfp.SIGNATURE]
    runners["saved_model"] = lambda x: sig(obs=tf.constant(x))["weights"].numpy()
    worst = dict.fromkeys(FORMATS, 0.0)
    sums = {"min_weight": np.inf, "max_sum_error": 0.0}
    n = 0
    for chunk in sampler.chunks():
        with torch.no_grad():
            ref = module(torch.from_numpy(chunk)).numpy()
        sums["min_weight"] = min(sums["min_weight"], float(ref.min()))
        sums["max_sum_error"] = max(sums["max_sum_error"], float(np.abs(ref.sum(axis=1) - 1).max()))
        for name, run in runners.items():
            out = run(chunk)
            if out.shape != ref.shape:
                raise ParityError(f"{name} returned shape {out.shape}, PyTorch {ref.shape}")
            worst[name] = max(worst[name], float(np.abs(out.astype(np.float64) - ref).max()))
        n += len(chunk)
    return {"n_observations": n, "max_abs_diff": worst, "pytorch_min_weight": sums["min_weight"],
            "pytorch_max_sum_error": sums["max_sum_error"]}


def drift_reference(spec: ServingSpec, store: FeatureStore | None) -> DriftReference:
    """Quantiles of listed asset-days' normalised features with date <= train_end (N(0,1) without a store)."""
    if store is None:
        return DriftReference.standard_normal(len(spec.feature_names))
    train = store.dates <= store.train_end
    rows = store.features[train][store.listed[train]]
    if len(rows) < 10:
        return DriftReference.standard_normal(len(spec.feature_names))
    return DriftReference.from_sample(rows)


@sigterm_interrupts
def export_run(run_dir: str, out_dir: str, store_dir: str | None = None, n_obs: int = 1000,
               tolerance: float = TOLERANCE, seed: int = 0) -> dict[str, Any]:
    """Do the whole export (see the module docstring); returns the parity report.

    Raises ``DataError`` on bad input and ``ParityError`` (nothing written) above ``tolerance``.
    """
    import torch

    from agents.io import load_agent
    from deployment import tf_policy

    run, out = Path(run_dir), Path(out_dir)
    if not run.is_dir():
        raise DataError(f"run directory '{run}' does not exist")
    for name in ("policy.pth", "config.json", "manifest.json"):
        if not (run / name).is_file():
            raise DataError(f"run directory '{run}' has no {name}")
    if n_obs < 1:
        raise DataError(f"--n-obs must be at least 1, got {n_obs}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / "parity.json").is_file():
        raise DataError(f"output '{out}' exists and is not an export folder; choose a new or empty folder")
    config = read_json_config(run / "config.json")
    spec = ServingSpec.from_documents(config, read_json_config(run / "manifest.json", "manifest"))
    try:
        agent = load_agent(run)
    except ValueError as err:
        raise DataError(str(err)) from None
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    module = agent.policy_module().eval()
    store, origin = find_store(run, config, store_dir)
    sampler = ObservationSampler(spec, store, n_obs, seed)
    example = next(sampler.chunks(2))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)  # killed exports' leftovers are swept first; SIGTERM runs the finally below
    try:
        t0 = time.perf_counter()
        _log(f"{spec.algo} policy, obs_dim {spec.layout.obs_dim}, {spec.layout.n_assets} assets; observations: {origin}")
        export_torchscript(module, torch.from_numpy(example), tmp / "policy.ts")
        _log("policy.ts written (TorchScript)")
        export_onnx(module, torch.from_numpy(example), tmp / "policy.onnx", spec.to_metadata())
        _log(f"policy.onnx written (opset {OPSET}, onnx.checker passed)")
        split = export_split(module, spec.layout, next(sampler.chunks(64)), tmp)  # serving: market once a day
        tf_module = tf_module_for(spec.algo, agent, spec.layout)
        tf_policy.save_tf_policy(tf_module, str(tmp / "saved_model"))
        _log(f"saved_model/ written (signature '{tf_policy.SIGNATURE}')")
        tf_policy.saved_model_to_onnx(str(tmp / "saved_model"), str(tmp / "policy_tf.onnx"), OPSET)
        _log("policy_tf.onnx written (tf2onnx)")
        report = parity(module, tmp, sampler)
        report["max_abs_diff"].update(split)
        report.update({"tolerance": tolerance, "observations": origin, "algo": spec.algo,
                       "version": spec.version, "seconds": round(time.perf_counter() - t0, 2),
                       "passed": max(report["max_abs_diff"].values()) <= tolerance})
        for name, diff in report["max_abs_diff"].items():
            _log(f"parity {name:<12} max |dw| = {diff:.3e}")
        if not report["passed"]:
            bad = max(report["max_abs_diff"], key=report["max_abs_diff"].get)
            raise ParityError(f"{bad} differs from PyTorch by {report['max_abs_diff'][bad]:.3e} "
                              f"> {tolerance:g}; nothing was written")
        for name in ("policy.pth", "config.json", "manifest.json"):
            shutil.copyfile(run / name, tmp / name)
        (tmp / "drift_reference.json").write_text(json.dumps(drift_reference(spec, store).to_dict()))
        (tmp / "parity.json").write_text(json.dumps(report, indent=2))
        publish_dir(tmp, out)
        return report
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a run's policy to TorchScript, ONNX and TF with a parity check.")
    p.add_argument("--run", required=True, help="run directory (policy.pth, config.json, manifest.json)")
    p.add_argument("--out", required=True, help="export directory to create")
    p.add_argument("--store", help="feature store folder for the parity observations (default: the run's)")
    p.add_argument("--n-obs", type=int, default=1000, help="observations in the parity check (default 1000)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    try:
        report = export_run(args.run, args.out, args.store, args.n_obs, args.tolerance, args.seed)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ParityError as err:
        print(f"error: parity check failed: {err}", file=sys.stderr)
        return 1
    _log(f"export complete in {report['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
