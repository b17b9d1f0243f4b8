"""The synthetic market: determinism, calendar and listing rules, OHLCV sanity and stylised facts.

Stylised facts are checked on several seeds (not one lucky seed) over a 6-year span, with
``scipy.stats`` as the independent estimator of kurtosis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from data.synthetic import LISTING_DATES, ROLL_DRAG, generate_market, profile_of, regime_path
from data.universe import build_universe

PAPER = {
    "growth": ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "DOT-USD", "AVAX-USD", "MATIC-USD", "LINK-USD",
               "ATOM-USD", "XRP-USD"],
    "hedge": ["BITO", "ETHW-USD", "VXX", "UVXY"],
    "traditional": ["SPY", "QQQ", "GLD", "BND", "IEF"],
    "stable": ["BIL", "SHV", "USDT-USD"],
}
SPAN = ("2018-01-01", "2023-12-31")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def markets():
    universe = build_universe(PAPER)
    return {seed: generate_market(universe, *SPAN, seed=seed) for seed in SEEDS}


def col(m, ticker):
    return m.tickers.index(ticker)


def log_returns(m, ticker, tradable_only=True):
    """Daily log returns of ``ticker`` on days both ends are listed (and the day is tradable)."""
    i = col(m, ticker)
    c = m.close[:, i]
    r = np.log(c[1:] / c[:-1])
    ok = m.listed[1:, i] & m.listed[:-1, i]
    if tradable_only:
        ok &= m.tradable[1:, i]
    return r, ok


def test_deterministic_for_a_seed_and_different_across_seeds(markets):
    universe = build_universe(PAPER)
    again = generate_market(universe, *SPAN, seed=0)
    for name in ("open", "high", "low", "close", "volume", "listed", "tradable", "dates"):
        np.testing.assert_array_equal(getattr(again, name), getattr(markets[0], name), err_msg=name)
    assert not np.allclose(markets[0].close[-1, 0], markets[1].close[-1, 0])
    assert np.nanmean(np.abs(np.log(markets[0].close / markets[1].close))) > 0.1


def test_an_asset_path_does_not_depend_on_the_rest_of_the_universe(markets):
    small = generate_market(build_universe({"growth": ["ETH-USD"], "hedge": ["UVXY"]}), *SPAN, seed=0)
    for ticker in ("ETH-USD", "UVXY"):
        np.testing.assert_array_equal(small.close[:, col(small, ticker)], markets[0].close[:, col(markets[0], ticker)])


def test_shapes_labels_and_ohlc_consistency(markets):
    m = markets[0]
    n_days = (np.datetime64(SPAN[1]) - np.datetime64(SPAN[0])).astype(int) + 1
    assert m.source == "synthetic" and m.synthetic and m.dropped == ()
    assert m.tickers == tuple(t for ts in PAPER.values() for t in ts)
    assert m.dates.dtype == np.dtype("datetime64[D]") and m.n_days == n_days
    assert np.all(np.diff(m.dates.astype(np.int64)) == 1)
    for a in (m.open, m.high, m.low, m.close, m.volume):
        assert a.shape == (n_days, m.n_assets) and a.dtype == np.float64
    lst = m.listed
    assert np.all(m.close[lst] > 0) and np.all(m.low[lst] > 0)
    assert np.all(m.high[lst] >= np.maximum(m.open, m.close)[lst])
    assert np.all(m.low[lst] <= np.minimum(m.open, m.close)[lst])
    assert np.all(m.volume >= 0) and np.all(m.volume[m.tradable] > 0) and np.all(m.volume[~m.tradable] == 0)
    assert np.all(m.tradable <= m.listed)


def test_weekday_calendar_for_etfs_and_seven_days_for_coins(markets):
    m = markets[0]
    weekend = pd.DatetimeIndex(m.dates.astype("datetime64[ns]")).day_of_week.to_numpy() >= 5
    for i, ticker in enumerate(m.tickers):
        listed = m.listed[:, i]
        if ticker.endswith("-USD"):
            assert m.tradable[listed, i].all(), ticker
            continue
        assert not m.tradable[weekend, i].any() and m.tradable[~weekend & listed, i].all(), ticker
        # Carried over: the weekend close equals Friday's, a flat bar with no volume.
        sat = np.flatnonzero(weekend[1:] & ~weekend[:-1] & listed[:-1]) + 1
        np.testing.assert_array_equal(m.close[sat, i], m.close[sat - 1, i])
        np.testing.assert_array_equal(m.close[sat + 1, i], m.close[sat - 1, i])
        np.testing.assert_array_equal(m.high[sat, i], m.close[sat, i])


def test_listing_dates_mask_prices_before_listing(markets):
    m = markets[0]
    for ticker, day in LISTING_DATES.items():
        i = col(m, ticker)
        first = int(np.argmax(m.listed[:, i]))
        expected = np.datetime64(day)
        # Weekday assets start at their first weekday on or after the listing date.
        assert expected <= m.dates[first] <= expected + 2, ticker
        assert np.isnan(m.close[:first, i]).all() and np.isnan(m.open[:first, i]).all()
        assert not m.listed[:first, i].any() and m.listed[first:, i].all()
        assert np.all(m.volume[:first, i] == 0)
    assert m.listed[:, col(m, "BTC-USD")].all()  # unknown listing -> listed from the start
    late = generate_market(build_universe({"growth": ["SOL-USD", "BTC-USD"]}), "2019-01-01", "2019-12-31", 0)
    assert not late.listed[:, 0].any() and np.isnan(late.close[:, 0]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_crypto_fat_tails_and_volatility_clustering(markets, seed):
    m = markets[seed]
    lag1 = []
    for ticker in PAPER["growth"]:
        r, ok = log_returns(m, ticker)
        x = r[ok]
        assert stats.kurtosis(x, fisher=False) > 3.5, ticker  # Pearson kurtosis; normal = 3
        sq = (x - x.mean()) ** 2
        acf = [np.corrcoef(sq[k:], sq[:-k])[0, 1] for k in range(1, 6)]
        assert np.mean(acf) > 0.02, ticker  # squared returns stay autocorrelated over a week
        lag1.append(acf[0])
    assert np.mean(lag1) > 0.05
    btc, ok = log_returns(m, "BTC-USD")
    assert 0.02 < btc[ok].std() < 0.07  # daily vol of a large crypto


@pytest.mark.parametrize("seed", SEEDS)
def test_crypto_correlations_rise_in_stress(markets, seed):
    m = markets[seed]
    stress = regime_path(m.n_days, seed)[1:]
    coins = [t for t in PAPER["growth"]]
    rets = np.column_stack([log_returns(m, t)[0] for t in coins])
    ok = np.all(np.column_stack([log_returns(m, t)[1] for t in coins]), axis=1)

    def mean_corr(rows):
        c = np.corrcoef(rets[rows & ok].T)
        return c[np.triu_indices(len(coins), 1)].mean()

    assert 0.05 < stress.mean() < 0.35
    calm, crisis = mean_corr(~stress), mean_corr(stress)
    assert crisis > calm + 0.25 and crisis > 0.6, (calm, crisis)
    # Crashes together: the average crypto loses in stress, gains in calm.
    avg = rets[ok].mean(axis=1)
    assert avg[stress[ok]].mean() < 0 < avg[~stress[ok]].mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_vol_etf_decays_in_calm_and_spikes_in_stress(markets, seed):
    m = markets[seed]
    stress = regime_path(m.n_days, seed)[1:]
    for ticker in ("UVXY", "VXX"):
        i = col(m, ticker)
        r, ok = log_returns(m, ticker)
        calm = r[ok & ~stress].mean()
        onset = np.flatnonzero(stress[1:] & ~stress[:-1]) + 1  # first stress day of each episode
        first_week = np.array([r[t:t + 7][ok[t:t + 7]].sum() for t in onset])
        assert calm < -0.002 and len(onset) >= 5, ticker
        assert first_week.mean() > 0.05 and np.mean(first_week > 0) > 0.6, (ticker, first_week)
        assert m.close[-1, i] < 0.5 * m.close[0, i], ticker  # decays over six years
    u, ok = log_returns(m, "UVXY")
    v, _ = log_returns(m, "VXX")
    assert u[ok].std() > 1.3 * v[ok].std()  # UVXY is the levered one
    spy, _ = log_returns(m, "SPY")
    assert np.corrcoef(u[ok], spy[ok])[0, 1] < -0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_cash_legs_behave_like_cash(markets, seed):
    m = markets[seed]
    years = m.n_days / 365.25
    for ticker in ("BIL", "SHV"):
        i = col(m, ticker)
        r, ok = log_returns(m, ticker)
        assert r[ok].std() < 5e-4, ticker
        growth = np.log(m.close[-1, i] / m.close[0, i]) / years
        assert 0.035 < growth < 0.045, ticker  # T-bill drift ~4%/yr
    usdt = m.close[:, col(m, "USDT-USD")]
    assert np.max(np.abs(usdt - 1.0)) <= 0.05 and np.std(usdt) < 0.01
    r, ok = log_returns(m, "USDT-USD")
    btc, _ = log_returns(m, "BTC-USD")
    assert r[ok].std() < 0.1 * btc[ok].std()


@pytest.mark.parametrize("seed", SEEDS)
def test_traditional_and_futures_etfs(markets, seed):
    m = markets[seed]
    stress = regime_path(m.n_days, seed)[1:]
    spy, ok = log_returns(m, "SPY")
    assert 0.005 < spy[ok].std() < 0.02  # equity-like daily vol
    assert log_returns(m, "BND")[0][ok].std() < 0.5 * spy[ok].std()  # bond-like vol
    for ticker, floor in (("SPY", 0.02), ("IEF", 0.0), ("GLD", 0.0)):  # volatility clusters here too
        x = log_returns(m, ticker)[0][ok]
        sq = (x - x.mean()) ** 2
        assert np.mean([np.corrcoef(sq[k:], sq[:-k])[0, 1] for k in range(1, 6)]) > floor, ticker
    for ticker in ("BND", "IEF", "GLD"):
        r, _ = log_returns(m, ticker)
        assert np.corrcoef(r[ok & stress], spy[ok & stress])[0, 1] < 0, ticker  # a hedge in stress
    # BITO tracks BTC week by week, less a roll drag (estimated within 3 standard errors).
    b, t = col(m, "BITO"), col(m, "BTC-USD")
    fri = np.flatnonzero(m.tradable[:, b] & (pd.DatetimeIndex(m.dates.astype("datetime64[ns]")).day_of_week == 4))
    wb = np.diff(np.log(m.close[fri, b]))
    wt = np.diff(np.log(m.close[fri, t]))
    assert np.corrcoef(wb, wt)[0, 1] > 0.95
    gap = wb - wt
    drag, se = gap.mean() * 52.18, gap.std() / np.sqrt(len(gap)) * 52.18
    assert abs(drag + ROLL_DRAG) < 3 * se and se < 0.1


def test_volume_rises_with_absolute_return(markets):
    m = markets[0]
    for ticker in ("BTC-USD", "SPY"):
        i = col(m, ticker)
        r, ok = log_returns(m, ticker)
        vol = m.volume[1:, i]
        assert stats.spearmanr(np.abs(r[ok]), vol[ok]).statistic > 0.2, ticker


def test_unknown_tickers_take_their_category_defaults():
    universe = build_universe({"growth": ["NEWCOIN-USD"], "hedge": ["NEWVOL"], "traditional": ["NEWETF"],
                               "stable": ["NEWBILL", "NEWSTABLE-USD"]})
    kinds = [profile_of(a.ticker, a.category).kind for a in universe.assets]
    assert kinds == ["crypto", "vol_etf", "equity", "cash", "stablecoin"]
    m = generate_market(universe, "2020-01-01", "2023-12-31", seed=5)
    assert m.listed.all()  # unknown tickers start at `start`
    sd = {t: log_returns(m, t)[0][log_returns(m, t)[1]].std() for t in m.tickers}
    assert sd["NEWCOIN-USD"] > 0.03 and 0.004 < sd["NEWETF"] < 0.03 and sd["NEWBILL"] < 5e-4
    assert np.max(np.abs(m.close[:, 4] - 1.0)) <= 0.05
    assert m.close[-1, 1] < 0.5 * m.close[0, 1]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(30, 200), st.integers(0, 6))
def test_invariants_hold_for_any_seed_and_span(seed, n_days, start_offset):
    start = np.datetime64("2021-10-10") + start_offset  # any weekday, around BITO's listing
    end = start + n_days - 1
    universe = build_universe({"growth": ["BTC-USD"], "hedge": ["BITO", "UVXY"], "stable": ["USDT-USD", "BIL"]})
    m = generate_market(universe, str(start), str(end), seed)
    lst = m.listed
    assert m.n_days == n_days and np.isfinite(m.close[lst]).all() and np.isnan(m.close[~lst]).all()
    assert np.all(m.high[lst] >= np.maximum(m.open, m.close)[lst])
    assert np.all(m.low[lst] <= np.minimum(m.open, m.close)[lst]) and np.all(m.low[lst] > 0)
    assert np.all(m.tradable <= lst) and np.all(np.diff(lst.astype(int), axis=0) >= 0)
    ratio = m.close[1:][lst[:-1]] / m.close[:-1][lst[:-1]]
    assert np.all((ratio > 1 / 20) & (ratio < 20))  # the loader's jump check would accept it


def test_monday_returns_carry_only_what_moved_over_the_weekend(markets):
    """Equity ETFs do not move while closed (Monday variance like other days); BITO tracks BTC, which
    trades all weekend, so its Monday return holds three days of BTC moves."""
    m = markets[0]
    monday = pd.DatetimeIndex(m.dates.astype("datetime64[ns]")).day_of_week.to_numpy()[1:] == 0
    for ticker, low, high in (("SPY", 0.6, 1.6), ("BITO", 2.0, 4.5)):
        r, ok = log_returns(m, ticker)
        ratio = r[ok & monday].var() / r[ok & ~monday].var()
        assert low < ratio < high, (ticker, ratio)
