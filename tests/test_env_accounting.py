"""Accounting checked against examples computed by hand and against independent formulas/libraries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data.config import from_mapping
from data.market import DataError
from environments.accounting import check_actions
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv, trailing_adv
from environments.rewards import differential_sharpe, rolling_vol

# Two assets, four days. B is closed on day 1 (price carried, no volume).
PRICES = np.array([[100.0, 50.0], [110.0, 50.0], [99.0, 55.0], [108.9, 55.0]])
TRADABLE = np.array([[True, True], [True, False], [True, True], [True, True]])
VOLUME = np.array([[1e9, 2e8], [1e9, 0.0], [1e9, 2e8], [1e9, 2e8]])
FEES = [0.001, 0.002]
SLIPS = [0.0005, 0.001]
ACTIONS = [np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.0, 0.0])]


def three_day_env(**options) -> CryptoHedgeFundEnv:
    features = np.arange(8, dtype=np.float32).reshape(4, 2, 1)
    return CryptoHedgeFundEnv(
        PRICES, features, FEES, volume=VOLUME, tradable=TRADABLE, slippage_costs=SLIPS,
        window=1, max_weight=0.6, adv_window=2, initial_nav=1e6, **options,
    )


def hand_path() -> dict[str, list[float]]:
    """The three days worked out by hand (formulas only, no environment code)."""
    # Day 0: scores 0.7/0.2/0.1 -> A 0.7 capped at 0.6 (excess 0.1 to cash), B 0.2, cash 0.2.
    nav0 = 1e6
    trade_a, trade_b = 0.6 * nav0, 0.2 * nav0
    fee0 = 0.001 * trade_a + 0.002 * trade_b
    slip0 = 0.0005 * trade_a * math.sqrt(trade_a / (0.01 * 1e9)) + 0.001 * trade_b * math.sqrt(trade_b / (0.01 * 2e8))
    post0 = nav0 - fee0 - slip0
    nav1 = post0 * (0.6 * 1.10 + 0.2 * 1.00 + 0.2)
    w1 = np.array([0.6 * 1.10, 0.2, 0.2]) * post0 / nav1
    # Day 1: B closed -> held at w1[1]; A gets all of the open budget 1 - w1[1] -> capped at 0.6.
    trade_a = abs(0.6 - w1[0]) * nav1
    fee1 = 0.001 * trade_a
    slip1 = 0.0005 * trade_a * math.sqrt(trade_a / (0.01 * 1e9))
    post1 = nav1 - fee1 - slip1
    cash1 = 1.0 - 0.6 - w1[1]
    hold = np.array([0.6 * (99.0 / 110.0), w1[1] * (55.0 / 50.0), cash1]) * post1
    nav2 = hold.sum()
    w2 = hold / nav2
    # Day 2: all-zero action -> sell everything. ADV of B over days 1-2 = the open day's 2e8.
    trade_a, trade_b = w2[0] * nav2, w2[1] * nav2
    fee2 = 0.001 * trade_a + 0.002 * trade_b
    slip2 = 0.0005 * trade_a * math.sqrt(trade_a / 1e7) + 0.001 * trade_b * math.sqrt(trade_b / 2e6)
    nav3 = nav2 - fee2 - slip2
    return {
        "nav": [nav1, nav2, nav3], "fee": [fee0, fee1, fee2], "slip": [slip0, slip1, slip2],
        "pre": [nav0, nav1, nav2], "w1": list(w1), "w2": list(w2),
        "turnover": [0.8, abs(0.6 - w1[0]), w2[0] + w2[1]],
    }


def test_three_day_example_matches_hand_computation():
    hand = hand_path()
    env = three_day_env()
    obs, info = env.reset(options={"start": 0})
    assert info["t"] == 0 and obs.shape == (1 * 2 * 1 + 5,)
    rewards, infos = [], []
    for action in ACTIONS:
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
    assert not terminated and truncated and info["t"] == 3
    for k in range(3):
        assert infos[k]["nav"] == pytest.approx(hand["nav"][k], rel=1e-12, abs=0)
        assert infos[k]["fee"] == pytest.approx(hand["fee"][k], rel=1e-12)
        assert infos[k]["slippage"] == pytest.approx(hand["slip"][k], rel=1e-12)
        assert infos[k]["cost"] == pytest.approx(hand["fee"][k] + hand["slip"][k], rel=1e-12)
        assert infos[k]["turnover"] == pytest.approx(hand["turnover"][k], rel=1e-12)
        assert rewards[k] == pytest.approx(math.log(hand["nav"][k] / hand["pre"][k]), abs=1e-12)
    np.testing.assert_allclose(infos[0]["weights"], hand["w1"], rtol=1e-12)
    np.testing.assert_allclose(infos[1]["weights"], hand["w2"], rtol=1e-12)
    np.testing.assert_allclose(infos[2]["weights"], [0.0, 0.0, 1.0], atol=1e-15)
    assert infos[0]["interventions"] == ["weight_cap"]
    assert infos[1]["interventions"] == ["weight_cap"]
    assert infos[2]["interventions"] == []
    assert infos[1]["target_weights"][1] == pytest.approx(hand["w1"][1], rel=1e-15)
    # Drawdown after the loss on day 1 (A fell 10%), measured against the running peak.
    peak = max(1e6, hand["nav"][0], hand["nav"][1])
    assert infos[1]["drawdown"] == pytest.approx(1 - hand["nav"][1] / peak, abs=1e-12)


def test_three_day_risk_adjusted_and_dsr_rewards():
    hand = hand_path()
    ret = [hand["nav"][k] / hand["pre"][k] - 1 for k in range(3)]
    logs = [math.log(1 + r) for r in ret]
    env = three_day_env(reward="risk_adjusted", return_weight=2.0, vol_penalty=0.5,
                         drawdown_penalty=0.3, cost_penalty=1.5)
    env.reset(options={"start": 0})
    peak = 1e6
    for k in range(3):
        _, reward, *_ = env.step(ACTIONS[k])
        peak = max(peak, hand["nav"][k])
        vol = float(np.std(logs[: k + 1], ddof=1)) if k >= 1 else 0.0
        cost = (hand["fee"][k] + hand["slip"][k]) / hand["pre"][k]
        expected = 2.0 * logs[k] - 0.5 * vol - 0.3 * (1 - hand["nav"][k] / peak) - 1.5 * cost
        assert reward == pytest.approx(expected, abs=1e-12)

    eta = 0.1
    env = three_day_env(reward="dsr", dsr_eta=eta)
    env.reset(options={"start": 0})
    a = b = 0.0
    for k in range(3):
        _, reward, *_ = env.step(ACTIONS[k])
        var = b - a * a
        expected = 0.0 if var <= 1e-12 else (b * (ret[k] - a) - 0.5 * a * (ret[k] ** 2 - b)) / var**1.5
        assert reward == pytest.approx(expected, rel=1e-10, abs=1e-12)
        a, b = a + eta * (ret[k] - a), b + eta * (ret[k] ** 2 - b)


def test_concentration_penalty_uses_post_trade_weights():
    env = three_day_env(concentration_penalty=0.7)
    base = three_day_env()
    env.reset(options={"start": 0})
    base.reset(options={"start": 0})
    _, r_pen, *_ = env.step(ACTIONS[0])
    _, r_base, *_ = base.step(ACTIONS[0])
    assert r_pen == pytest.approx(r_base - 0.7 * (0.6**2 + 0.2**2), abs=1e-12)


def test_differential_sharpe_is_the_eta_derivative_of_the_ema_sharpe():
    """Moody & Saffell: D_t = dS_t/d eta at eta = 0, with S = A / sqrt(B - A^2)."""
    rng = np.random.default_rng(3)
    a_prev = rng.normal(0.001, 0.002, 20)
    b_prev = a_prev**2 + rng.uniform(1e-5, 1e-3, 20)
    ret = rng.normal(0.0, 0.02, 20)

    def sharpe(eta: float) -> np.ndarray:
        a = a_prev + eta * (ret - a_prev)
        b = b_prev + eta * (ret**2 - b_prev)
        return a / np.sqrt(b - a * a)

    h = 1e-6
    numeric = (sharpe(h) - sharpe(-h)) / (2 * h)
    dsr, a_new, b_new = differential_sharpe(ret, a_prev, b_prev, 0.05)
    np.testing.assert_allclose(dsr, numeric, rtol=1e-6)
    np.testing.assert_allclose(a_new, a_prev + 0.05 * (ret - a_prev))
    np.testing.assert_allclose(b_new, b_prev + 0.05 * (ret**2 - b_prev))
    zero, *_ = differential_sharpe(np.array([0.01]), np.zeros(1), np.zeros(1), 0.05)
    assert zero[0] == 0.0  # no variance yet: defined as 0


def test_rolling_vol_matches_pandas():
    rng = np.random.default_rng(0)
    series = rng.normal(0, 0.02, 50)
    k = 20
    expected = pd.Series(series).rolling(k, min_periods=2).std().fillna(0.0).to_numpy()
    buf = np.zeros((1, k))
    for t, x in enumerate(series):
        buf = np.concatenate([buf[:, 1:], [[x]]], axis=1)
        got = rolling_vol(buf, np.array([min(t + 1, k)]))[0]
        assert got == pytest.approx(expected[t], abs=1e-14)


def test_trailing_adv_matches_pandas_over_open_days():
    rng = np.random.default_rng(1)
    vol = rng.uniform(1e6, 1e8, (40, 3))
    vol[rng.random((40, 3)) < 0.3] = 0.0
    vol[:8, 2] = 0.0
    got = trailing_adv(vol, 5)
    frame = pd.DataFrame(vol).where(pd.DataFrame(vol) > 0)
    expected = frame.rolling(5, min_periods=1).mean().fillna(0.0).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_slippage_is_flat_without_volume_and_scales_with_cost_scale():
    features = np.zeros((4, 2, 1), dtype=np.float32)
    env = CryptoHedgeFundEnv(PRICES, features, FEES, slippage_costs=SLIPS, window=1, max_weight=1.0,
                             cost_scale=2.0)
    env.reset(options={"start": 0})
    info = env.step(np.array([0.5, 0.5, 0.0]))[4]
    assert info["fee"] == pytest.approx(2.0 * (0.001 + 0.002) * 5e5, rel=1e-12)
    assert info["slippage"] == pytest.approx(2.0 * (0.0005 + 0.001) * 5e5, rel=1e-12)
    free = CryptoHedgeFundEnv(PRICES, features, FEES, slippage_costs=SLIPS, window=1, cost_scale=0.0)
    free.reset(options={"start": 0})
    assert free.step(np.array([0.5, 0.5, 0.0]))[4]["cost"] == 0.0


def test_margin_borrow_cost_and_cash_interest():
    prices = np.array([[100.0], [100.0], [100.0]])
    features = np.zeros((3, 1, 1), dtype=np.float32)
    env = CryptoHedgeFundEnv(prices, features, 0.0, window=1, margin=True, max_leverage=2.0,
                             max_weight=2.0, borrow_rate=0.0365, cash_rate=0.01)
    env.reset(options={"start": 0})
    info = env.step(np.array([1.0, 0.0]))[4]  # 2x long, cash -1: pays 0.0365 / 365 = 1e-4 a day
    assert info["nav"] == pytest.approx(1e6 * (1 - 1e-4), rel=1e-12)
    assert info["gross_leverage"] == pytest.approx(2.0 / (1 - 1e-4), rel=1e-12)
    info = env.step(np.array([0.0, 1.0]))[4]  # all cash earns 0.01 / 365
    assert info["nav"] == pytest.approx(1e6 * (1 - 1e-4) * (1 + 0.01 / 365), rel=1e-12)


def _liquidation_env(returns: list[float], mm: float = 0.25) -> CryptoHedgeFundEnv:
    prices = 100.0 * np.cumprod([1.0, *[1 + r for r in returns]])[:, None]
    features = np.zeros((len(prices), 1, 1), dtype=np.float32)
    return CryptoHedgeFundEnv(prices, features, 0.0, window=1, margin=True, max_leverage=2.0, max_weight=2.0,
                              borrow_rate=0.0, maintenance_margin=mm, liquidation_penalty=0.05)


def test_liquidation_triggers_exactly_when_equity_falls_below_maintenance():
    # Re-levered to 2x every day: equity 1 + 2r vs 0.25 * gross 2(1 + r): the boundary is r = -1/3.
    eps = 1e-7
    env = _liquidation_env([-0.30, -1 / 3 + eps, -1 / 3 - eps, 0.0])
    env.reset(options={"start": 0})
    nav = 1e6
    for k, r in enumerate([-0.30, -1 / 3 + eps]):
        _, _, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
        nav *= 1 + 2 * r
        assert not terminated and not truncated, f"liquidated one step early (step {k})"
        assert info["nav"] == pytest.approx(nav, rel=1e-9)
        assert info["nav"] >= 0.25 * info["gross_leverage"] * info["nav"]
    r = -1 / 3 - eps
    _, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
    gross = 2 * (1 + r) * nav
    assert terminated and not truncated
    assert "liquidation" in info["interventions"]
    assert info["nav"] == pytest.approx(nav * (1 + 2 * r) - 0.05 * gross, rel=1e-9)
    np.testing.assert_array_equal(info["weights"], [0.0, 1.0])
    assert reward == pytest.approx(math.log(info["nav"] / nav), abs=1e-9)
    with pytest.raises(RuntimeError):
        env.step(np.array([1.0, 0.0]))


def test_bankruptcy_terminates_and_floors_nav():
    env = _liquidation_env([-0.6, 0.0], mm=0.0)
    env.reset(options={"start": 0})
    _, reward, terminated, _, info = env.step(np.array([1.0, 0.0]))
    assert terminated and info["nav"] == 0.0 and "bankruptcy" in info["interventions"]
    assert reward == pytest.approx(math.log(1e-6))


def test_drawdown_control_scales_risky_exposure():
    prices = np.array([[100.0, 10.0], [80.0, 10.0], [80.0, 10.0], [80.0, 10.0]])
    features = np.zeros((4, 2, 1), dtype=np.float32)
    env = CryptoHedgeFundEnv(prices, features, 0.0, window=1, max_weight=1.0, drawdown_control=True,
                             dd_threshold=0.1, dd_vol_threshold=100.0, dd_scale=0.5)
    env.reset(options={"start": 0})
    info = env.step(np.array([0.6, 0.2, 0.2]))[4]  # no drawdown yet: unscaled
    np.testing.assert_allclose(info["target_weights"], [0.6, 0.2, 0.2])
    assert info["drawdown"] == pytest.approx(0.12)  # 0.6 * 20% loss
    info = env.step(np.array([0.6, 0.2, 0.2]))[4]
    np.testing.assert_allclose(info["target_weights"], [0.3, 0.1, 0.6])
    assert "drawdown_control" in info["interventions"]


def test_bad_actions_raise_one_sentence_errors():
    env = three_day_env()
    env.reset(options={"start": 0})
    for bad, words in [
        (np.array([np.nan, 0.5, 0.5]), "NaN"), (np.array([np.inf, 0.5, 0.5]), "infinite"),
        (np.array([-0.1, 0.5, 0.6]), "negative"), (np.array([0.5, 0.5]), "shape"),
        (np.ones((1, 3)), "shape"), ("abc", "numbers"),
    ]:
        with pytest.raises(ValueError, match=words):
            env.step(bad)
    assert env.day == 0  # nothing was stepped
    np.testing.assert_array_equal(check_actions([0, 0, 0], (3,)), np.zeros(3))


def test_config_is_strict_and_validated():
    cfg = from_mapping(EnvConfig, {"window": 30, "reward": "dsr", "margin": True, "max_weight": 1.5}, "env")
    assert cfg.window == 30 and cfg.leverage == 2.0
    for bad in [{"reward": "sharpe"}, {"window": 0}, {"wndow": 3}, {"max_weight": 1.5}, {"dsr_eta": 1.0},
                {"window": 2.5}, {"maintenance_margin": 1.0}, {"initial_nav": -1.0}]:
        with pytest.raises(DataError):
            from_mapping(EnvConfig, bad, "env")
    with pytest.raises(ValueError, match="unknown environment option"):
        three_day_env(windw=3)


def _random_env(reward: str, **cfg) -> CryptoHedgeFundEnv:
    rng = np.random.default_rng(8)
    prices = 100 * np.cumprod(1 + 0.03 * rng.standard_normal((60, 3)), axis=0)
    volume = rng.uniform(1e6, 1e8, (60, 3))
    return CryptoHedgeFundEnv(prices, np.zeros((60, 3, 1), dtype=np.float32), 0.002, volume=volume,
                              slippage_costs=0.001, window=1, max_weight=1.0, reward=reward, **cfg)


def test_risk_adjusted_reward_over_a_wrapping_20_day_window():
    env = _random_env("risk_adjusted", return_weight=1.0, vol_penalty=0.7, drawdown_penalty=0.4,
                      cost_penalty=2.0)
    env.reset(options={"start": 0})
    rng = np.random.default_rng(1)
    navs, logs, costs, rewards = [env.nav], [], [], []
    for _ in range(45):
        _, reward, *_, info = env.step(rng.random(4))
        logs.append(math.log(info["nav"] / navs[-1]))
        costs.append(info["cost"] / navs[-1])
        navs.append(info["nav"])
        rewards.append(reward)
    vol = pd.Series(logs).rolling(20, min_periods=2).std().fillna(0.0).to_numpy()
    peak = np.maximum.accumulate(navs)[1:]
    expected = np.array(logs) - 0.7 * vol - 0.4 * (1 - np.array(navs[1:]) / peak) - 2.0 * np.array(costs)
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-12)


def test_dsr_reward_over_a_long_run_matches_the_recursion():
    eta = 0.05
    env = _random_env("dsr", dsr_eta=eta)
    env.reset(options={"start": 0})
    rng = np.random.default_rng(2)
    a = b = 0.0
    nav = env.nav
    for _ in range(50):
        _, reward, *_, info = env.step(rng.random(4))
        r = info["nav"] / nav - 1
        var = b - a * a
        expected = 0.0 if var <= 1e-12 else (b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        a, b, nav = a + eta * (r - a), b + eta * (r * r - b), info["nav"]


def test_slippage_follows_the_square_root_law():
    """Quadrupling a trade quadruples its fee and multiplies its slippage by 8 (rate doubles)."""
    prices = np.full((3, 1), 100.0)
    feats = np.zeros((3, 1, 1), dtype=np.float32)
    out = []
    for nav in (1e6, 4e6):
        env = CryptoHedgeFundEnv(prices, feats, 0.001, volume=np.full((3, 1), 5e8), slippage_costs=0.0005,
                                 window=1, max_weight=1.0, initial_nav=nav)
        env.reset(options={"start": 0})
        out.append(env.step(np.array([0.5, 0.5]))[4])
    assert out[1]["fee"] == pytest.approx(4 * out[0]["fee"], rel=1e-12)
    assert out[1]["slippage"] == pytest.approx(8 * out[0]["slippage"], rel=1e-12)
    # 1% of ADV (5e6) traded -> slippage rate = the quoted 5 bps.
    env = CryptoHedgeFundEnv(prices, feats, 0.0, volume=np.full((3, 1), 5e8), slippage_costs=0.0005,
                             window=1, max_weight=1.0, initial_nav=1e7)
    env.reset(options={"start": 0})
    assert env.step(np.array([0.5, 0.5]))[4]["slippage"] == pytest.approx(5e6 * 0.0005, rel=1e-12)


def test_drawdown_control_fires_on_realised_volatility():
    prices = np.array([[100.0], [110.0], [95.0], [105.0], [105.0], [105.0]])
    feats = np.zeros((6, 1, 1), dtype=np.float32)
    env = CryptoHedgeFundEnv(prices, feats, 0.0, window=1, max_weight=1.0, drawdown_control=True,
                             dd_threshold=1.0, dd_vol_threshold=0.5, dd_scale=0.25)
    env.reset(options={"start": 0})
    logs, fired = [], []
    for k in range(5):
        info = env.step(np.array([1.0, 0.0]))[4]
        vol = float(np.std(logs, ddof=1)) * math.sqrt(365) if len(logs) >= 2 else 0.0
        assert info["target_weights"][0] == pytest.approx(0.25 if vol > 0.5 else 1.0), k
        assert ("drawdown_control" in info["interventions"]) == (vol > 0.5)
        fired.append(vol > 0.5)
        logs.append(info["log_return"])
    assert fired == [False, False, True, True, True]
