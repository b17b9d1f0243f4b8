"""Per-asset technical features, cross-asset regime features and the normalised ``FeatureStore``.

Pipeline: ``MarketData`` -> ``compute_raw_features`` (T, N, F float64, scale-free, causal) ->
``build_feature_store`` (warm-up rows dropped, statistics fitted on the training span, clipped) ->
``data.tf_pipeline.write_store`` (TFRecords + manifest).

Rules the code keeps:

- Every feature is scale-free (returns, ratios, oscillators, z-scores): no raw price or volume level.
- An asset's indicators are computed on its own quote days (``tradable``: listed and its market open),
  so a weekday ETF's 14-day RSI spans 14 trading days; the last value is carried over closed days.
- No look-ahead: feature ``f`` of day ``t`` uses OHLCV up to the close of ``t`` only (trailing
  windows, forward recursions, no centring, no backward fill, no full-sample statistics).
- Warm-up: an asset is *ready* once it has ``LOOKBACK_BARS`` quote days (the longest lookback). The
  store starts on the first day every asset listed at the start of the data is ready; an asset listed
  later counts as not listed (features exactly 0, not tradable) until it is ready itself.
- After warm-up a value that is undefined because the input is degenerate (a flat price makes RSI 0/0)
  takes the feature's neutral value (``NEUTRAL``: 50 for RSI, 0.5 for %B, 0 otherwise).

Command line::

    python data/feature_engineering.py --config CONFIG [--source yfinance|csv|synthetic] [--data-dir DIR] --out DIR
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

from data.config import DataConfig
from data.market import DataError, FeatureStore, MarketData, store_content_hash

#: The longest per-asset lookback in quote days (SMA/EMA 200, drawdown from the 200-day high).
LOOKBACK_BARS = 200
#: Rolling window (quote days) of the correlation features.
CORR_WINDOW = 60
RETURN_HORIZONS = (1, 3, 5, 10, 21, 63)
VOL_WINDOWS = (5, 10, 21, 63)
SMA_WINDOWS = (5, 10, 20, 50, 100, 200)
EMA_WINDOWS = (12, 26, 50, 200)
REFERENCE_TICKER = "BTC-USD"

#: Values of features whose neutral point is not 0 (used for degenerate inputs after warm-up).
NEUTRAL: dict[str, float] = {
    "rsi_7": 50.0, "rsi_14": 50.0, "rsi_28": 50.0, "stoch_k": 50.0, "stoch_d": 50.0,
    "willr_14": -50.0, "mfi_14": 50.0, "uo": 50.0, "bb_pctb_20": 0.5, "donchian_pos_20": 0.5,
    "xs_rank_21": 0.5,
}


def _col(frame: pd.DataFrame | None, prefix: str, like: pd.Series) -> pd.Series:
    """The column of a pandas-ta result whose name starts with ``prefix`` (names differ across versions).

    pandas-ta returns None when the series is shorter than the indicator's length: all NaN then.
    """
    if frame is None:
        return _nan_like(like)
    for name in frame.columns:
        if str(name).startswith(prefix):
            return frame[name]
    raise KeyError(f"pandas-ta result has no column starting with {prefix!r}: {list(frame.columns)}")


def _nan_like(like: pd.Series) -> pd.Series:
    return pd.Series(np.nan, index=like.index)


def _s(result: pd.Series | None, like: pd.Series) -> pd.Series:
    """A pandas-ta Series result, all NaN where pandas-ta gave None (too few rows)."""
    return _nan_like(like) if result is None else result


def asset_features(o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, v: pd.Series) -> dict[str, pd.Series]:
    """Single-asset features on the asset's own quote days.

    Inputs are aligned Series (n,) of one asset's quote days only: prices in USD, ``v`` in units
    traded. Returns ``{name: Series (n,)}``; NaN where the lookback is not yet filled. Returns are
    simple/log over k quote days, volatilities are daily (not annualised) std of log returns,
    ``*_ratio``/``sma_*``/``ema_*`` are ``x / y - 1``, oscillators keep pandas-ta's units (RSI 0..100).
    """
    from data.ta_compat import ta

    f: dict[str, pd.Series] = {}
    logc = np.log(c)
    lr = logc.diff()
    for k in RETURN_HORIZONS:
        f[f"ret_{k}"] = c / c.shift(k) - 1.0
        f[f"logret_{k}"] = logc - logc.shift(k)
    for k in VOL_WINDOWS:
        f[f"rvol_{k}"] = lr.rolling(k).std()
    f["rvol_ratio_10_63"] = f["rvol_10"] / f["rvol_63"]
    f["downvol_21"] = np.sqrt((lr.clip(upper=0.0) ** 2).rolling(21).mean())
    f["mom_126"] = logc - logc.shift(126)
    f["mom_126_21"] = logc.shift(21) - logc.shift(126)
    f["sharpe_21"] = lr.rolling(21).mean() / f["rvol_21"]
    f["sharpe_63"] = lr.rolling(63).mean() / f["rvol_63"]
    for n in (7, 14, 28):
        f[f"rsi_{n}"] = _s(ta.rsi(c, length=n), c)
    macd = ta.macd(c, fast=12, slow=26, signal=9)
    f["macd_line"] = _col(macd, "MACD_", c) / c
    f["macd_signal"] = _col(macd, "MACDs_", c) / c
    f["macd_hist"] = _col(macd, "MACDh_", c) / c
    for n in SMA_WINDOWS:
        f[f"sma_{n}"] = c / _s(ta.sma(c, length=n), c) - 1.0
    for n in EMA_WINDOWS:
        f[f"ema_{n}"] = c / _s(ta.ema(c, length=n), c) - 1.0
    f["sma_50_200"] = _s(ta.sma(c, length=50), c) / _s(ta.sma(c, length=200), c) - 1.0
    bb = ta.bbands(c, length=20, std=2.0)
    f["bb_pctb_20"] = _col(bb, "BBP_", c)
    f["bb_width_20"] = _col(bb, "BBB_", c) / 100.0
    f["atr_14"] = _s(ta.atr(h, lo, c, length=14), c) / c
    obv = _s(ta.obv(c, v), c)
    f["obv_z_63"] = (obv - obv.rolling(63).mean()) / obv.rolling(63).std()
    logv = np.log1p(v)
    for k in (21, 63):
        f[f"volume_z_{k}"] = (logv - logv.rolling(k).mean()) / logv.rolling(k).std()
    f["volume_ratio_5_63"] = np.log(v.rolling(5).mean() / v.rolling(63).mean())
    for k in (21, 63, 200):
        f[f"drawdown_{k}"] = c / c.rolling(k).max() - 1.0
    for k in (21, 63):
        f[f"skew_{k}"] = lr.rolling(k).skew()
        f[f"kurt_{k}"] = lr.rolling(k).kurt()
    stoch = ta.stoch(h, lo, c, k=14, d=3, smooth_k=3)
    f["stoch_k"] = _col(stoch, "STOCHk_", c)
    f["stoch_d"] = _col(stoch, "STOCHd_", c)
    f["willr_14"] = _s(ta.willr(h, lo, c, length=14), c)
    f["cci_20"] = _s(ta.cci(h, lo, c, length=20), c)
    adx = ta.adx(h, lo, c, length=14)
    f["adx_14"] = _col(adx, "ADX_", c)
    f["dmp_14"] = _col(adx, "DMP_", c)
    f["dmn_14"] = _col(adx, "DMN_", c)
    f["mfi_14"] = _s(ta.mfi(h, lo, c, v, length=14), c)
    f["aroon_osc_25"] = _col(ta.aroon(h, lo, length=25), "AROONOSC_", c)
    f["uo"] = _s(ta.uo(h, lo, c), c)
    f["cmf_20"] = _s(ta.cmf(h, lo, c, v, length=20), c)
    f["zscore_20"] = _s(ta.zscore(c, length=20), c)
    dc = ta.donchian(h, lo, lower_length=20, upper_length=20)
    low20, high20 = _col(dc, "DCL_", c), _col(dc, "DCU_", c)
    f["donchian_pos_20"] = (c - low20) / (high20 - low20)
    hl = (h - lo) / c
    f["hl_range"] = hl
    f["hl_range_21"] = hl.rolling(21).mean()
    f["gap"] = o / c.shift(1) - 1.0
    f["clv"] = ((c - lo) - (h - c)) / (h - lo)
    f["volvol_63"] = f["rvol_21"].rolling(63).std() / f["rvol_21"].rolling(63).mean()
    return {k: s.astype("float64") for k, s in f.items()}


ASSET_CROSS_FEATURES = (f"corr_ref_{CORR_WINDOW}", f"beta_ref_{CORR_WINDOW}", f"corr_avg_{CORR_WINDOW}",
                        "rel_ret_21", "xs_rank_21")
MARKET_FEATURES = (f"mkt_corr_avg_{CORR_WINDOW}", "mkt_disp_21", "mkt_ret_21", "mkt_vol_21",
                   "mkt_vol_regime_126", "mkt_volvol_63")


def reference_index(tickers: tuple[str, ...], categories: tuple[str, ...]) -> int:
    """Index of the correlation reference: BTC-USD, else the first growth asset, else asset 0."""
    if REFERENCE_TICKER in tickers:
        return tickers.index(REFERENCE_TICKER)
    return categories.index("growth") if "growth" in categories else 0


def quote_days(market: MarketData) -> np.ndarray:
    """(T, N) bool: the asset has a real quote that day (tradable with a finite close)."""
    return market.tradable & np.isfinite(market.close)


def warmup_ready(market: MarketData) -> np.ndarray:
    """(T, N) bool: the asset has at least ``LOOKBACK_BARS`` quote days up to and including day t."""
    return np.cumsum(quote_days(market), axis=0) >= LOOKBACK_BARS


def _carry(values: np.ndarray, days: np.ndarray, n_days: int) -> np.ndarray:
    """Values known on quote days ``days`` (sorted) carried to every calendar day; NaN before the first."""
    pos = np.searchsorted(days, np.arange(n_days), side="right") - 1
    out = np.where(pos >= 0, values[np.clip(pos, 0, None)], np.nan)
    return out


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over axis 1 ignoring NaN; NaN for rows with no finite value (no warnings)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _row_nanstd(x: np.ndarray) -> np.ndarray:
    """Population std over axis 1 ignoring NaN; NaN for rows with fewer than two finite values."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    mean = _row_nanmean(x)
    dev = np.where(ok, x - mean[:, None], 0.0)
    return np.where(n > 1, np.sqrt((dev**2).sum(axis=1) / np.maximum(n, 1)), np.nan)


