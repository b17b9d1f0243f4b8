"""``DeployedCryptoHedgeFund``: a trained policy behind the risk layer, on one of three backends.

    fund = DeployedCryptoHedgeFund("run/policy.pth", "run/config.json")        # PyTorch
    fund = DeployedCryptoHedgeFund("export/policy.onnx", "export/config.json")  # ONNX Runtime
    alloc = fund.allocate(ohlcv={"BTC-USD": {"date": [...], "open": [...], ...}, ...})
    alloc.weights  # {"BTC-USD": 0.21, ..., "CASH": 0.05}, fractions of NAV summing to 1

The backend follows the policy file's suffix: ``.pth`` (state dict, rebuilt with ``agents.io``),
``.ts``/``.pt`` (TorchScript), ``.onnx`` (ONNX Runtime). The configuration must be JSON: a pickled
config (``.pkl``/``.pickle``/``.joblib``) is refused and never opened. ``manifest.json`` (tickers,
categories, feature names, normalisation statistics) is read from the config's folder unless given.

``allocate`` takes either a flat observation float32 (obs_dim,) laid out as in docs/INTERFACES.md, or
recent daily OHLCV per ticker, from which the features are computed exactly as in training
(``data.feature_engineering.compute_raw_features``, then the manifest's mean/std and clip). Invalid
input raises ``RequestError`` (a ``DataError``) with one sentence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agents.common import ObsLayout
from data.config import from_mapping
from data.market import DataError
from deployment.risk import CASH, Intervention, RiskConfig, apply_risk
from deployment.split_export import TorchSplitCalls, cpu_session
from environments.action_prior import PRIOR_FIELDS, prior_row, tilt
from environments.config import EnvConfig, env_section

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".dill")
OHLCV_FIELDS = ("date", "open", "high", "low", "close", "volume")


class RequestError(DataError):
    """Bad serving input (shape, NaN, unknown ticker, stale or short history); one sentence."""


def read_json_config(path: str | os.PathLike, what: str = "config") -> dict:
    """Parse a JSON file; a pickle is refused by name, before the file is opened."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise DataError(f"{what} '{p}' is a pickle; refusing to load it (pickles can run code), "
                        "pass the run's JSON config instead")
    if not p.is_file():
        raise DataError(f"{what} file '{p}' does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} file '{p}' is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{what} file '{p}' must hold a JSON object")
    return data


