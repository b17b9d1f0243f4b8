"""Feature engineering: causality, warm-up, normalisation on the train span, pandas-ta parity, CLI errors.

Markets are built by hand (``make_market``): Student-t random walks, weekday calendar for ETFs (prices
carried over weekends, volume 0, not tradable), late listings (NaN before the first quote).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from data.feature_engineering import (
    LOOKBACK_BARS,
    NEUTRAL,
    build_feature_store,
    compute_raw_features,
    quote_days,
    raw_features_unfilled,
    store_content_hash,
    warmup_ready,
)
from data.market import DataError, MarketData
from data.ta_compat import ta as pta  # pandas_ta on Python >= 3.12, pandas_ta_classic below

ROOT = Path(__file__).resolve().parents[1]
TICKERS = ("BTC-USD", "ETH-USD", "SPY", "SOL-USD", "BIL")
CATEGORIES = ("growth", "growth", "traditional", "growth", "stable")


def is_weekday(dates: np.ndarray) -> np.ndarray:
    """(T,) bool: Monday..Friday (1970-01-01 was a Thursday)."""
    return (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7 < 5


def make_market(n_days: int = 420, seed: int = 0, tickers=TICKERS, categories=CATEGORIES,
                list_day: dict[str, int] | None = None, start: str = "2020-01-01",
                flat: tuple[str, ...] = ()) -> MarketData:
    """A hand-built aligned market; ``-USD`` tickers trade daily, the rest on weekdays.

    ``list_day`` maps a ticker to its first calendar day (default 0); ``flat`` tickers keep a
    constant price of 1 (a degenerate cash leg).
    """
    rng = np.random.default_rng(seed)
    d0 = np.datetime64(start, "D")
    dates = np.arange(d0, d0 + n_days)
    T, N = n_days, len(tickers)
    list_day = {"SOL-USD": 150} if list_day is None else list_day
    arrays = {k: np.full((T, N), np.nan) for k in ("open", "high", "low", "close")}
    volume = np.zeros((T, N))
    listed = np.zeros((T, N), bool)
    tradable = np.zeros((T, N), bool)
    for i, tk in enumerate(tickers):
        open_days = np.ones(T, bool) if tk.endswith("-USD") else is_weekday(dates)
        qd = open_days & (np.arange(T) >= list_day.get(tk, 0))
        idx = np.flatnonzero(qd)
        n = idx.size
        c = np.ones(n) if tk in flat else 50.0 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.02))
        o = c * np.exp(rng.normal(0, 0.005, n)) if tk not in flat else c.copy()
        h = np.maximum(c, o) * np.exp(np.abs(rng.normal(0, 0.01, n))) if tk not in flat else c.copy()
        lo = np.minimum(c, o) * np.exp(-np.abs(rng.normal(0, 0.01, n))) if tk not in flat else c.copy()
        pos = np.searchsorted(idx, np.arange(T), side="right") - 1
        ok = pos >= 0
        for k in ("open", "high", "low", "close"):
            arrays[k][ok, i] = c[pos[ok]]  # closed days: every price is the carried close
        arrays["open"][idx, i], arrays["high"][idx, i], arrays["low"][idx, i] = o, h, lo
        volume[idx, i] = rng.lognormal(10, 0.5, n)
        listed[ok, i] = True
        tradable[:, i] = qd
    return MarketData(dates=dates, tickers=tuple(tickers), categories=tuple(categories), volume=volume,
                      listed=listed, tradable=tradable, source="synthetic", **arrays)


def perturb_after(market: MarketData, t: int, seed: int) -> MarketData:
    """Every price and volume after day ``t`` multiplied by a random factor (masks unchanged)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in ("open", "high", "low", "close", "volume"):
        a = getattr(market, k).copy()
        a[t + 1:] *= rng.lognormal(0.0, 0.3, a[t + 1:].shape)
        out[k] = a
    return dataclasses.replace(market, **out)


@pytest.fixture(scope="module")
def market() -> MarketData:
    return make_market()