def raw_features_unfilled(market: MarketData, progress: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
    """Every feature of every asset on the market's calendar, degenerate values left NaN.

    Returns ``(names, raw)`` with ``raw`` (T, N, F) float64: per-asset features (``asset_features``),
    per-asset cross-asset features (correlation and beta to the reference asset, average correlation
    to the other assets, 21-day log return relative to the cross-section and its percentile rank) and
    market features broadcast to every asset (average pairwise correlation, cross-sectional dispersion,
    return/volatility/vol-regime/vol-of-vol of an equal-weight index of the growth assets).

    NaN (never inf) where a value is undefined.
    """
    T, N = market.n_days, market.n_assets
    qd = quote_days(market)
    logc_all = np.log(market.close)
    ref = reference_index(market.tickers, market.categories)
    per_asset: list[dict[str, np.ndarray]] = []
    names: tuple[str, ...] = ()
    iterator = range(N)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="features", unit="asset", file=sys.stdout)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in iterator:
            days = np.flatnonzero(qd[:, i])
            if days.size == 0:
                per_asset.append({})
                continue
            cols = [pd.Series(a[days, i]) for a in (market.open, market.high, market.low, market.close,
                                                    market.volume)]
            feats = asset_features(*cols)
            lr = np.log(cols[3]).diff()
            others = pd.DataFrame(logc_all[days]).diff()  # interval log returns of every asset on i's days
            ref_lr = others[ref]
            feats[ASSET_CROSS_FEATURES[0]] = lr.rolling(CORR_WINDOW).corr(ref_lr)
            feats[ASSET_CROSS_FEATURES[1]] = lr.rolling(CORR_WINDOW).cov(ref_lr) / ref_lr.rolling(CORR_WINDOW).var()
            corr = others.drop(columns=i).rolling(CORR_WINDOW).corr(lr).to_numpy()
            feats[ASSET_CROSS_FEATURES[2]] = pd.Series(_row_nanmean(np.where(np.isfinite(corr), corr, np.nan)))
            names = names or tuple(k for k in feats if k not in ASSET_CROSS_FEATURES)
            per_asset.append({k: _carry(s.to_numpy(), days, T) for k, s in feats.items()})
        if not names:
            raise DataError("no asset has a single quote in the requested span")

        own = names
        names = own + ASSET_CROSS_FEATURES + MARKET_FEATURES
        raw = np.full((T, N, len(names)), np.nan)
        idx = {k: j for j, k in enumerate(names)}
        for i, feats in enumerate(per_asset):
            for k, arr in feats.items():
                raw[:, i, idx[k]] = arr

        lr21 = raw[:, :, idx["logret_21"]]
        raw[:, :, idx["rel_ret_21"]] = lr21 - _row_nanmean(lr21)[:, None]
        raw[:, :, idx["xs_rank_21"]] = pd.DataFrame(lr21).rank(axis=1, pct=True).to_numpy()

        growth = [i for i, cat in enumerate(market.categories) if cat == "growth"] or list(range(N))
        daily = np.diff(logc_all[:, growth], axis=0, prepend=np.nan)
        index_ret = pd.Series(_row_nanmean(daily))
        vol = index_ret.rolling(21).std()
        market_cols = {
            MARKET_FEATURES[0]: _row_nanmean(raw[:, :, idx[ASSET_CROSS_FEATURES[2]]]),
            "mkt_disp_21": _row_nanstd(lr21),
            "mkt_ret_21": index_ret.rolling(21).sum().to_numpy(),
            "mkt_vol_21": vol.to_numpy(),
            "mkt_vol_regime_126": (vol / vol.rolling(126).mean() - 1.0).to_numpy(),
            "mkt_volvol_63": (vol.rolling(63).std() / vol.rolling(63).mean()).to_numpy(),
        }
        for k, arr in market_cols.items():
            raw[:, :, idx[k]] = arr[:, None]

    raw[~np.isfinite(raw)] = np.nan
    return names, raw


