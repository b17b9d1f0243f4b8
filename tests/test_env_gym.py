"""The environments as API clients see them: gymnasium checks, SB3 PPO, batched == single, spans."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.wrappers.vector import RecordEpisodeStatistics
from test_env_support import make_store

from data.market import DataError
from data.universe import DEFAULT_COSTS_BPS
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
from environments.vector_env import BatchedHedgeFundEnv


def small_env(**cfg) -> CryptoHedgeFundEnv:
    store = make_store(n_days=90, n_assets=4, n_features=3, seed=5, late={1: 30})
    return CryptoHedgeFundEnv.from_store(store, EnvConfig(window=6, **cfg))


def test_gymnasium_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    for reward, margin in (("log_return", False), ("dsr", False), ("risk_adjusted", False), ("dsr", True)):
        env = small_env(reward=reward, episode_length=20, drawdown_control=True, margin=margin)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # infinite Box bounds and no render modes are intended
            check_env(env, skip_render_check=True)


def test_stable_baselines3_ppo_trains_2000_steps():
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = small_env(episode_length=30, reward="dsr")
    model = PPO("MlpPolicy", env, n_steps=500, batch_size=100, n_epochs=2, seed=0, device="cpu",
                policy_kwargs={"net_arch": [32, 32]})
    untrained = PPO("MlpPolicy", env, n_steps=500, batch_size=100, n_epochs=2, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [32, 32]}).policy.state_dict()
    model.learn(total_timesteps=2000)
    assert model.num_timesteps == 2000  # four rollouts of n_steps=500 on one env
    assert [ep["l"] for ep in model.ep_info_buffer] == [30] * (2000 // 30)  # every episode ran its 30 days
    trained = model.policy.state_dict()
    for name in ("action_net.weight", "value_net.weight"):  # the 2000 steps were learned from
        assert not torch.equal(untrained[name], trained[name]), name
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    env.step(action)


def test_observation_layout_and_windows_are_views():
    store = make_store(n_days=90, n_assets=4, n_features=3, seed=5, late={1: 30})
    env = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=6))
    assert env.obs_dim == 6 * 4 * 3 + 2 * 4 + 1
    assert env.obs_layout == {"window": 6, "n_assets": 4, "n_features": 3}
    assert np.shares_memory(env.core.windows, store.features)
    obs, info = env.reset(options={"start": 25})
    assert obs.dtype == np.float32 and obs.shape == (env.obs_dim,)
    np.testing.assert_array_equal(obs[:72].reshape(6, 4, 3), store.features[20:26])
    np.testing.assert_array_equal(obs[72:77], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(obs[77:], store.tradable[25].astype(np.float32))
    obs, *_, info = env.step(np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(obs[:72].reshape(6, 4, 3), store.features[21:27])
    np.testing.assert_allclose(obs[72:77], info["weights"].astype(np.float32))
    np.testing.assert_array_equal(obs[77:], store.tradable[26].astype(np.float32))
    assert info["weights"][1] == 0.0  # asset 1 is not listed until day 30
    assert info["date"] == str(store.dates[26])


def test_costs_come_from_categories():
    store = make_store(n_assets=4)
    env = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=5))
    expected = [DEFAULT_COSTS_BPS[c][0] * 1e-4 for c in store.categories]
    np.testing.assert_allclose(env.core.market.fee_rate, expected)
    env = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=5), costs_bps={"growth": (25.0, 3.0)})
    assert env.core.market.fee_rate[0] == pytest.approx(25e-4)
    assert env.core.market.slip_rate[0] == pytest.approx(3e-4)


def test_random_starts_lengths_and_truncation():
    env = small_env(episode_length=15)
    starts = set()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert env.core.first <= info["start"] and info["end"] == info["start"] + 15 <= env.core.last
        starts.add(info["start"])
        for k in range(15):
            *_, terminated, truncated, info = env.step(env.action_space.sample())
            assert not terminated and truncated == (k == 14)
    assert len(starts) > 5
    env = small_env(episode_length=0)
    _, info = env.reset(seed=3)
    assert info["end"] == env.core.last


def test_fixed_span_by_index_and_date_and_start_weights():
    env = small_env()
    store_dates = env.core.dates
    _, info = env.reset(options={"start": str(store_dates[40]), "end": str(store_dates[50])})
    assert (info["start"], info["end"]) == (40, 50)
    steps = 0
    truncated = False
    while not truncated:
        *_, truncated, info = env.step(np.ones(5))
        steps += 1
    assert steps == 10 and info["t"] == 50
    w0 = np.array([0.3, 0.2, 0.1, 0.1, 0.3])
    _, info = env.reset(options={"start": 45, "weights": w0})
    np.testing.assert_array_equal(info["weights"], w0)
    for bad in [{"start": 2}, {"start": 50, "end": 50}, {"end": 10_000}, {"begin": 3},
                {"start": 45, "weights": [0.5, 0.5, 0, 0, 0.1]}, {"start": 20, "weights": [0, 1, 0, 0, 0.0]}]:
        with pytest.raises(ValueError):
            env.reset(options=bad)


def test_from_store_span_and_too_short_data():
    store = make_store(n_days=90)
    env = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=6), start=str(store.dates[60]),
                                        end=str(store.dates[80]))
    assert (env.core.first, env.core.last) == (60, 80)
    assert env.core.features.shape[0] == 81  # nothing after the span's end is kept
    with pytest.raises(DataError):
        CryptoHedgeFundEnv.from_store(store, EnvConfig(window=6), start="2030-01-01")
    with pytest.raises(DataError):
        CryptoHedgeFundEnv.from_store(make_store(n_days=10), EnvConfig(window=20))
    store.features[5, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        CryptoHedgeFundEnv.from_store(store, EnvConfig(window=6))


@pytest.mark.parametrize("reward,margin", [("log_return", False), ("dsr", False), ("risk_adjusted", False),
                                           ("log_return", True)])
def test_batched_env_equals_single_envs_step_for_step(reward, margin):
    m = 3
    cfg = {"episode_length": 12, "reward": reward, "drawdown_control": True, "dd_threshold": 0.02,
           "max_weight": 0.4, "concentration_penalty": 0.01}
    if margin:  # 3x with a high maintenance margin: some portfolios get liquidated
        cfg.update(margin=True, max_leverage=3.0, max_weight=1.5, maintenance_margin=0.6, borrow_rate=0.1,
                   drawdown_control=False)
    singles = [small_env(**cfg) for _ in range(m)]
    venv = BatchedHedgeFundEnv.like(singles[0], m)
    obs_b, _ = venv.reset(seed=11)
    obs_s = [env.reset(seed=11 + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs_b, np.stack(obs_s))
    rng = np.random.default_rng(0)
    finished = liquidations = 0
    for _ in range(40):
        actions = rng.random((m, 5)) * (rng.random((m, 5)) > 0.3)
        obs_b, rew_b, term_b, trunc_b, info_b = venv.step(actions)
        for i, env in enumerate(singles):
            obs, rew, term, trunc, info = env.step(actions[i])
            assert rew_b[i] == rew and term_b[i] == term and trunc_b[i] == trunc
            assert info_b["nav"][i] == info["nav"] and info_b["cost"][i] == info["cost"]
            np.testing.assert_array_equal(info_b["weights"][i], info["weights"])
            liquidations += "liquidation" in info["interventions"]
            if term or trunc:
                finished += 1
                np.testing.assert_array_equal(info_b["final_obs"][i], obs)
                assert info_b["_final_obs"][i]
                assert not info_b["final_obs"][~info_b["_final_obs"]].any()  # unfinished rows are zeros
                obs, _ = env.reset()
            np.testing.assert_array_equal(obs_b[i], obs)
    assert finished >= 6
    if margin:
        assert liquidations > 0


def test_batched_env_api_fixed_spans_and_kernel_stepping():
    env = small_env()
    venv = BatchedHedgeFundEnv.like(env, 4)
    assert venv.observation_space.shape == (4, env.obs_dim) and venv.action_space.shape == (4, 5)
    obs, info = venv.reset(options={"start": [10, 20, 30, 40], "end": 60})
    np.testing.assert_array_equal(info["t"], [10, 20, 30, 40])
    assert obs.shape == (4, env.obs_dim) and obs.dtype == np.float32
    acts = np.full((4, 5), 0.2)
    for _ in range(20):
        _, _, _, trunc, _ = venv.step(acts)
    assert list(trunc) == [False, False, False, True]
    np.testing.assert_array_equal(venv.days, [30, 40, 50, 40])  # the last one restarted at 40
    rewards, term, trunc = venv.step_kernel(acts)
    assert rewards.shape == (4,) and not term.any()
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        venv.step(np.full((4, 5), np.nan))
    with pytest.raises(ValueError):
        venv.reset(options={"start": [10, 20]})
    store = make_store(n_days=90, seed=5, late={1: 30})
    direct = BatchedHedgeFundEnv(store, EnvConfig(window=6, episode_length=10), 2)
    stats = RecordEpisodeStatistics(direct)  # gymnasium's own wrapper works on it
    assert stats.reset(seed=0)[0].shape == (2, env.obs_dim)
    for _ in range(10):
        *_, infos = stats.step(np.ones((2, 5)))
    np.testing.assert_array_equal(infos["episode"]["l"], [10, 10])
    stats.close()


def test_determinism_for_a_seed():
    def rollout(seed: int) -> list[float]:
        env = small_env(episode_length=25)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return [env.step(env.action_space.sample())[4]["nav"] for _ in range(25)]

    assert rollout(4) == rollout(4)
    assert rollout(4) != rollout(5)


def test_from_directory_reads_a_written_feature_store(tmp_path):
    import dataclasses

    from data.feature_engineering import store_content_hash
    from data.tf_pipeline import write_store

    store = make_store(n_days=60, seed=2)
    store = dataclasses.replace(store, content_hash=store_content_hash(store))
    write_store(store, tmp_path / "store")
    env = CryptoHedgeFundEnv.from_directory(str(tmp_path / "store"), EnvConfig(window=5))
    mem = CryptoHedgeFundEnv.from_store(store, EnvConfig(window=5))
    obs_d, _ = env.reset(options={"start": 20})
    obs_m, _ = mem.reset(options={"start": 20})
    np.testing.assert_array_equal(obs_d, obs_m)
    for _ in range(5):
        a = np.array([0.3, 0.2, 0.2, 0.2, 0.1])
        assert env.step(a)[4]["nav"] == mem.step(a)[4]["nav"]
