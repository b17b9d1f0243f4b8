"""What every agent shares: the observation layout, masked simplex maps and seeding helpers.

Agents see arrays only (they never import ``environments``). The observation is the flat float32 vector
of docs/INTERFACES.md::

    obs = [ features window (window, N, F), C-order | current weights (N+1), last = cash | mask (N) ]
    obs_dim = window * N * F + (N + 1) + N

``mask[i] == 1`` means asset i can be traded at the next decision; cash is never masked. An action is a
weight vector on the simplex (N+1 entries, fractions of NAV, last = cash).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

#: Logit given to masked assets before the softmax; exp(-1e9) underflows to exactly 0 in float32.
MASKED_LOGIT = -1.0e9


@dataclass(frozen=True)
class ObsLayout:
    """Shape of the flat observation: ``window`` days x ``n_assets`` (N) assets x ``n_features`` (F)."""

    window: int
    n_assets: int
    n_features: int

    def __post_init__(self) -> None:
        for name in ("window", "n_assets", "n_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ObsLayout.{name} must be a positive integer, got {value!r}")

    @property
    def feature_dim(self) -> int:
        """Number of floats in the features window: window * N * F."""
        return self.window * self.n_assets * self.n_features

    @property
    def action_dim(self) -> int:
        """Portfolio weights incl. cash: N + 1."""
        return self.n_assets + 1

    @property
    def obs_dim(self) -> int:
        """Length of the flat observation: window*N*F + (N+1) + N."""
        return self.feature_dim + 2 * self.n_assets + 1

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slice ``obs`` float32 (B, obs_dim) into features (B, window, N, F), weights (B, N+1), mask (B, N).

        Pure slicing and reshaping with Python-int sizes, so it traces and exports to ONNX
        (``split_obs`` is the same function for TorchScript-compiled modules).
        """
        return split_obs(obs, self.window, self.n_assets, self.n_features)

    def split_numpy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``split`` for numpy arrays of shape (B, obs_dim) or (obs_dim,) (views, no copies)."""
        obs2 = np.asarray(obs).reshape(-1, self.obs_dim)
        fd, n = self.feature_dim, self.n_assets
        return (
            obs2[:, :fd].reshape(-1, self.window, n, self.n_features),
            obs2[:, fd : fd + n + 1],
            obs2[:, fd + n + 1 :],
        )

    def join_numpy(self, features: np.ndarray, weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Inverse of ``split_numpy``: float32 (B, obs_dim) from (B, window, N, F), (B, N+1), (B, N)."""
        b = features.shape[0]
        return np.concatenate(
            [features.reshape(b, -1), weights.reshape(b, -1), mask.reshape(b, -1)], axis=1
        ).astype(np.float32, copy=False)

    def check_obs_dim(self, obs_dim: int) -> None:
        if int(obs_dim) != self.obs_dim:
            raise ValueError(
                f"observation has {obs_dim} entries but the layout window={self.window}, "
                f"n_assets={self.n_assets}, n_features={self.n_features} needs {self.obs_dim}"
            )

    def to_dict(self) -> dict[str, int]:
        return {"window": self.window, "n_assets": self.n_assets, "n_features": self.n_features}

    @classmethod
    def from_dict(cls, mapping: dict) -> ObsLayout:
        missing = [k for k in ("window", "n_assets", "n_features") if k not in mapping]
        if missing:
            raise ValueError(f"obs_layout is missing the key '{missing[0]}'")
        return cls(int(mapping["window"]), int(mapping["n_assets"]), int(mapping["n_features"]))

    @classmethod
    def infer(cls, state_dim: int, action_dim: int, window: int | None = None) -> ObsLayout:
        """The layout of a ``state_dim``-long observation for ``action_dim`` = N+1 weights.

        With ``window`` None the window is 1 and F = (state_dim - 2N - 1) / N (a flat-feature env).
        """
        n = int(action_dim) - 1
        if n < 1:
            raise ValueError(f"action_dim must be at least 2 (one asset plus cash), got {action_dim}")
        rest = int(state_dim) - 2 * n - 1
        w = 1 if window is None else int(window)
        if rest <= 0 or rest % (n * w) != 0:
            raise ValueError(
                f"state_dim {state_dim} does not fit window*N*F + 2N + 1 with N={n} and window={w}"
            )
        return cls(w, n, rest // (n * w))


def split_obs(obs: torch.Tensor, window: int, n_assets: int,
              n_features: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """obs float32 (B, obs_dim) -> features (B, window, N, F), weights (B, N+1), mask (B, N) (views).

    ``ObsLayout.split`` with the sizes as arguments, so that TorchScript can compile it.
    """
    fd = window * n_assets * n_features
    features = obs[:, :fd].reshape(-1, window, n_assets, n_features)
    weights = obs[:, fd : fd + n_assets + 1]
    mask = obs[:, fd + n_assets + 1 : fd + 2 * n_assets + 1]
    return features, weights, mask


def full_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) tradable mask -> (B, N+1) with the cash slot always 1."""
    return torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def masked_softmax(logits: torch.Tensor, mask1: torch.Tensor, masked_logit: float = MASKED_LOGIT) -> torch.Tensor:
    """Softmax of ``logits`` (B, N+1) over the entries with ``mask1`` (B, N+1) > 0.5; others exactly 0.

    Uses ``torch.where`` with a finite large negative logit (no -inf, no data-dependent control flow),
    then multiplies by the mask so masked entries are exactly 0 even if every logit were masked.
    (``masked_logit`` is an argument, default ``MASKED_LOGIT``, so that TorchScript can compile it.)
    """
    keep = mask1 > 0.5
    z = torch.where(keep, logits, torch.full_like(logits, masked_logit))
    w = torch.softmax(z, dim=-1) * keep.to(logits.dtype)
    return w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def alr_from_weights(weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Additive log-ratio (cash as reference): z_i = log w_i - log w_cash, (B, N+1) -> (B, N).

    The inverse of ``masked_softmax(cat([z, 0]))`` on unmasked entries; masked entries are meaningless.
    """
    logw = torch.log(weights.clamp_min(eps))
    return logw[:, :-1] - logw[:, -1:]


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device for ``name``: "cpu", "cuda" (or "cuda:K"), or "auto" (cuda when a GPU is visible).

    Raises ValueError in one sentence for an unknown name or for cuda without a visible GPU (the
    command-line tools turn it into exit status 2).
    """
    text = str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text != "cpu" and not text.startswith("cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got '{text}'")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{text}' was asked for but this machine has no CUDA GPU visible to torch")
    return torch.device(text)


def device_argument(text: str) -> str:
    """argparse ``type=`` of every ``--device auto|cpu|cuda`` flag: the resolved device name ("cpu", "cuda").

    An unknown name or cuda without a GPU becomes argparse's usage error (one sentence, exit status 2).
    """
    try:
        return str(resolve_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy's legacy RNG and torch; return a fresh ``np.random.Generator(seed)``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def rng_state(np_rng: np.random.Generator) -> dict:
    """Everything needed to continue bit-identically: torch CPU RNG + the agent's numpy generator."""
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state}


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    """Restore what ``rng_state`` returned (in place for ``np_rng``)."""
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]