def compute_raw_features(market: MarketData, progress: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
    """All features of every asset on the market's calendar, before normalisation.

    Returns ``(names, raw)`` with ``raw`` (T, N, F) float64 (see ``raw_features_unfilled``): NaN where
    the data do not define a value yet (before listing, inside a lookback); from the day an asset is
    ready (``warmup_ready``) every value is finite, degenerate ones (0/0 on a flat price, a reference
    asset not listed yet) taking the feature's ``NEUTRAL`` value.
    """
    names, raw = raw_features_unfilled(market, progress=progress)
    ready = warmup_ready(market)
    neutral = np.array([NEUTRAL.get(k, 0.0) for k in names])
    fill = ready[:, :, None] & np.isnan(raw)
    raw = np.where(fill, neutral[None, None, :], raw)
    return names, raw


def fit_normalisation(raw: np.ndarray, listed: np.ndarray, dates: np.ndarray,
                      train_end: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (F,) float64 over listed (day, asset) pairs with ``date <= train_end``.

    ``raw`` (T, N, F), ``listed`` (T, N) bool, ``dates`` (T,) datetime64[D]. A feature with zero spread
    gets std 1 so it normalises to 0 instead of dividing by zero.
    """
    sel = listed & (dates <= train_end)[:, None]
    if not sel.any():
        raise DataError(
            f"no listed asset-day on or before train_end {train_end} after the {LOOKBACK_BARS}-day warm-up; "
            "move train_end later or start the data earlier"
        )
    x = raw[sel]
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std


def normalise(raw: np.ndarray, listed: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float) -> np.ndarray:
    """(T, N, F) float32: ``clip((raw - mean) / std, -clip, clip)``, exactly 0 where not ``listed``."""
    z = np.clip((raw - mean) / std, -clip, clip)
    return np.where(listed[:, :, None], z, 0.0).astype(np.float32)


def store_returns(close: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """The store's returns (T, N): ``close[t+1] / close[t] - 1`` where the asset is listed at t (its close
    is NaN where not listed), else 0; the last row is 0 (its next close is not known)."""
    returns = np.zeros_like(close, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        returns[:-1] = np.where(listed[:-1], close[1:] / close[:-1] - 1.0, 0.0)
    return returns


def build_feature_store(market: MarketData, train_end: str | np.datetime64, clip: float = 10.0,
                        norm_stats: tuple[np.ndarray, np.ndarray] | None = None,
                        progress: bool = False) -> FeatureStore:
    """Raw features -> warm-up dropped -> normalised (fitted on ``date <= train_end``) ``FeatureStore``.

    ``norm_stats=(mean, std)`` (F,) applies given statistics instead of fitting them (e.g. the
    training store's, for new data). ``clip`` bounds the normalised values to [-clip, clip].
    """
    if not clip > 0:
        raise DataError(f"clip must be positive, got {clip}")
    train_end = np.datetime64(train_end, "D")
    names, raw = compute_raw_features(market, progress=progress)
    ready = warmup_ready(market)
    any_listed = np.flatnonzero(market.listed.any(axis=1))
    if any_listed.size == 0:
        raise DataError("no asset is listed in the requested span")
    initial = np.flatnonzero(market.listed[any_listed[0]])
    first_ready = []
    for i in initial:
        days = np.flatnonzero(ready[:, i])
        if days.size == 0 or days[0] >= market.n_days - 1:
            n = int(quote_days(market)[:, i].sum())
            raise DataError(
                f"{market.tickers[i]} has only {n} quote days between {market.dates[0]} and {market.dates[-1]}; "
                f"the features need {LOOKBACK_BARS} (the longest lookback) plus at least one more day"
            )
        first_ready.append(days[0])
    t0 = int(max(first_ready))
    sl = slice(t0, None)
    dates = market.dates[sl]
    listed = market.listed[sl] & ready[sl]
    tradable = market.tradable[sl] & listed
    raw = raw[sl]
    if norm_stats is None:
        mean, std = fit_normalisation(raw, listed, dates, train_end)
    else:
        mean, std = (np.asarray(a, dtype=np.float64) for a in norm_stats)
        if mean.shape != (len(names),) or std.shape != (len(names),):
            raise DataError(f"norm_stats must be two arrays of shape ({len(names)},)")
    features = normalise(raw, listed, mean, std, clip)
    close = np.where(listed, market.close[sl], np.nan)
    returns = store_returns(close, listed)
    volume = np.where(listed, np.nan_to_num(close * market.volume[sl]), 0.0)
    store = FeatureStore(
        dates=dates, tickers=market.tickers, categories=market.categories, feature_names=names,
        features=features, close=close, returns=returns, volume=volume, tradable=tradable, listed=listed,
        norm_mean=mean, norm_std=std, train_end=train_end, source=market.source,
    )
    return dataclasses.replace(store, content_hash=store_content_hash(store))


def load_feature_store(cfg: DataConfig, source: str | None = None, data_dir: str | None = None,
                       progress: bool = False) -> FeatureStore:
    """``data.data_loader.load_market`` followed by ``build_feature_store`` with the config's train_end/clip."""
    from data.data_loader import load_market

    market = load_market(cfg, source=source, data_dir=data_dir)
    return build_feature_store(market, cfg.train_end, clip=cfg.clip, progress=progress)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="feature_engineering.py",
        description="Build the normalised feature store (sharded GZIP TFRecords + manifest.json).",
    )
    parser.add_argument("--config", required=True, help="YAML config with a 'data' section")
    parser.add_argument("--source", choices=("yfinance", "csv", "synthetic"), default=None,
                        help="override data.source")
    parser.add_argument("--data-dir", default=None, help="folder of yfinance-layout CSVs for --source csv")
    parser.add_argument("--out", required=True, help="output folder of the feature store")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 with one sentence on stderr for bad input)."""
    from data.config import from_mapping, load_yaml

    args = _parse_args(argv)
    t_start = time.perf_counter()
    try:
        sections = load_yaml(args.config)
        if "data" not in sections:
            raise DataError(f"config file '{args.config}' has no 'data' section")
        cfg = from_mapping(DataConfig, sections["data"] or {}, "data")
        source = args.source or cfg.source
        print(f"loading market: source={source} {cfg.start}..{cfg.end}", flush=True)
        from data.data_loader import load_market

        market = load_market(cfg, source=args.source, data_dir=args.data_dir)
        print(f"computing features for {market.n_assets} assets x {market.n_days} days", flush=True)
        store = build_feature_store(market, cfg.train_end, clip=cfg.clip, progress=True)
        print(f"writing TFRecords to {args.out}", flush=True)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        from data.tf_pipeline import write_store

        files = write_store(store, args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write the feature store to '{args.out}' ({err.strerror or err})", file=sys.stderr)
        return 2
    label = "SYNTHETIC (simulated market, not real prices)" if store.synthetic else store.source
    n_listed_end = int(store.listed[-1].sum())
    print("feature store summary")
    print(f"  source          {label}")
    print(f"  dates           {store.dates[0]} .. {store.dates[-1]} ({store.n_days} days, "
          f"train_end {store.train_end}, warm-up {LOOKBACK_BARS} quote days dropped)")
    print(f"  assets          {store.n_assets} ({n_listed_end} listed on the last day): {', '.join(store.tickers)}")
    print(f"  features        {store.n_features} per asset")
    print(f"  dropped tickers {', '.join(market.dropped) if market.dropped else 'none'}")
    for note in market.notes:
        print(f"  note            {note}")
    print(f"  files           {len(files)} in {args.out}")
    print(f"  content hash    {store.content_hash[:16]}")
    print(f"  seconds         {time.perf_counter() - t_start:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