@pytest.fixture(scope="module")
def raw(market):
    return compute_raw_features(market)


@pytest.fixture(scope="module")
def store(market):
    return build_feature_store(market, "2020-12-15", clip=5.0)


def test_feature_names_are_unique_and_enough(raw):
    names, values = raw
    assert len(names) >= 50
    assert len(set(names)) == len(names)
    assert values.shape == (420, len(TICKERS), len(names))


def test_every_feature_is_finite_once_ready_without_neutral_filling():
    """LOOKBACK_BARS really is the longest lookback: nothing is undefined after it on healthy data."""
    m = make_market(list_day={})
    names, values = raw_features_unfilled(m)
    ready = warmup_ready(m)
    bad = [names[j] for j in range(len(names)) if np.isnan(values[:, :, j][ready]).any()]
    assert bad == []
    # and the longest one is really needed: the 200-day SMA ratio is undefined one bar earlier
    btc = np.flatnonzero(quote_days(m)[:, 0])
    assert np.isnan(values[btc[LOOKBACK_BARS - 2], 0, names.index("sma_200")])


def test_features_are_scale_free(market, raw):
    """Prices x 1000 (a different currency unit) leave every feature unchanged."""
    scaled = dataclasses.replace(market, **{k: getattr(market, k) * 1000.0 for k in ("open", "high", "low", "close")})
    names, values = compute_raw_features(scaled)
    np.testing.assert_allclose(values, raw[1], rtol=1e-6, atol=1e-9, equal_nan=True)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.integers(min_value=20, max_value=418), seed=st.integers(0, 10_000))
def test_no_look_ahead_in_any_raw_feature(market, raw, t, seed):
    names, base = raw
    _, moved = compute_raw_features(perturb_after(market, t, seed))
    np.testing.assert_array_equal(moved[: t + 1], base[: t + 1])
    assert not np.allclose(moved[t + 1:], base[t + 1:], equal_nan=True)  # the perturbation did bite


def test_no_look_ahead_in_the_normalised_store_with_fixed_stats(market, store):
    for t in (300, 333, 400):  # a weekday, a Saturday, late in the span
        moved = build_feature_store(perturb_after(market, t, t), "2020-12-15", clip=5.0,
                                    norm_stats=(store.norm_mean, store.norm_std))
        k = int(np.searchsorted(store.dates, market.dates[t], "right"))
        np.testing.assert_array_equal(moved.features[:k], store.features[:k])
        np.testing.assert_array_equal(moved.listed, store.listed)


def test_normalisation_uses_only_the_train_span(market, raw, store):
    train_end = np.datetime64("2020-12-15")
    t_end = int(np.flatnonzero(market.dates == train_end)[0])
    moved = build_feature_store(perturb_after(market, t_end, 7), train_end, clip=5.0)
    np.testing.assert_array_equal(moved.norm_mean, store.norm_mean)
    np.testing.assert_array_equal(moved.norm_std, store.norm_std)
    assert not np.array_equal(moved.features, store.features)
    # the statistics by hand: listed asset-days of the store up to train_end
    t0 = int(np.flatnonzero(market.dates == store.dates[0])[0])
    sel = store.listed & (store.dates <= train_end)[:, None]
    x = raw[1][t0:][sel]
    np.testing.assert_allclose(store.norm_mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(store.norm_std, np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0), rtol=1e-12)
    z = np.clip((x - x.mean(axis=0)) / store.norm_std, -5, 5).astype(np.float32)
    np.testing.assert_array_equal(store.features[sel], z)


