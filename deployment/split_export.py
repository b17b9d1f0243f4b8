"""The policy split for serving: the market-only part and the portfolio part as separate graphs.

A policy module has ``market(features (B, W, N, F)) -> latent`` and ``act(latent, weights (B, N+1),
mask (B, N)) -> weights (B, N+1)`` with ``forward(obs) == act(market(features), weights, mask)``. The
server computes ``market`` once per day and ``act`` per request. ``export_split`` writes

- ``policy_market.onnx`` (input ``features``, output ``market``) and ``policy_act.onnx`` (inputs
  ``market``, ``weights``, ``mask``; output ``weights_out``), opset 17, dynamic batch;
- ``policy_split.ts``: ``torch.jit.trace_module`` with the methods ``market`` and ``act``;

and returns the max |weights - forward(obs)| of each on the given observations (parity).
``OnnxSplit``/``TorchScriptSplit`` are the serving backends' halves (``None`` when the files are absent).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from data.market import DataError

OPSET = 17
MARKET_ONNX, ACT_ONNX, SPLIT_TS = "policy_market.onnx", "policy_act.onnx", "policy_split.ts"


def _wrappers(module):
    import torch

    class Market(torch.nn.Module):
        def __init__(self, p: torch.nn.Module) -> None:
            super().__init__()
            self.p = p

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.p.market(features)

    class Act(Market):
        def forward(self, market: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.p.act(market, weights, mask)

    return Market(module).eval(), Act(module).eval()


def export_split(module, layout, obs: np.ndarray, out_dir: Path) -> dict[str, float]:
    """Write the split graphs for ``module`` into ``out_dir``; parity on ``obs`` (B, obs_dim) float32."""
    import torch

    if not (callable(getattr(module, "market", None)) and callable(getattr(module, "act", None))):
        return {}
    x = torch.from_numpy(np.ascontiguousarray(obs, np.float32))
    features, weights, mask = layout.split(x)
    with torch.no_grad():
        latent = module.market(features)
        ref = module(x).numpy()
    market_g, act_g = _wrappers(module)
    for graph, args, names, out_name, path in (
            (market_g, (features,), ["features"], "market", out_dir / MARKET_ONNX),
            (act_g, (latent, weights, mask), ["market", "weights", "mask"], "weights_out", out_dir / ACT_ONNX)):
        # with gradients on, nn.TransformerEncoderLayer traces plain ops (its fused kernel has no ONNX symbolic)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, args, str(path), opset_version=OPSET, input_names=names,
                              output_names=[out_name], dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in [*names, out_name]})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(module, {"market": (features,), "act": (latent, weights, mask)},
                                        check_trace=False)
    traced.save(str(out_dir / SPLIT_TS))
    onnx = OnnxSplit.load(out_dir / "policy.onnx", threads=1)
    ts = TorchScriptSplit.load(out_dir / "policy.ts")
    report = {}
    for name, backend in (("onnx_split", onnx), ("torchscript_split", ts)):
        got = np.stack([backend.act(backend.market(f), w, m)
                        for f, w, m in zip(features.numpy(), weights.numpy(), mask.numpy())])
        report[name] = float(np.abs(got - ref).max())
    return report


class OnnxSplit:
    """ONNX Runtime sessions of ``policy_market.onnx`` and ``policy_act.onnx``."""

    splits = True

    def __init__(self, market_path: Path, act_path: Path, threads: int | None = 1) -> None:
        try:
            self.market_sess = cpu_session(market_path, threads)
            self.act_sess = cpu_session(act_path, threads)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad file for the user
            raise DataError(f"'{market_path.parent}' holds split ONNX graphs that do not load ({type(err).__name__})") from None

    @classmethod
    def load(cls, policy_path: Path, threads: int | None = 1) -> OnnxSplit | None:
        d = Path(policy_path).parent
        if not ((d / MARKET_ONNX).is_file() and (d / ACT_ONNX).is_file()):
            return None
        return cls(d / MARKET_ONNX, d / ACT_ONNX, threads)

    def market(self, window: np.ndarray) -> np.ndarray:
        return self.market_sess.run(None, {"features": np.ascontiguousarray(window[None], np.float32)})[0]

    def act(self, latent: Any, weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"market": latent, "weights": np.asarray(weights, np.float32)[None],
                 "mask": np.asarray(mask, np.float32)[None]}
        return self.act_sess.run(None, feeds)[0][0]


def cpu_session(path: str | os.PathLike, threads: int | None = 1) -> Any:
    """An ONNX Runtime CPU session run sequentially with ``threads`` intra-op threads (0/None: ORT's default);
    a file that does not load raises whatever onnxruntime raises (callers word it for the user)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


class TorchSplitCalls:
    """``market``/``act`` calls on a torch module with those two methods (``self.module``, ``self._torch``):
    the in-process PyTorch backend and the TorchScript split share them."""

    def market(self, window: np.ndarray) -> Any:
        """The market latent of one window (W, N, F) (a tensor)."""
        t = self._torch
        with t.inference_mode():
            return self.module.market(t.from_numpy(np.ascontiguousarray(window[None], np.float32)))

    def act(self, latent: Any, weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Weights (N+1,) from a market latent, current weights (N+1,) and tradable flags (N,)."""
        t = self._torch
        with t.inference_mode():
            out = self.module.act(latent, t.from_numpy(np.asarray(weights, np.float32)[None]),
                                  t.from_numpy(np.asarray(mask, np.float32)[None]))
        return out.numpy()[0]


class TorchScriptSplit(TorchSplitCalls):
    """``policy_split.ts`` (traced ``market`` and ``act`` methods)."""

    splits = True

    def __init__(self, path: Path) -> None:
        import torch

        self._torch = torch
        try:
            self.module = torch.jit.load(os.fspath(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any load failure (a pickle renamed .ts, a truncated file)
            raise DataError(f"'{path}' is not a loadable TorchScript file ({type(err).__name__})") from None

    @classmethod
    def load(cls, policy_path: Path) -> TorchScriptSplit | None:
        p = Path(policy_path).parent / SPLIT_TS
        return cls(p) if p.is_file() else None
