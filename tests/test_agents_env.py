"""A hand-solvable drift market for the agents' learning tests, single and batched, plus its own checks.

``DriftEnv`` (gymnasium.Env) -- spec:

- Assets: N risky assets plus cash. Daily simple returns: asset 0 ``drift + drift_vol * eps``, assets
  1..N-1 ``noise_vol * eps`` (zero mean), cash 0; eps ~ N(0, 1) drawn per episode from the env's RNG.
  The optimal policy puts everything in asset 0.
- Observation: the flat float32 layout of docs/INTERFACES.md, window W x N assets x F=2 features
  (feature 0 = the day's return / noise_vol, feature 1 = a constant 1), current weights (N+1), mask (N).
- Action: Box(0, 1, (N+1,)); weights ``a / a.sum()`` (all zero -> all cash); weight on a masked asset goes
  to cash. Reward: ``reward_scale * log(1 + w . r)`` with r the next day's returns (cash 0).
- Starting state: all cash; episode of ``episode_length`` decisions, then ``truncated``.
- ``masked_asset``: index of an asset whose mask is 0 on every other day (a closed market), or -1.

``DriftVecEnv`` steps M such portfolios in one numpy call with same-step autoreset: a finished
portfolio's returned observation is the first one of its next episode and ``infos["final_obs"]`` /
``infos["_final_obs"]`` hold the last one (gymnasium's SAME_STEP mode).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class DriftVecEnv:
    """M drift portfolios stepped together (see the module docstring)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 4,
        n_assets: int = 3,
        window: int = 4,
        episode_length: int = 32,
        drift: float = 0.01,
        drift_vol: float = 0.005,
        noise_vol: float = 0.03,
        reward_scale: float = 100.0,
        masked_asset: int = -1,
    ) -> None:
        self.num_envs, self.n, self.window, self.length = num_envs, n_assets, window, episode_length
        self.drift, self.drift_vol, self.noise_vol = drift, drift_vol, noise_vol
        self.reward_scale, self.masked_asset = reward_scale, masked_asset
        self.n_features = 2
        self.obs_dim = window * n_assets * self.n_features + 2 * n_assets + 1
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.single_action_space = spaces.Box(0.0, 1.0, (n_assets + 1,), np.float32)
        self.rng = np.random.default_rng(0)

    def _draw_returns(self, m: int) -> np.ndarray:
        eps = self.rng.standard_normal((m, self.window + self.length, self.n))
        r = eps * self.noise_vol
        r[..., 0] = self.drift + self.drift_vol * eps[..., 0]
        return r

    def _mask(self, t: np.ndarray) -> np.ndarray:
        mask = np.ones((t.shape[0], self.n), np.float32)
        if self.masked_asset >= 0:
            mask[:, self.masked_asset] = (t % 2 == 0).astype(np.float32)
        return mask

    def _obs(self, idx: np.ndarray | None = None) -> np.ndarray:
        idx = np.arange(self.num_envs) if idx is None else idx
        t = self.t[idx]
        rows = t[:, None] + np.arange(self.window)[None, :]  # days t .. t+W-1 of the drawn path
        past = np.take_along_axis(self.returns[idx], rows[:, :, None], axis=1)  # (m, W, N)
        feats = np.stack([past / self.noise_vol, np.ones_like(past)], axis=-1)
        m = len(idx)
        return np.concatenate(
            [feats.reshape(m, -1), self.weights[idx], self._mask(t)], axis=1
        ).astype(np.float32)

    def _reset_idx(self, idx: np.ndarray) -> None:
        self.returns[idx] = self._draw_returns(len(idx))
        self.t[idx] = 0
        self.weights[idx] = 0.0
        self.weights[idx, -1] = 1.0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.returns = np.zeros((self.num_envs, self.window + self.length, self.n))
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.weights = np.zeros((self.num_envs, self.n + 1))
        self._reset_idx(np.arange(self.num_envs))
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, self.n + 1), 0.0, None)
        total = a.sum(axis=1, keepdims=True)
        w = np.where(total > 0, a / np.where(total > 0, total, 1.0), np.eye(self.n + 1)[-1])
        closed = self._mask(self.t) < 0.5
        w[:, -1] += np.where(closed, w[:, :-1], 0.0).sum(axis=1)
        w[:, :-1] = np.where(closed, 0.0, w[:, :-1])
        r_next = self.returns[np.arange(self.num_envs), self.t + self.window]  # day after the window
        r = np.concatenate([r_next, np.zeros((self.num_envs, 1))], axis=1)
        growth = 1.0 + (w * r).sum(axis=1)
        reward = self.reward_scale * np.log(growth)
        self.weights = w * (1.0 + r) / growth[:, None]
        self.t += 1
        truncated = self.t >= self.length
        terminated = np.zeros(self.num_envs, dtype=bool)
        obs = self._obs()
        infos: dict = {"growth": growth}
        if truncated.any():
            done = np.flatnonzero(truncated)
            infos["final_obs"] = np.array([None] * self.num_envs, dtype=object)
            for i in done:
                infos["final_obs"][i] = obs[i].copy()
            infos["_final_obs"] = truncated.copy()
            self._reset_idx(done)
            obs[done] = self._obs(done)
        return obs, reward.astype(np.float32), terminated, truncated, infos

    def close(self) -> None:
        return None


class DriftEnv(gym.Env):
    """One drift portfolio as a gymnasium.Env (a 1-wide DriftVecEnv without autoreset)."""

    metadata = {"render_modes": []}

    def __init__(self, **kwargs) -> None:
        self.vec = DriftVecEnv(num_envs=1, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or not hasattr(self.vec, "t"):
            self.vec.reset(seed=seed if seed is not None else 0)
        else:
            self.vec._reset_idx(np.array([0]))
        return self.vec._obs()[0], {}

    def step(self, action: np.ndarray):
        obs, rew, term, trunc, infos = self.vec.step(np.asarray(action)[None])
        if trunc[0]:
            obs = infos["final_obs"][0][None]
        return obs[0], float(rew[0]), bool(term[0]), bool(trunc[0]), {"growth": float(infos["growth"][0])}


# ---------------------------------------------------------------------------------------------------
def test_drift_env_passes_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    check_env(DriftEnv(), skip_render_check=True)


def test_drift_env_rewards_the_drift_asset_by_hand():
    env = DriftVecEnv(num_envs=2, n_assets=2, window=3, episode_length=5)
    env.reset(seed=1)
    r0 = env.returns[:, env.window].copy()  # returns earned by the first decision
    _, rew, *_ = env.step(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(rew, [100 * np.log1p(r0[0, 0]), 0.0], rtol=1e-6)


def test_drift_vec_env_same_step_autoreset_and_masked_asset_goes_to_cash():
    env = DriftVecEnv(num_envs=3, n_assets=3, window=2, episode_length=3, masked_asset=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, env.obs_dim)
    for step in range(3):
        obs, _, term, trunc, infos = env.step(np.tile([0.0, 1.0, 0.0, 0.0], (3, 1)))
        if step == 1:  # odd days have asset 1 closed: its weight went to cash
            np.testing.assert_allclose(env.weights[:, -1], 1.0)
        elif step == 0:
            assert (env.weights[:, 1] > 0.9).all()
    assert trunc.all() and not term.any()
    assert infos["_final_obs"].all()
    np.testing.assert_allclose(obs[:, -7:-3], np.tile([0, 0, 0, 1.0], (3, 1)))  # fresh: all cash