def test_warm_up_rows_are_dropped_and_late_listings_masked(market, store):
    spy_days = np.flatnonzero(quote_days(market)[:, TICKERS.index("SPY")])
    t0 = spy_days[LOOKBACK_BARS - 1]  # the ETF is the last of the assets listed on day 0 to finish warm-up
    assert store.dates[0] == market.dates[t0]
    assert store.n_days == market.n_days - t0
    sol = TICKERS.index("SOL-USD")
    sol_ready = 150 + LOOKBACK_BARS - 1 - t0  # first store row where SOL has 200 quotes
    assert not store.listed[:sol_ready, sol].any() and store.listed[sol_ready:, sol].all()
    assert not store.tradable[:sol_ready, sol].any()
    assert np.all(store.features[:sol_ready, sol] == 0.0)
    assert np.count_nonzero(store.features[sol_ready, sol]) > 40
    assert np.all(np.isnan(store.close[:sol_ready, sol]))
    assert np.all(store.returns[:sol_ready, sol] == 0.0)
    assert not (store.tradable & ~store.listed).any()


def test_returns_volume_and_weekend_carry(market, store):
    t0 = int(np.flatnonzero(market.dates == store.dates[0])[0])
    c = market.close[t0:]
    btc, spy = TICKERS.index("BTC-USD"), TICKERS.index("SPY")
    for t in (0, 5, 100):
        assert store.returns[t, btc] == c[t + 1, btc] / c[t, btc] - 1.0
    assert np.all(store.returns[-1] == 0.0)
    fridays = np.flatnonzero(~is_weekday(store.dates[1:]) & is_weekday(store.dates[:-1]))
    assert np.all(store.returns[fridays, spy] == 0.0)  # Friday -> Saturday: carried close
    assert not store.tradable[fridays + 1, spy].any()
    own = [j for j, n in enumerate(store.feature_names) if not n.startswith(("mkt_", "rel_", "xs_"))]
    assert len(own) >= 70  # own-day indicators are carried over the weekend; market-wide ones move on
    np.testing.assert_array_equal(store.features[fridays + 1, spy][:, own], store.features[fridays, spy][:, own])
    np.testing.assert_allclose(store.volume[:, btc], c[:, btc] * market.volume[t0:, btc], rtol=1e-15)
    assert np.all(store.volume[fridays + 1, spy] == 0.0)


