"""``BatchedHedgeFundEnv``: M portfolios over one market, stepped in one vectorised numpy call.

It follows the gymnasium ``VectorEnv`` API with same-step autoreset
(``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP``):

- ``reset(seed=s)`` -> ``(obs (M, obs_dim) float32, infos)``. Portfolio i draws its episodes from
  its own generator seeded with ``s + i`` (a list of M seeds is also accepted), exactly as a
  ``CryptoHedgeFundEnv`` reset with seed ``s + i`` would, so the batched env reproduces M single
  envs step for step. ``options={"start": s, "end": e}`` fixes the span of every portfolio
  (scalars, or sequences of M day indices / ISO dates), as in the single env; a portfolio that
  finishes a fixed span restarts the same span.
- ``step(actions (M, N+1))`` -> ``(obs, rewards (M,) float64, terminated (M,), truncated (M,), infos)``.
  A portfolio whose episode ends is reset in the same call: ``obs[i]`` is already the first
  observation of its next episode and ``infos["final_obs"][i]`` ((M, obs_dim) float32; rows where
  ``infos["_final_obs"][i]`` is False are zeros) the last observation of the finished one. Episode returns and lengths
  come from gymnasium's ``gymnasium.wrappers.vector.RecordEpisodeStatistics``, which works on it.
- ``infos`` of ``step`` describe the step just taken (before any reset), one (M,)-array per key:
  ``nav``, ``cost``, ``fee``, ``slippage``, ``turnover``, ``drawdown``, ``gross_leverage``,
  ``log_return``, ``flags`` (intervention bits, see ``environments.accounting.decode_flags``), ``t``,
  plus ``weights`` / ``target_weights`` (M, N+1).

All accounting is ``environments.accounting.step_portfolios``, the single env's kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from data.market import FeatureStore
from environments.accounting import PortfolioState, check_actions, step_portfolios
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv, MarketCore, core_from_store


class BatchedHedgeFundEnv(VectorEnv):
    """M portfolios of ``CryptoHedgeFundEnv`` semantics in one numpy call per step.

    Args:
        store: the feature store; ``start``/``end`` (ISO dates) restrict the span as in
            ``CryptoHedgeFundEnv.from_store``; ``costs_bps`` overrides per-category costs.
        config: the environment configuration.
        num_envs: M, the number of portfolios.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self, store: FeatureStore, config: EnvConfig, num_envs: int, start: str | None = None,
        end: str | None = None, costs_bps: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self._setup(core_from_store(store, config, start, end, costs_bps), num_envs)

    @classmethod
    def like(cls, env: CryptoHedgeFundEnv, num_envs: int) -> BatchedHedgeFundEnv:
        """A batched env over the same market and configuration as the single ``env``."""
        obj = cls.__new__(cls)
        obj._setup(env.core, num_envs)
        return obj

    def _setup(self, core: MarketCore, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.core = core
        self.config = core.cfg
        self.num_envs = int(num_envs)
        n = core.n_assets
        self.n_assets = n
        self.obs_dim = core.obs_dim
        self.obs_layout = core.obs_layout
        self.single_action_space = gym.spaces.Box(0.0, 1.0, (n + 1,), dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (core.obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (self.num_envs, n + 1), dtype=np.float32)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.num_envs, core.obs_dim), dtype=np.float32
        )
        self._rngs: list[np.random.Generator] = []
        self._state: PortfolioState | None = None
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._end = np.zeros(self.num_envs, dtype=np.int64)
        self._fixed: dict[str, Any] | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _per_env(self, value: Any, name: str) -> list[Any]:
        if isinstance(value, (str, int, np.integer)):
            return [value] * self.num_envs
        if isinstance(value, Sequence | np.ndarray) and len(value) == self.num_envs:
            return list(value)
        raise ValueError(f"reset option '{name}' must be one value or {self.num_envs} values")

    def _spans(self, rows: np.ndarray) -> None:
        """Draw (or fix) the spans of portfolios ``rows`` and reset their state."""
        nav = np.full(self.num_envs, self.config.initial_nav)
        weights = np.zeros((self.num_envs, self.n_assets + 1))
        weights[:, self.n_assets] = 1.0
        for i in np.flatnonzero(rows):
            if self._fixed is not None:
                opts = {k: v[i] for k, v in self._fixed.items()}
                start, end = self.core.fixed_span(opts)
            else:
                start, end = self.core.random_span(self._rngs[i])
            self._t[i], self._end[i] = start, end
        fresh = PortfolioState.initial(nav, weights, self.config.vol_window)
        if self._state is None:
            self._state = fresh
        else:
            self._state.replace_rows(rows, fresh)

    # -- gymnasium vector API ------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            if not self._rngs:
                self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        else:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset needs one seed or {self.num_envs} seeds, got {len(seeds)}")
            self._rngs = [seeding.np_random(int(s))[0] for s in seeds]
        options = dict(options or {})
        unknown = sorted(set(options) - {"start", "end"})
        if unknown:
            raise ValueError(f"unknown reset option '{unknown[0]}'; use start or end")
        self._fixed = {k: self._per_env(v, k) for k, v in options.items()} or None
        self._state = None
        self._spans(np.ones(self.num_envs, dtype=bool))
        obs = self.core.observations(self._t, self._state.weights)
        return obs, {"nav": self._state.nav.copy(), "t": self._t.copy(), "end": self._end.copy()}

    def step(
        self, actions: Any,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        act = check_actions(actions, (self.num_envs, self.n_assets + 1))
        self._state, out = step_portfolios(self._state, act, self._t, self.core.market, self.config)
        self._t += 1
        terminated = out.terminated.copy()
        truncated = (self._t >= self._end) & ~terminated
        infos: dict[str, Any] = {
            "nav": self._state.nav.copy(), "weights": self._state.weights.copy(),
            "target_weights": out.target, "cost": out.fee + out.slippage, "fee": out.fee,
            "slippage": out.slippage, "turnover": out.turnover, "drawdown": out.drawdown,
            "gross_leverage": out.gross_leverage, "log_return": out.log_return, "flags": out.flags(),
            "t": self._t.copy(),
        }
        obs = self.core.observations(self._t, self._state.weights)
        done = terminated | truncated
        if done.any():
            rows = np.flatnonzero(done)
            final = np.zeros_like(obs)  # calloc'd: only the finished rows are written
            final[rows] = obs[rows]
            infos["final_obs"], infos["_final_obs"] = final, done
            self._spans(done)
            obs[rows] = self.core.observations(self._t[rows], self._state.weights[rows])
        return obs, out.reward, terminated, truncated, infos

    # -- kernel-only stepping (benchmarks, index-based rollouts) -------------------------------
    def step_kernel(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step without building observations: ``(rewards, terminated, truncated)``, each (M,).

        Same accounting and same-step autoreset as ``step``; for callers that rebuild observations
        from day indices themselves (``self.days``, ``self.weights``), and for benchmarks.
        """
        if self._state is None:
            raise RuntimeError("call reset() before step_kernel()")
        act = check_actions(actions, (self.num_envs, self.n_assets + 1))
        self._state, out = step_portfolios(self._state, act, self._t, self.core.market, self.config)
        self._t += 1
        truncated = (self._t >= self._end) & ~out.terminated
        done = out.terminated | truncated
        if done.any():
            self._spans(done)
        return out.reward, out.terminated, truncated

    @property
    def days(self) -> np.ndarray:
        """(M,) index of each portfolio's next decision day."""
        return self._t.copy()

    @property
    def weights(self) -> np.ndarray:
        """(M, N + 1) current drifted weights, cash last."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state.weights.copy()

    @property
    def navs(self) -> np.ndarray:
        """(M,) current NAVs (currency)."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state.nav.copy()