@dataclass(frozen=True)
class ServingSpec:
    """What serving needs besides the network: asset axis, features, normalisation, layout, version.

    ``norm_mean``/``norm_std`` (F,) are the raw-feature statistics fitted on the training span;
    ``clip`` bounds normalised values. ``window`` days x N assets x F features per observation.
    ``prior_env``: the run's env settings when it was trained as a tilt of a rule (``env.action_prior``),
    else None; its output is then a tilt, and serving multiplies it by the rule's weights of the day.
    """

    tickers: tuple[str, ...]
    categories: tuple[str, ...]
    feature_names: tuple[str, ...]
    norm_mean: np.ndarray
    norm_std: np.ndarray
    clip: float
    layout: ObsLayout
    algo: str
    version: str
    prior_env: EnvConfig | None = None

    @classmethod
    def from_documents(cls, config: dict, manifest: dict) -> ServingSpec:
        prior_env = None
        env = _section(config, "env")
        if env.get("action_prior", "none") != "none":
            prior_env = from_mapping(EnvConfig, env_section(env), "env")
        try:
            layout = ObsLayout.from_dict(config["obs_layout"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"config has no valid obs_layout ({err})") from None
        need = ("tickers", "categories", "feature_names", "norm")
        missing = [k for k in need if k not in manifest]
        if missing:
            raise DataError(f"manifest lacks the key '{missing[0]}'")
        tickers = tuple(manifest["tickers"])
        names = tuple(manifest["feature_names"])
        try:
            mean = np.asarray(manifest["norm"]["mean"], dtype=np.float64)
            std = np.asarray(manifest["norm"]["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise DataError("manifest 'norm' must hold lists 'mean' and 'std'") from None
        if (len(tickers), len(names)) != (layout.n_assets, layout.n_features):
            raise DataError(
                f"manifest has {len(tickers)} tickers and {len(names)} features but the policy was built for "
                f"{layout.n_assets} and {layout.n_features}; the run directory is inconsistent")
        if mean.shape != (len(names),) or std.shape != (len(names),) or not (std > 0).all():
            raise DataError("manifest normalisation statistics do not match its feature names")
        clip = manifest.get("clip", _section(config, "data").get("clip", 10.0))
        return cls(tickers, tuple(manifest["categories"]), names, mean, std, float(clip), layout,
                   str(config.get("algo", "ppo")), str(config.get("version", "0")), prior_env)

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props``."""
        return {
            "tickers": json.dumps(list(self.tickers)), "categories": json.dumps(list(self.categories)),
            "feature_names": json.dumps(list(self.feature_names)), "window": str(self.layout.window),
            "obs_layout": json.dumps(self.layout.to_dict()),
            "normalisation": json.dumps({"mean": self.norm_mean.tolist(), "std": self.norm_std.tolist(),
                                         "clip": self.clip}),
            "algo": self.algo, "version": self.version,
            "action_prior": json.dumps(None if self.prior_env is None else {
                k: getattr(self.prior_env, k) for k in PRIOR_FIELDS}),
        }

    def prior_at(self, close: np.ndarray, listed: np.ndarray) -> np.ndarray | None:
        """The rule's weights (N+1,) for the last of K days of ``close`` (K, N; NaN where not listed) and
        ``listed`` (K, N) bool, as the env computes them (``environments.action_prior.prior_row`` on the
        store's returns); None without a prior. ``RequestError`` when K < ``prior_env.prior_rows``."""
        if self.prior_env is None:
            return None
        from data.feature_engineering import store_returns

        need = self.prior_env.prior_rows
        if close.shape[0] < need:
            raise RequestError(f"this policy tilts the '{self.prior_env.action_prior}' rule, which needs "
                               f"{need} days of prices; only {close.shape[0]} are available")
        listed = np.asarray(listed, bool)[-need:]
        returns = store_returns(np.asarray(close, np.float64)[-need:], listed)
        return prior_row(self.prior_env, returns, listed, self.tickers, need - 1)


def _section(config: dict, name: str) -> dict:
    """Section ``name`` (``data``, ``env``) of a run's config.json (top level or inside the ``experiment``
    record); {} when absent."""
    for holder in (config, config.get("experiment", {})):
        if isinstance(holder, dict) and isinstance(holder.get(name), dict):
            return holder[name]
    return {}


# -- backends -----------------------------------------------------------------------------------------

class PolicyBackend(Protocol):
    """obs float32 (B, obs_dim) -> weights float32 (B, N+1)."""

    name: str

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


class TorchBackend(TorchSplitCalls):
    """An in-process ``torch.nn.Module`` (the agent's ``policy_module()``), inference mode; ``market``/``act``
    (only when ``splits``) come from ``TorchSplitCalls``."""

    name = "pytorch"

    def __init__(self, module, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.module = module.eval()
        #: The module splits into ``market(features (B,W,N,F))`` and ``act(market, weights, mask)``.
        self.splits = callable(getattr(module, "market", None)) and callable(getattr(module, "act", None))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(np.ascontiguousarray(obs, np.float32))).numpy()


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import torch

        try:
            module = torch.jit.load(os.fspath(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any load failure (a pickle renamed .ts, a truncated file)
            raise DataError(f"'{path}' is not a loadable TorchScript file ({type(err).__name__})") from None
        super().__init__(module, threads)


class OnnxBackend:
    """An ONNX Runtime CPU session (sequential execution, ``threads`` intra-op threads)."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = 1) -> None:
        try:
            self.session = cpu_session(path, threads)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad file for the user
            raise DataError(f"'{path}' is not a loadable ONNX model ({type(err).__name__})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(obs, np.float32)})[0]


def torch_policy_from_run(policy_path: str | os.PathLike, config_path: str | os.PathLike):
    """Rebuild the agent with ``agents.io.load_agent`` (weights-only, no pickle); its ``policy_module()``.

    ``load_agent`` reads ``policy.pth`` and ``config.json`` from one folder; files with other names or in
    different folders are linked into a temporary folder first.
    """
    import shutil
    import tempfile

    from agents.io import load_agent

    policy_path, config_path = Path(policy_path), Path(config_path)
    try:
        if policy_path.name == "policy.pth" and config_path == policy_path.with_name("config.json"):
            return load_agent(policy_path.parent).policy_module()
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(policy_path, Path(tmp) / "policy.pth")
            shutil.copyfile(config_path, Path(tmp) / "config.json")
            return load_agent(tmp).policy_module()
    except ValueError as err:
        raise DataError(str(err)) from None


def hold_closed(policy: np.ndarray, current: np.ndarray, tradable: np.ndarray) -> np.ndarray:
    """Executable target weights (N+1,): an asset that cannot trade now (``tradable`` False, (N,)) keeps
    its current weight, and the tradable assets plus cash share the rest of NAV in the policy's
    proportions (the environment's rule). All cash if the policy puts nothing on tradable slots."""
    keep = np.concatenate([~tradable, [False]])
    out = np.where(keep, np.maximum(current, 0.0), 0.0)
    rest = max(0.0, 1.0 - float(out.sum()))
    free = np.where(keep, 0.0, policy)
    total = float(free.sum())
    if total > 0:
        out = out + free * (rest / total)
    else:
        out[-1] += rest
    return out


# -- the deployed fund -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Allocation:
    """Weights by ticker after the risk layer (fractions of NAV, ``CASH`` last, sum 1), the policy's raw
    weights, the interventions, whether the breaker tripped, and the normalised latest-day feature rows
    (R, F) of listed assets (for drift monitoring)."""

    weights: dict[str, float]
    policy_weights: dict[str, float]
    interventions: tuple[Intervention, ...]
    breaker_tripped: bool
    version: str
    feature_rows: np.ndarray


class DeployedCryptoHedgeFund:
    """A deployed allocation policy: validated input -> observation -> backend -> risk layer."""

    def __init__(self, policy_path: str | os.PathLike, config_path: str | os.PathLike,
                 manifest_path: str | os.PathLike | None = None, risk: RiskConfig | None = None,
                 max_stale_days: int = 4, threads: int | None = 1) -> None:
        self.config = read_json_config(config_path)
        mpath = Path(manifest_path) if manifest_path else Path(config_path).with_name("manifest.json")
        self.spec = ServingSpec.from_documents(self.config, read_json_config(mpath, "manifest"))
        self.risk = risk or RiskConfig()
        self.max_stale_days = int(max_stale_days)
        policy_path = Path(policy_path)
        if not policy_path.is_file():
            raise DataError(f"policy file '{policy_path}' does not exist")
        suffix = policy_path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise DataError(f"policy '{policy_path}' is a pickle; refusing to load it")
        if suffix == ".pth":
            self.backend: PolicyBackend = TorchBackend(torch_policy_from_run(policy_path, config_path), threads)
        elif suffix in (".ts", ".pt"):
            self.backend = TorchScriptBackend(policy_path, threads)
        elif suffix == ".onnx":
            self.backend = OnnxBackend(policy_path, threads)
        else:
            raise DataError(f"policy '{policy_path}' must end in .pth (PyTorch), .ts (TorchScript) or .onnx")
        from deployment.split_export import OnnxSplit, TorchScriptSplit

        #: market(window) / act(latent, weights, mask) halves, or None (then the whole network per request).
        self.splitter: Any = None
        if getattr(self.backend, "splits", False):
            self.splitter = self.backend
        elif suffix == ".onnx":
            self.splitter = OnnxSplit.load(policy_path, threads)
        elif suffix in (".ts", ".pt"):
            self.splitter = TorchScriptSplit.load(policy_path)
        try:  # a file that loads but cannot run this layout is refused now, not at the first request
            out = self.predict(np.zeros((1, self.spec.layout.obs_dim), np.float32))
        except Exception as err:  # noqa: BLE001 - a wrong graph fails in the runtime's own exception types
            raise DataError(f"policy '{policy_path}' does not accept this export's observations "
                            f"({type(err).__name__})") from None
        if out.shape != (1, self.spec.layout.action_dim):
            raise DataError(f"policy '{policy_path}' outputs {list(out.shape)[1:]} values, not "
                            f"{self.spec.layout.action_dim} weights")

    @classmethod
    def from_export(cls, export_dir: str | os.PathLike, backend: str = "onnx", **kwargs: Any) -> DeployedCryptoHedgeFund:
        """Load from an export directory (``model_export.py`` output) with backend onnx|torchscript|pytorch."""
        files = {"onnx": "policy.onnx", "torchscript": "policy.ts", "pytorch": "policy.pth"}
        if backend not in files:
            raise DataError(f"unknown backend '{backend}'; expected one of {', '.join(files)}")
        d = Path(export_dir)
        return cls(d / files[backend], d / "config.json", d / "manifest.json", **kwargs)

    @property
    def version(self) -> str:
        return self.spec.version

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Raw policy weights (B, N+1) for observations (B, obs_dim); no validation, no risk layer."""
        return self.backend(np.asarray(obs, np.float32).reshape(-1, self.spec.layout.obs_dim))

    # -- inputs ---------------------------------------------------------------------------------------
    def check_observation(self, observation: Any) -> np.ndarray:
        """A flat observation (obs_dim,) float32, or ``RequestError``."""
        lay = self.spec.layout
        try:
            obs = np.asarray(observation, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError("observation must be a flat list of numbers") from None
        if obs.ndim == 2 and obs.shape[0] == 1:
            obs = obs[0]
        if obs.ndim != 1 or obs.shape[0] != lay.obs_dim:
            raise RequestError(
                f"observation has shape {list(obs.shape)} but this model needs {lay.obs_dim} numbers "
                f"(window {lay.window} x {lay.n_assets} assets x {lay.n_features} features + "
                f"{lay.n_assets + 1} weights + {lay.n_assets} tradable flags)")
        if not np.isfinite(obs).all():
            raise RequestError(f"observation holds NaN or infinite values (first at index "
                               f"{int(np.argmax(~np.isfinite(obs)))})")
        mask = obs[lay.feature_dim + lay.n_assets + 1:]
        if not np.isin(mask, (0.0, 1.0)).all():
            raise RequestError("the last N entries of the observation (tradable flags) must be 0 or 1")
        return obs

    def observation_from_ohlcv(self, ohlcv: Any, current_weights: Any = None, as_of: str | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
        """Observation (obs_dim,) and the latest one-day simple return per asset (N,) from posted bars.

        ``ohlcv``: ``{ticker: {"date": [ISO...], "open": [...], "high", "low", "close", "volume"}}`` with
        every ticker of the model and no other. The last bar must be at most ``max_stale_days`` before
        ``as_of`` (default: today, UTC). Each asset needs enough quote days for the features' warm-up
        over the whole window.
        """
        obs, returns, _ = self._observe_ohlcv(ohlcv, current_weights, as_of)
        return obs, returns

    def _observe_ohlcv(self, ohlcv: Any, current_weights: Any, as_of: str | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``observation_from_ohlcv`` plus the day's prior (``ServingSpec.prior_at``, None without one)."""
        import pandas as pd

        from data.data_loader import align, validate_ohlcv
        from data.feature_engineering import LOOKBACK_BARS, compute_raw_features, normalise, warmup_ready
        from data.universe import Asset, Universe

        spec, lay = self.spec, self.spec.layout
        if not isinstance(ohlcv, dict) or not ohlcv:
            raise RequestError("ohlcv must be an object mapping each ticker to its daily bars")
        unknown = sorted(set(ohlcv) - set(spec.tickers))
        if unknown:
            raise RequestError(f"unknown ticker '{unknown[0]}'; this model trades {', '.join(spec.tickers)}")
        missing = [t for t in spec.tickers if t not in ohlcv]
        if missing:
            raise RequestError(f"ohlcv lacks the ticker '{missing[0]}'; every model ticker needs its history")
        frames = {}
        for t in spec.tickers:
            bars = ohlcv[t]
            if not isinstance(bars, dict) or any(k not in bars for k in OHLCV_FIELDS):
                raise RequestError(f"bars of {t} must be an object with the lists {', '.join(OHLCV_FIELDS)}")
            lens = {len(bars[k]) if isinstance(bars[k], list) else -1 for k in OHLCV_FIELDS}
            if len(lens) != 1 or -1 in lens:
                raise RequestError(f"bars of {t} must be lists of one common length")
            raw = pd.DataFrame({k.capitalize(): bars[k] for k in OHLCV_FIELDS})
            try:
                frames[t] = validate_ohlcv(raw, f"history of {t}")
            except DataError as err:
                raise RequestError(str(err)) from None
        last = max(f.index[-1] for f in frames.values())
        try:
            today = np.datetime64(as_of or np.datetime64("now", "D"), "D")
        except (ValueError, TypeError):
            raise RequestError(f"as_of must be an ISO date like 2024-01-31, got {as_of!r}") from None
        for t, f in frames.items():
            age = int((today - np.datetime64(f.index[-1], "D")).astype(int))
            if age > self.max_stale_days:
                raise RequestError(f"history of {t} is stale: its last bar is {f.index[-1].date()}, "
                                   f"{age} days before {today} (limit {self.max_stale_days})")
            if age < 0:
                raise RequestError(f"history of {t} has a bar dated {f.index[-1].date()}, after {today}")
        first = min(f.index[0] for f in frames.values())
        universe = Universe(tuple(Asset(t, c, 0.0, 0.0) for t, c in zip(spec.tickers, spec.categories)))
        try:
            market = align(frames, universe, str(first.date()), str(last.date()), "request", verbose=False)
            names, raw = compute_raw_features(market)
        except DataError as err:
            raise RequestError(str(err)) from None
        if tuple(names) != spec.feature_names:
            raise DataError("the feature pipeline's names differ from the manifest's; the run is from "
                            "an incompatible version")
        ready = warmup_ready(market)
        if market.n_days < lay.window or not ready[-lay.window].all():
            qd = (market.tradable & np.isfinite(market.close)).sum(axis=0)
            i = int(np.argmin(ready[-lay.window])) if market.n_days >= lay.window else 0
            raise RequestError(
                f"history of {spec.tickers[i]} is too short: {int(qd[i])} quote days, but the features need "
                f"{LOOKBACK_BARS} quote days before the first of the {lay.window}-day window")
        listed = market.listed[-lay.window:] & ready[-lay.window:]
        feats = normalise(raw[-lay.window:], listed, spec.norm_mean, spec.norm_std, spec.clip)
        weights = self._current_weights(current_weights)
        mask = (market.tradable[-1] & listed[-1]).astype(np.float32)  # as the feature store's tradable
        obs = lay.join_numpy(feats[None], weights[None], mask[None])[0]
        close = market.close
        returns = close[-1] / close[-2] - 1.0 if market.n_days > 1 else np.zeros(lay.n_assets)
        prior = None
        if spec.prior_env is not None:  # the store's listing (quoted and warmed up) and prices, as in training
            listed_all = market.listed & ready
            prior = spec.prior_at(np.where(listed_all, close, np.nan), listed_all)
        return obs, np.nan_to_num(returns), prior

    def _current_weights(self, current: Any) -> np.ndarray:
        n = self.spec.layout.n_assets
        if current is None:
            w = np.zeros(n + 1, np.float32)
            w[-1] = 1.0
            return w
        if isinstance(current, dict):
            unknown = sorted(set(current) - set(self.spec.tickers) - {CASH})
            if unknown:
                raise RequestError(f"unknown ticker '{unknown[0]}' in current_weights")
            current = [current.get(t, 0.0) for t in (*self.spec.tickers, CASH)]
        try:
            w = np.asarray(current, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError("current_weights must be numbers") from None
        if w.shape != (n + 1,) or not np.isfinite(w).all():
            raise RequestError(f"current_weights must be {n + 1} finite numbers (assets then cash)")
        return w

    def _returns_vector(self, last_returns: Any) -> np.ndarray | None:
        if last_returns is None:
            return None
        if isinstance(last_returns, dict):
            unknown = sorted(set(last_returns) - set(self.spec.tickers))
            if unknown:
                raise RequestError(f"unknown ticker '{unknown[0]}' in last_returns")
            last_returns = [last_returns.get(t, 0.0) for t in self.spec.tickers]
        try:
            r = np.asarray(last_returns, dtype=np.float64)
        except (TypeError, ValueError):
            raise RequestError("last_returns must be numbers") from None
        if r.shape != (self.spec.layout.n_assets,) or not np.isfinite(r).all():
            raise RequestError(f"last_returns must be {self.spec.layout.n_assets} finite one-day returns")
        return r

    # -- allocation -----------------------------------------------------------------------------------
    def allocate(self, observation: Any = None, ohlcv: Any = None, current_weights: Any = None,
                 last_returns: Any = None, as_of: str | None = None) -> Allocation:
        """Weights by ticker after the risk layer for one decision.

        Assets closed at this decision (tradable flag 0) keep their current weight (``hold_closed``);
        the risk layer then applies to the executable target.

        Give exactly one of ``observation`` (obs_dim,) or ``ohlcv`` (see ``observation_from_ohlcv``).
        ``current_weights`` (N+1,) or ``{ticker: w}`` (OHLCV mode; in observation mode they are part of
        the observation). ``last_returns`` (N,) or ``{ticker: r}``: the assets' latest one-day simple
        returns for the circuit breaker (OHLCV mode derives them from the last two closes).
        """
        if (observation is None) == (ohlcv is None):
            raise RequestError("give exactly one of 'observation' or 'ohlcv'")
        lay = self.spec.layout
        returns = self._returns_vector(last_returns)
        prior = None
        if observation is not None:
            if self.spec.prior_env is not None:
                raise RequestError(f"this policy tilts the '{self.spec.prior_env.action_prior}' rule, which "
                                   "needs the price history: send 'ohlcv' or allocate from the market state")
            obs = self.check_observation(observation)
        else:
            obs, derived, prior = self._observe_ohlcv(ohlcv, current_weights, as_of)
            returns = derived if returns is None else returns
        raw = self.predict(obs[None])[0].astype(np.float64)
        if prior is not None:
            raw = tilt(raw, prior)
        feats, cur, mask = lay.split_numpy(obs)
        target = hold_closed(raw, cur[0].astype(np.float64), mask[0] > 0.5)
        res = apply_risk(target, self.spec.categories, self.spec.tickers, self.risk, returns, cur[0])
        keys = (*self.spec.tickers, CASH)
        latest = feats[0, -1]  # (N, F)
        rows = latest[np.any(latest != 0.0, axis=1)]
        return Allocation(
            weights={k: float(v) for k, v in zip(keys, res.weights)},
            policy_weights={k: float(v) for k, v in zip(keys, raw)},
            interventions=res.interventions, breaker_tripped=res.breaker_tripped,
            version=self.version, feature_rows=rows,
        )

    # -- streaming (market state on the server) -------------------------------------------------------
    def market_context(self, window: np.ndarray) -> Any:
        """The market-only part for one normalised window (W, N, F): the module's market latent when the
        backend splits (computed once per day and reused), else the flattened window."""
        if self.splitter is not None:
            return self.splitter.market(window)
        return np.ascontiguousarray(window, np.float32).reshape(-1)

    def predict_context(self, context: Any, weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Raw policy weights (N+1,) float64 from ``market_context``, current weights (N+1,), mask (N,)."""
        if self.splitter is not None:
            return self.splitter.act(context, weights, mask).astype(np.float64)
        obs = np.concatenate([context, np.asarray(weights, np.float32), np.asarray(mask, np.float32)])
        return self.predict(obs[None])[0].astype(np.float64)

    def allocate_context(self, context: Any, weights: np.ndarray, mask: np.ndarray,
                         last_returns: np.ndarray, prior: np.ndarray | None = None) -> Allocation:
        """``allocate`` for the streaming path: closed assets held, then the risk layer (no drift rows).
        ``prior``: the day's rule weights (``ServingSpec.prior_at``), required for a residual policy."""
        raw = self.predict_context(context, weights, mask)
        if self.spec.prior_env is not None:
            if prior is None:
                raise RequestError("this policy tilts a rule but no rule weights were given")
            raw = tilt(raw, prior)
        target = hold_closed(raw, np.asarray(weights, np.float64), np.asarray(mask) > 0.5)
        res = apply_risk(target, self.spec.categories, self.spec.tickers, self.risk, last_returns, weights)
        keys = (*self.spec.tickers, CASH)
        return Allocation(
            weights={k: float(v) for k, v in zip(keys, res.weights)},
            policy_weights={k: float(v) for k, v in zip(keys, raw)},
            interventions=res.interventions, breaker_tripped=res.breaker_tripped,
            version=self.version, feature_rows=np.zeros((0, self.spec.layout.n_features), np.float32))