@pytest.mark.parametrize("ticker", ["BTC-USD", "SPY"])
def test_pandas_ta_parity_on_own_quote_days(market, raw, ticker):
    """Pipeline output (before normalisation) equals pandas-ta run directly on the asset's quote days."""
    names, values = raw
    i = TICKERS.index(ticker)
    days = np.flatnonzero(quote_days(market)[:, i])
    o, h, lo, c, v = (pd.Series(getattr(market, k)[days, i]) for k in ("open", "high", "low", "close", "volume"))
    got = {n: values[days, i, names.index(n)] for n in names}
    macd = pta.macd(c, 12, 26, 9)
    bb = pta.bbands(c, 20, 2.0)
    stoch = pta.stoch(h, lo, c, 14, 3, 3)
    adx = pta.adx(h, lo, c, 14)
    expected = {
        "rsi_14": pta.rsi(c, 14), "rsi_7": pta.rsi(c, 7),
        "macd_line": macd.iloc[:, 0] / c, "macd_hist": macd.iloc[:, 1] / c, "macd_signal": macd.iloc[:, 2] / c,
        "bb_pctb_20": bb.iloc[:, 4], "bb_width_20": bb.iloc[:, 3] / 100,
        "atr_14": pta.atr(h, lo, c, 14) / c, "stoch_k": stoch.iloc[:, 0], "stoch_d": stoch.iloc[:, 1],
        "adx_14": adx.iloc[:, 0], "willr_14": pta.willr(h, lo, c, 14), "cci_20": pta.cci(h, lo, c, 20),
        "mfi_14": pta.mfi(h, lo, c, v, 14), "ema_50": c / pta.ema(c, 50) - 1,
    }
    ready = np.arange(days.size) >= LOOKBACK_BARS - 1
    for name, ref in expected.items():
        np.testing.assert_allclose(got[name][ready], ref.to_numpy(dtype=float)[ready], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_hand_computed_features(market, raw):
    names, values = raw
    i = TICKERS.index("SPY")
    days = np.flatnonzero(quote_days(market)[:, i])
    c = market.close[days, i]
    lr = np.diff(np.log(c))
    k = 280  # the 281st quote day of SPY
    got = {n: values[days[k], i, names.index(n)] for n in names}
    assert got["ret_5"] == pytest.approx(c[k] / c[k - 5] - 1, rel=1e-12)
    assert got["logret_63"] == pytest.approx(np.log(c[k] / c[k - 63]), rel=1e-12)
    assert got["rvol_21"] == pytest.approx(np.std(lr[k - 21:k], ddof=1), rel=1e-9)
    assert got["sma_200"] == pytest.approx(c[k] / c[k - 199:k + 1].mean() - 1, rel=1e-9)
    assert got["drawdown_63"] == pytest.approx(c[k] / c[k - 62:k + 1].max() - 1, abs=1e-15)
    assert got["skew_21"] == pytest.approx(stats.skew(lr[k - 21:k], bias=False), rel=1e-6)
    assert got["kurt_63"] == pytest.approx(stats.kurtosis(lr[k - 63:k], bias=False), rel=1e-6)
    # correlation to BTC over SPY's last 60 quote intervals (BTC's return over the same intervals)
    btc = np.diff(np.log(market.close[days, TICKERS.index("BTC-USD")]))
    assert got["corr_ref_60"] == pytest.approx(np.corrcoef(lr[k - 60:k], btc[k - 60:k])[0, 1], rel=1e-9)
    # cross-sectional features of one day by hand
    t = days[k]
    lr21 = values[t, :, names.index("logret_21")]
    assert values[t, i, names.index("rel_ret_21")] == pytest.approx(lr21[i] - lr21.mean(), rel=1e-12)
    assert values[t, 0, names.index("mkt_disp_21")] == pytest.approx(lr21.std(), rel=1e-12)
    assert values[t, i, names.index("xs_rank_21")] == (stats.rankdata(lr21)[i] / lr21.size)


def test_flat_price_asset_takes_neutral_values():
    m = make_market(list_day={}, flat=("BIL",))
    names, values = compute_raw_features(m)
    i = TICKERS.index("BIL")
    ready = warmup_ready(m)[:, i]
    assert np.isfinite(values[ready, i]).all()
    assert np.all(values[ready, i, names.index("rsi_14")] == NEUTRAL["rsi_14"])
    assert np.all(values[ready, i, names.index("rvol_21")] == 0.0)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clip=st.floats(0.5, 20.0))
def test_normalised_features_are_bounded_and_zero_when_unlisted(market, clip):
    s = build_feature_store(market, "2020-12-15", clip=clip)
    assert s.features.dtype == np.float32 and np.isfinite(s.features).all()
    assert np.abs(s.features).max() <= np.float32(clip)
    assert np.all(s.features[~s.listed] == 0.0)


def test_content_hash_is_deterministic_and_sensitive(market, store):
    again = build_feature_store(market, "2020-12-15", clip=5.0)
    assert again.content_hash == store.content_hash == store_content_hash(store)
    f = store.features.copy()
    f[10, 0, 0] += 1e-3
    assert store_content_hash(dataclasses.replace(store, features=f)) != store.content_hash


def test_too_little_history_is_a_data_error():
    with pytest.raises(DataError, match="quote days"):
        build_feature_store(make_market(n_days=150, list_day={}), "2020-03-01")
    with pytest.raises(DataError, match="train_end"):
        build_feature_store(make_market(list_day={}), "2020-02-01")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "data/feature_engineering.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content, message", [
    ("data:\n  univers: {growth: [BTC-USD]}\n", "unknown key 'univers'"),
    ("data:\n  universe: {crypto: [BTC-USD]}\n", "unknown asset category 'crypto'"),
    ("data: [1, 2\n", "not valid YAML"),
])
def test_cli_bad_config_exits_2_with_one_sentence(tmp_path, content, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    r = _cli("--config", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_missing_config_and_csv_dir(tmp_path):
    r = _cli("--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--config", "configs/quickstart.yaml", "--source", "csv", "--data-dir", str(tmp_path),
             "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