def as_batch(obs: np.ndarray | torch.Tensor, obs_dim: int) -> torch.Tensor:
    """Observation(s) (obs_dim,) or (B, obs_dim) -> float32 tensor (B, obs_dim); wrong length -> ValueError."""
    t = torch.as_tensor(np.asarray(obs, dtype=np.float32)) if not isinstance(obs, torch.Tensor) else obs.float()
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != obs_dim:
        raise ValueError(f"expected observations with {obs_dim} entries, got shape {tuple(t.shape)}")
    return t


class _SingleAsBatch:
    """A gymnasium.Env seen as a 1-wide batched env with SAME_STEP autoreset."""

    def __init__(self, env: Any) -> None:
        self.env, self.num_envs = env, 1

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed)
        return np.asarray(obs, np.float32)[None], info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rew, term, trunc, info = self.env.step(actions[0])
        infos: dict = {}
        if term or trunc:
            infos = {"final_obs": np.array([np.asarray(obs, np.float32)], dtype=object), "_final_obs": np.ones(1, bool)}
            obs, _ = self.env.reset()
        return (np.asarray(obs, np.float32)[None], np.array([rew], np.float32), np.array([term]),
                np.array([trunc]), infos)


def as_batched_env(env: Any) -> Any:
    """``env`` if it already steps a batch (has ``num_envs``), else a 1-wide adapter around it."""
    if hasattr(env, "num_envs"):
        mode = getattr(env, "metadata", {}).get("autoreset_mode")
        if mode is not None and "next" in str(getattr(mode, "value", mode)).lower():
            raise ValueError("batched envs must use gymnasium's SAME_STEP autoreset mode, not NEXT_STEP")
        return env
    return _SingleAsBatch(env)


def resolve_config(config_class: type[T], config: Any, overrides: dict[str, Any]) -> T:
    """The agent's frozen config: ``config`` (an instance of ``config_class``) with ``overrides`` replaced,
    or ``config_class(**overrides)`` when ``config`` is None; any other type is a ``TypeError``."""
    if config is None:
        return config_class(**overrides)
    if not isinstance(config, config_class):
        raise TypeError(f"config must be a {config_class.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config
