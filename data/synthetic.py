"""Seeded multi-asset market simulator: the embedded default source (``--source synthetic``).

The market has one hidden state, a 2-state Markov regime (calm / stress), and two common factors:

- a crypto factor with GARCH(1,1) variance and unit-variance Student-t(6) shocks (fat tails,
  volatility clustering); growth cryptos load on it with a correlation that rises from 0.35 in calm
  to 0.85 in stress, and drift down together in stress (crypto crashes together);
- an equity factor (GARCH(1,1), Student-t shocks, correlated with the crypto factor, more so in
  stress) that drives equity ETFs, the volatility ETFs (short the equity shock, levered) and, with a
  negative sign in stress, bonds and gold (flight to quality).

Asset kinds and what they do:

- ``crypto``: factor + idiosyncratic Student-t noise, quoted 7 days a week;
- ``vol_etf`` (UVXY/VXX-like): short the equity shock with leverage; strong negative carry in calm
  (decays), a jump up in the first week of a stress episode (spikes), flat carry for the rest of it;
- ``futures_etf`` (BITO-like): BTC's path minus a roll drag of ~10%/yr plus small tracking noise;
- ``equity``, ``bond``, ``gold``: traditional ETFs with equity-like or bond-like volatility;
- ``cash`` (BIL/SHV/SHY): T-bill drift of ~4%/yr accrued every calendar day, tiny noise;
- ``stablecoin`` (USDT-USD, ...): a price pinned near 1.0 by a mean-reverting deviation.

Tickers not ending in ``-USD`` quote on weekdays only; on weekends their previous bar is carried over
(volume 0, not tradable). Known late assets start at their real listing date (prices NaN and
``listed`` False before). Unknown tickers get the default parameters of their category.
Every random draw comes from ``numpy.random.default_rng`` seeded by ``seed``: the market factors from
one stream and each asset's own noise from a stream keyed by its ticker, so adding an asset to a
universe does not change the paths of the others.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from data.market import DataError, MarketData
from data.universe import Universe, calendar_of

#: Real first-quote dates of assets that listed late (the simulator starts them there).
LISTING_DATES: dict[str, str] = {
    "SOL-USD": "2020-04-10",
    "DOT-USD": "2020-08-20",
    "AVAX-USD": "2020-07-13",
    "BITO": "2021-10-19",
    "MATIC-USD": "2019-04-28",
    "ATOM-USD": "2019-03-14",
    "ETHW-USD": "2022-09-15",
}

P_CALM_TO_STRESS = 1.0 / 150.0  # per day: a stress episode starts about every 5 months
P_STRESS_TO_CALM = 1.0 / 25.0  # per day: an episode lasts 25 days on average
STRESS_SHARE = P_CALM_TO_STRESS / (P_CALM_TO_STRESS + P_STRESS_TO_CALM)  # stationary share, 1/7
T_DOF = 6.0  # Student-t degrees of freedom of every shock (excess kurtosis 3)
GARCH_ALPHA, GARCH_BETA = 0.10, 0.86  # unit-variance GARCH(1,1): omega = 1 - alpha - beta
CRYPTO_CORR = (0.35, 0.85)  # (calm, stress) correlation of a crypto with the crypto factor's return
CRYPTO_VOL_MULT = (1.0, 1.6)  # (calm, stress) multiplier of crypto volatility
CRYPTO_STRESS_DRIFT = -0.015  # daily log drift of cryptos in stress (with beta 1)
EQUITY_VOL = 0.009  # daily equity-factor volatility in calm
EQUITY_VOL_MULT = (1.0, 2.2)
EQUITY_DRIFT = (0.0006, -0.0015)  # (calm, stress) daily log drift of the equity factor
CRYPTO_EQUITY_CORR = (0.2, 0.5)  # (calm, stress) correlation of crypto and equity shocks
VIX_BETA = 4.0  # daily log return of a 1x vol ETF per unit of (negative) equity shock
VOL_CARRY = (-0.006, 0.0)  # (calm, stress) daily log carry of a 1x vol ETF (contango / backwardation)
VOL_SPIKE, SPIKE_DAYS = 0.05, 7  # extra daily log return in the first SPIKE_DAYS days of a stress episode
SAFE_HAVEN_CORR = (-0.05, -0.35)  # (calm, stress) correlation of bonds/gold with the equity shock
SAFE_HAVEN_VOL_MULT = (1.0, 1.5)  # (calm, stress) multiplier of bond/gold volatility
SAFE_HAVEN_STRESS_DRIFT = 0.0004  # extra daily log drift of bonds/gold in stress
TBILL_RATE = 0.04  # annual, accrued per calendar day by cash legs
ROLL_DRAG = 0.10  # annual roll drag of a crypto futures ETF
STABLE_AR, STABLE_SD = 0.7, (0.0008, 0.003)  # stablecoin deviation from 1: AR(1) coefficient, sd
TRADING_DAYS = 252.0


@dataclass(frozen=True)
class AssetProfile:
    """Parameters of one simulated asset.

    ``vol``: daily log-return volatility in calm (idiosyncratic part for ``equity``, leverage-free
    noise for ``vol_etf``/``futures_etf``). ``drift``: annual log drift in calm (unused by ``equity`` and
    ``vol_etf``, which take the equity factor's drift or the vol carry). ``beta``: loading on
    its factor (crypto factor, equity factor, or leverage of a vol ETF); for cryptos ``drift`` is the
    long-run annual log drift with stress episodes included. ``price0``: price at listing
    (USD). ``dollar_volume``: typical daily traded value (USD).
    """

    kind: str
    vol: float
    drift: float
    beta: float
    price0: float
    dollar_volume: float


PROFILES: dict[str, AssetProfile] = {
    "BTC-USD": AssetProfile("crypto", 0.035, 0.40, 1.0, 10_000.0, 2e10),
    "ETH-USD": AssetProfile("crypto", 0.045, 0.40, 1.1, 500.0, 1e10),
    "SOL-USD": AssetProfile("crypto", 0.060, 0.50, 1.3, 1.0, 1e9),
    "ADA-USD": AssetProfile("crypto", 0.050, 0.20, 1.2, 0.05, 5e8),
    "DOT-USD": AssetProfile("crypto", 0.055, 0.10, 1.2, 3.0, 5e8),
    "AVAX-USD": AssetProfile("crypto", 0.060, 0.30, 1.3, 5.0, 5e8),
    "MATIC-USD": AssetProfile("crypto", 0.060, 0.30, 1.3, 0.01, 3e8),
    "LINK-USD": AssetProfile("crypto", 0.055, 0.30, 1.2, 0.5, 5e8),
    "ATOM-USD": AssetProfile("crypto", 0.055, 0.10, 1.2, 5.0, 2e8),
    "XRP-USD": AssetProfile("crypto", 0.050, 0.10, 1.1, 0.3, 1e9),
    "LTC-USD": AssetProfile("crypto", 0.045, 0.05, 1.1, 50.0, 5e8),
    "DOGE-USD": AssetProfile("crypto", 0.060, 0.20, 1.2, 0.002, 3e8),
    "ETHW-USD": AssetProfile("crypto", 0.080, -0.50, 1.2, 30.0, 5e7),
    "BITO": AssetProfile("futures_etf", 0.002, -ROLL_DRAG, 1.0, 20.0, 5e8),
    "UVXY": AssetProfile("vol_etf", 0.010, 0.0, 1.5, 1_000.0, 1e9),
    "VXX": AssetProfile("vol_etf", 0.008, 0.0, 1.0, 100.0, 5e8),
    "SPY": AssetProfile("equity", 0.002, 0.0, 1.0, 300.0, 3e10),
    "QQQ": AssetProfile("equity", 0.004, 0.0, 1.2, 250.0, 1.5e10),
    "GLD": AssetProfile("gold", 0.009, 0.05, 1.0, 150.0, 1.5e9),
    "BND": AssetProfile("bond", 0.003, 0.02, 1.0, 80.0, 5e8),
    "IEF": AssetProfile("bond", 0.004, 0.02, 1.0, 110.0, 1e9),
    "TLT": AssetProfile("bond", 0.009, 0.02, 1.0, 140.0, 2e9),
    "BIL": AssetProfile("cash", 0.00005, TBILL_RATE, 0.0, 91.5, 3e8),
    "SHV": AssetProfile("cash", 0.0001, TBILL_RATE, 0.0, 110.0, 3e8),
    "SHY": AssetProfile("cash", 0.0005, 0.035, 0.0, 82.0, 3e8),
    "USDT-USD": AssetProfile("stablecoin", 0.0, 0.0, 0.0, 1.0, 3e10),
    "USDC-USD": AssetProfile("stablecoin", 0.0, 0.0, 0.0, 1.0, 5e9),
}


def profile_of(ticker: str, category: str) -> AssetProfile:
    """The ticker's known profile, or the default of its category (growth/hedge/traditional/stable)."""
    if ticker in PROFILES:
        return PROFILES[ticker]
    is_coin = calendar_of(ticker) == "7d"
    if category == "growth" or (category == "hedge" and is_coin):
        return AssetProfile("crypto", 0.055, 0.30, 1.2, 10.0, 2e8)
    if category == "hedge":
        return AssetProfile("vol_etf", 0.008, 0.0, 1.0, 100.0, 3e8)
    if category == "traditional":
        return AssetProfile("equity", 0.006, 0.0, 1.0, 100.0, 1e9)
    if category == "stable":
        if is_coin:
            return AssetProfile("stablecoin", 0.0, 0.0, 0.0, 1.0, 1e9)
        return AssetProfile("cash", 0.0001, TBILL_RATE, 0.0, 100.0, 2e8)
    raise DataError(f"ticker '{ticker}' has unknown category '{category}'")


def _student_t(rng: np.random.Generator, size) -> np.ndarray:
    """Student-t(T_DOF) draws rescaled to unit variance."""
    return rng.standard_t(T_DOF, size) * np.sqrt((T_DOF - 2.0) / T_DOF)


def _ticker_rng(seed: int, ticker: str) -> np.random.Generator:
    return np.random.default_rng([seed, 1, zlib.crc32(ticker.encode())])


def calendar(start: str, end: str) -> np.ndarray:
    """Every calendar day from ``start`` to ``end`` inclusive, ``datetime64[D]`` (T,)."""
    try:
        lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    except ValueError:
        raise DataError(f"start '{start}' or end '{end}' is not an ISO date (YYYY-MM-DD)") from None
    if hi < lo:
        raise DataError(f"end {end} is before start {start}")
    return np.arange(lo, hi + 1, dtype="datetime64[D]")


def regime_path(n_days: int, seed: int) -> np.ndarray:
    """The calm (False) / stress (True) regime of each day, (n_days,) bool; starts calm.

    It is the exact regime path ``generate_market`` uses for the same ``seed`` and span length.
    """
    rng = np.random.default_rng([seed, 0])
    u = rng.random(n_days)
    stress = np.zeros(n_days, dtype=bool)
    for t in range(1, n_days):
        p = P_STRESS_TO_CALM if stress[t - 1] else P_CALM_TO_STRESS
        stress[t] = (not stress[t - 1]) if u[t] < p else stress[t - 1]
    return stress


def _garch_unit(shocks: np.ndarray) -> np.ndarray:
    """Conditional variance h (T,) of a unit-variance GARCH(1,1) driven by standardised ``shocks``."""
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    h = np.empty_like(shocks)
    h[0] = 1.0
    for t in range(1, len(shocks)):
        h[t] = omega + GARCH_ALPHA * h[t - 1] * shocks[t - 1] ** 2 + GARCH_BETA * h[t - 1]
    return h


@dataclass(frozen=True)
class _Factors:
    stress: np.ndarray  # (T,) bool
    stress_age: np.ndarray  # (T,) int: day number inside the current stress episode (1, 2, ...), 0 in calm
    crypto: np.ndarray  # (T,) crypto factor shock, variance h_crypto
    h_crypto: np.ndarray  # (T,)
    equity: np.ndarray  # (T,) equity factor shock with unit unconditional variance
    h_equity: np.ndarray


def _factors(n_days: int, seed: int) -> _Factors:
    stress = regime_path(n_days, seed)
    rng = np.random.default_rng([seed, 2])
    zc = _student_t(rng, n_days)
    zo = _student_t(rng, n_days)
    s = stress.astype(int)
    rho = np.asarray(CRYPTO_EQUITY_CORR)[s]
    ze = rho * zc + np.sqrt(1.0 - rho**2) * zo
    hc, he = _garch_unit(zc), _garch_unit(ze)
    age = np.zeros(n_days, dtype=np.int64)
    for t in range(n_days):
        age[t] = (age[t - 1] + 1 if t else 1) if stress[t] else 0
    return _Factors(stress, age, np.sqrt(hc) * zc, hc, np.sqrt(he) * ze, he)


def _log_returns(p: AssetProfile, f: _Factors, rng: np.random.Generator, open_days: np.ndarray,
                 btc: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Latent daily log returns (T,) of one asset on every calendar day, and its conditional sd (T,).

    On days its market is closed (``open_days`` False) an asset does not move, except the cash accrual
    and the futures ETF's tracking of BTC, which accumulate and show up in the next open day's return.
    """
    n = len(f.stress)
    s = f.stress.astype(int)
    eps = _student_t(rng, n)
    r, sd = _kind_returns(p, f, s, eps, btc, open_days)
    if p.kind not in ("cash", "futures_etf"):
        r = np.where(open_days, r, 0.0)
    return r, sd


def _kind_returns(p: AssetProfile, f: _Factors, s: np.ndarray, eps: np.ndarray, btc: np.ndarray | None,
                  open_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(s)
    if p.kind == "crypto":
        rho = np.asarray(CRYPTO_CORR)[s]
        sd = p.vol * np.asarray(CRYPTO_VOL_MULT)[s]
        # Calm drift compensates the expected stress drawdowns, so ``p.drift`` is the long-run drift.
        calm_drift = p.drift / 365.0 - STRESS_SHARE / (1.0 - STRESS_SHARE) * CRYPTO_STRESS_DRIFT * p.beta
        drift = np.where(f.stress, CRYPTO_STRESS_DRIFT * p.beta, calm_drift)
        r = drift + sd * (np.sqrt(rho) * f.crypto + np.sqrt(1.0 - rho) * np.sqrt(f.h_crypto) * eps)
        return r, sd * np.sqrt(f.h_crypto)
    eq_sd = EQUITY_VOL * np.asarray(EQUITY_VOL_MULT)[s]
    eq_shock = eq_sd * f.equity
    if p.kind == "equity":
        r = p.beta * (np.asarray(EQUITY_DRIFT)[s] + eq_shock) + p.vol * eps
        return r, np.sqrt((p.beta * eq_sd) ** 2 * f.h_equity + p.vol**2)
    if p.kind == "vol_etf":
        spike = VOL_SPIKE * ((f.stress_age >= 1) & (f.stress_age <= SPIKE_DAYS))
        r = p.beta * (np.asarray(VOL_CARRY)[s] + spike - VIX_BETA * eq_shock + p.vol * eps)
        return r, p.beta * np.sqrt((VIX_BETA * eq_sd) ** 2 * f.h_equity + p.vol**2)
    if p.kind in ("bond", "gold"):
        c = np.asarray(SAFE_HAVEN_CORR)[s]
        z = c * f.equity / np.sqrt(f.h_equity) + np.sqrt(1.0 - c**2) * eps
        sd = p.vol * np.asarray(SAFE_HAVEN_VOL_MULT)[s] * np.sqrt(f.h_equity)  # clusters with equities
        r = p.drift / TRADING_DAYS + SAFE_HAVEN_STRESS_DRIFT * f.stress + sd * z
        return r, sd
    if p.kind == "futures_etf":
        assert btc is not None
        return btc + p.drift / 365.0 + p.vol * eps * open_days, np.full(n, PROFILES["BTC-USD"].vol)
    if p.kind == "cash":
        return p.drift / 365.0 + p.vol * eps * open_days, np.full(n, max(p.vol, 1e-5))
    if p.kind == "stablecoin":
        sd = np.asarray(STABLE_SD)[s]
        dev = np.zeros(n)
        for t in range(1, n):
            dev[t] = STABLE_AR * dev[t - 1] + sd[t] * eps[t]
        level = np.log1p(np.clip(dev, -0.05, 0.05))
        return np.diff(level, prepend=0.0), sd
    raise DataError(f"unknown simulated asset kind '{p.kind}'")


def generate_market(universe: Universe, start: str, end: str, seed: int = 0) -> MarketData:
    """Simulate daily OHLCV for every asset of ``universe`` on the 7-day calendar ``[start, end]``.

    Returns ``MarketData`` with ``source="synthetic"``: prices in USD (NaN before an asset's
    listing), ``volume`` in units traded (0 on closed days), ``listed``/``tradable`` masks (T, N).
    Same ``seed`` -> identical arrays; a different seed -> a different market.
    """
    dates = calendar(start, end)
    n_days, n_assets = len(dates), len(universe)
    f = _factors(n_days, seed)
    weekday = (dates.astype("datetime64[D]").view("int64") + 3) % 7 < 5  # 1970-01-01 was a Thursday
    btc_ref = None
    if any(profile_of(a.ticker, a.category).kind == "futures_etf" for a in universe.assets):
        every_day = np.ones(n_days, dtype=bool)
        btc_ref, _ = _log_returns(PROFILES["BTC-USD"], f, _ticker_rng(seed, "BTC-USD"), every_day, None)

    shape = (n_days, n_assets)
    o, h, lo, c = (np.full(shape, np.nan) for _ in range(4))
    v = np.zeros(shape)
    listed = np.zeros(shape, dtype=bool)
    tradable = np.zeros(shape, dtype=bool)
    for i, asset in enumerate(universe.assets):
        p = profile_of(asset.ticker, asset.category)
        rng = _ticker_rng(seed, asset.ticker)
        open_days = np.ones(n_days, dtype=bool) if asset.calendar == "7d" else weekday
        r, sd = _log_returns(p, f, rng, open_days, btc_ref)
        listing = np.datetime64(LISTING_DATES.get(asset.ticker, str(dates[0])), "D")
        first = int(np.searchsorted(dates, listing))
        quoted = open_days & (np.arange(n_days) >= first)
        if not quoted.any():
            continue
        t0 = int(np.argmax(quoted))
        path = np.cumsum(r)
        close_all = p.price0 * np.exp(path - path[t0])
        # The close of a quoted day; closed days keep the previous quoted close.
        last_q = np.maximum.accumulate(np.where(quoted, np.arange(n_days), -1))
        live = last_q >= 0
        close = np.full(n_days, np.nan)
        close[live] = close_all[last_q[live]]
        prev_close = np.full(n_days, np.nan)
        prev_close[t0 + 1:] = close[t0:-1]
        prev_close[t0] = close[t0] * np.exp(-r[t0])
        noise = rng.standard_normal((4, n_days))
        op = prev_close * np.exp(0.2 * sd * noise[0])
        hi = np.maximum(op, close) * np.exp(np.abs(0.6 * sd * noise[1]))
        low = np.minimum(op, close) * np.exp(-np.abs(0.6 * sd * noise[2]))
        day_ret = np.abs(np.log(close / prev_close))
        dollars = p.dollar_volume * np.exp(0.3 * f.stress + 8.0 * np.minimum(day_ret, 0.5)
                                           + 0.25 * noise[3])
        vol_units = dollars / close
        closed = live & ~quoted
        op[closed] = hi[closed] = low[closed] = close[closed]
        vol_units[closed] = 0.0
        o[live, i], h[live, i], lo[live, i] = op[live], hi[live], low[live]
        c[live, i], v[live, i] = close[live], vol_units[live]
        listed[:, i] = live
        tradable[:, i] = quoted
    return MarketData(
        dates=dates, tickers=universe.tickers, categories=universe.categories,
        open=o, high=h, low=lo, close=c, volume=v, listed=listed, tradable=tradable,
        source="synthetic",
    )
