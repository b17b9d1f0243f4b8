"""The server's market state: the daily bars so far and the features of the latest day.

A live trading loop posts one day of bars at a time; the server keeps the history and turns it into
the policy's observation window with exactly the code the backtester uses:
``data.data_loader.align`` (7-day calendar, closed days carried over) then
``data.feature_engineering.build_feature_store`` with the export manifest's normalisation statistics.
There is one feature path, not two.

Cost: the features of the new day need the whole history (the 200-day EMAs and the OBV have
unbounded memory, so a tail would change the last row), so ``append`` recomputes the store over the
full history (~0.1 s on the 4-asset test market, ~1-3 s on the 21-asset real market since 2018; see
``benchmarks/bench_serving.py``). Allocations never pay it: they read the ``MarketSnapshot`` that
``append`` published, and bars arrive once a day.

``MarketSnapshot`` shapes (W window days, N assets, F features, K = ``tail`` accounting days):
``window`` (W, N, F) float32; ``tradable``/``listed`` (N,) bool; ``tail_*`` (K, N) accounting rows
(close, dollar volume, tradable, listed) that a paper trader needs to charge costs as the backtest does.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from data.config import DataConfig
from data.market import DataError, FeatureStore
from data.universe import calendar_of

BAR_FIELDS = ("open", "high", "low", "close", "volume")


class BarsError(DataError):
    """Rejected bars; ``status`` is the HTTP status (409 conflict, 422 invalid)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MarketSnapshot:
    """Everything an allocation reads, published atomically after each accepted day (see module doc)."""

    date: np.datetime64
    tickers: tuple[str, ...]
    window: np.ndarray
    tradable: np.ndarray
    listed: np.ndarray
    last_returns: np.ndarray
    tail_dates: np.ndarray
    tail_close: np.ndarray
    tail_dollar_volume: np.ndarray
    tail_tradable: np.ndarray
    tail_listed: np.ndarray
    seq: int

    def rows(self, days: int) -> dict[str, Any]:
        """The last ``days`` accounting rows as JSON lists (NaN close -> null)."""
        k = max(1, min(int(days), self.tail_dates.shape[0]))
        close = self.tail_close[-k:]
        return {"dates": [str(d) for d in self.tail_dates[-k:]],
                "close": [[None if not math.isfinite(x) else float(x) for x in row] for row in close],
                "dollar_volume": self.tail_dollar_volume[-k:].tolist(),
                "tradable": self.tail_tradable[-k:].tolist(), "listed": self.tail_listed[-k:].tolist()}


class MarketState:
    """Per-ticker daily bars (quote days only, as in the CSVs) and the latest ``MarketSnapshot``.

    ``data_cfg``: the export's data section (universe, start, clip); ``tickers``/``norm`` from the
    manifest; ``window`` the policy's observation window; ``tail`` accounting rows kept in snapshots.
    """

    def __init__(self, frames: dict[str, pd.DataFrame], data_cfg: DataConfig, tickers: tuple[str, ...],
                 norm_mean: np.ndarray, norm_std: np.ndarray, clip: float, feature_names: tuple[str, ...],
                 window: int, source: str, tail: int = 64, accounting: dict | None = None) -> None:
        self.accounting = accounting or {}  # the export's env and cost settings, for paper traders
        self.data_cfg, self.tickers, self.window, self.tail = data_cfg, tuple(tickers), int(window), int(tail)
        self.norm = (np.asarray(norm_mean, np.float64), np.asarray(norm_std, np.float64))
        self.clip, self.feature_names, self.source = float(clip), tuple(feature_names), source
        universe = data_cfg.build_universe()
        if tuple(universe.tickers) != self.tickers:
            raise DataError("the export's data config and manifest list different tickers; re-export the run")
        self.universe = universe
        self.categories = tuple(universe.categories)
        missing = [t for t in self.tickers if t not in frames]
        if missing:
            raise DataError(f"the history has no bars for {missing[0]}; every ticker of the model needs history")
        self._lock = threading.Lock()  # serialises writers; readers take the published snapshot
        self.frames = {t: frames[t] for t in self.tickers}
        self.snapshot = self._build(self.frames, seq=0)

    @classmethod
    def from_source(cls, data_cfg: DataConfig, manifest: dict, window: int, source: str,
                    data_dir: str | None, end: str | None = None, tail: int = 64,
                    accounting: dict | None = None) -> MarketState:
        """Warm up from ``source`` (``csv`` with ``data_dir``, or ``synthetic``) up to ``end`` (default:
        the last date in the history)."""
        from data.data_loader import _frames_from_csv, _market_to_frames, calendar
        from data.synthetic import generate_market

        universe = data_cfg.build_universe()
        if source == "csv":
            frames, missing = _frames_from_csv(universe, data_dir or "")
            if missing:
                raise DataError(f"history: {next(iter(missing.values()))}")
        elif source == "synthetic":
            calendar(data_cfg.start, data_cfg.end)
            frames = _market_to_frames(generate_market(universe, data_cfg.start, data_cfg.end, data_cfg.seed))
        else:
            raise DataError(f"history source must be csv or synthetic, got '{source}'")
        if end is not None:
            try:
                cut = np.datetime64(end, "D")
            except ValueError:
                raise DataError(f"--history-end must be an ISO date like 2023-06-30, got '{end}'") from None
            frames = {t: f.loc[f.index.to_numpy().astype("datetime64[D]") <= cut] for t, f in frames.items()}
        norm = manifest["norm"]
        return cls(frames, data_cfg, tuple(manifest["tickers"]), np.asarray(norm["mean"]), np.asarray(norm["std"]),
                   float(manifest.get("clip", data_cfg.clip)), tuple(manifest["feature_names"]), window, source,
                   tail, accounting)

    # -- the one feature path -------------------------------------------------------------------------
    def _store(self, frames: dict[str, pd.DataFrame]) -> FeatureStore:
        """``align`` + ``build_feature_store`` over the whole history (the backtester's ``build_store``)."""
        from data.data_loader import align
        from data.feature_engineering import build_feature_store

        last = max(np.datetime64(f.index[-1], "D") for f in frames.values() if len(f))
        market = align(frames, self.universe, self.data_cfg.start, str(last), self.source,
                       self.data_cfg.min_history_days, verbose=False)
        if tuple(market.tickers) != self.tickers:
            dropped = ", ".join(market.dropped) or "some tickers"
            raise DataError(f"the history up to {last} drops {dropped} (too few quotes); serve from a later date")
        store = build_feature_store(market, self.data_cfg.train_end, clip=self.clip, norm_stats=self.norm)
        if tuple(store.feature_names) != self.feature_names:
            raise DataError("the feature pipeline's names differ from the manifest's; the export is from "
                            "an incompatible version")
        return store

    def _build(self, frames: dict[str, pd.DataFrame], seq: int) -> MarketSnapshot:
        store = self._store(frames)
        w, k = self.window, min(self.tail, store.n_days)
        if store.n_days < w:
            raise DataError(f"the history gives {store.n_days} days after the features' warm-up but the "
                            f"policy's window needs {w}; start the history earlier")
        close = store.close
        prev = close[-2] if store.n_days > 1 else close[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            last_ret = np.where(store.listed[-1] & np.isfinite(prev), close[-1] / prev - 1.0, 0.0)
        return MarketSnapshot(
            date=np.datetime64(store.dates[-1], "D"), tickers=self.tickers,
            window=np.ascontiguousarray(store.features[-w:]), tradable=store.tradable[-1].copy(),
            listed=store.listed[-1].copy(), last_returns=np.nan_to_num(last_ret),
            tail_dates=store.dates[-k:].astype("datetime64[D]"), tail_close=close[-k:].copy(),
            tail_dollar_volume=store.volume[-k:].copy(), tail_tradable=store.tradable[-k:].copy(),
            tail_listed=store.listed[-k:].copy(), seq=seq)

    # -- one new day ----------------------------------------------------------------------------------
    def append(self, body: Any) -> bool:
        """Add one day's bars ``{"date": ISO, "bars": {ticker: {open, high, low, close, volume}}}``.

        Returns True if the day was added, False if it repeats the latest day with identical bars.
        Raises ``BarsError`` (state unchanged) on a date that is not the next calendar day, an unknown
        ticker, a missing crypto (7-day asset), a non-number, NaN, a non-positive price, High < Low,
        a negative volume, or the latest day again with different bars (409).
        """
        date, bars = self._parse(body)
        with self._lock:
            snap = self.snapshot
            if date == snap.date:
                if all(self._same_bar(t, date, bars.get(t)) for t in self.tickers):
                    return False
                raise BarsError(409, f"bars for {date} were already accepted with different values")
            if date != snap.date + np.timedelta64(1, "D"):
                raise BarsError(422, f"bars must be for {snap.date + np.timedelta64(1, 'D')}, the day after the "
                                     f"latest day {snap.date}; got {date}")
            frames = dict(self.frames)
            for t, bar in bars.items():
                frames[t] = self._with_bar(t, frames[t], date, bar)
            try:
                new = self._build(frames, snap.seq + 1)
            except DataError as err:
                raise BarsError(422, str(err)) from None
            self.frames, self.snapshot = frames, new
            return True

    def _parse(self, body: Any) -> tuple[np.datetime64, dict[str, tuple[float, ...]]]:
        if not isinstance(body, dict) or set(body) != {"date", "bars"}:
            raise BarsError(422, "bars must be {\"date\": ISO date, \"bars\": {ticker: {open, high, low, "
                                 "close, volume}}}")
        raw_date = body["date"]
        try:
            if not isinstance(raw_date, str) or len(raw_date) != 10:
                raise ValueError
            date = np.datetime64(raw_date, "D")
        except ValueError:
            raise BarsError(422, f"date must be an ISO date like 2024-01-02, got {str(raw_date)[:40]!r}") from None
        bars = body["bars"]
        if not isinstance(bars, dict) or not bars:
            raise BarsError(422, "bars must map each ticker quoted that day to its open, high, low, close, volume")
        unknown = sorted(set(bars) - set(self.tickers))
        if unknown:
            raise BarsError(422, f"unknown ticker '{str(unknown[0])[:40]}'; this model trades {', '.join(self.tickers)}")
        crypto = [t for t in self.tickers if calendar_of(t) == "7d" and t not in bars]
        if crypto:
            raise BarsError(422, f"bars for {date} lack {crypto[0]}, which trades every day")
        out = {}
        for t, bar in bars.items():
            if not isinstance(bar, dict) or set(bar) != set(BAR_FIELDS):
                raise BarsError(422, f"the bar of {t} must have exactly the fields {', '.join(BAR_FIELDS)}")
            vals = []
            for k in BAR_FIELDS:
                v = bar[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise BarsError(422, f"{k} of {t} must be a number, got {type(v).__name__}")
                v = float(v) if abs(v) < 1e300 else math.inf
                if not math.isfinite(v):
                    raise BarsError(422, f"{k} of {t} must be finite")
                vals.append(v)
            o, h, lo, c, vol = vals
            if min(o, h, lo, c) <= 0:
                raise BarsError(422, f"prices of {t} must be positive")
            if h < lo:
                raise BarsError(422, f"the high of {t} ({h:g}) is below its low ({lo:g})")
            if vol < 0:
                raise BarsError(422, f"the volume of {t} must not be negative")
            out[t] = (o, h, lo, c, vol)
        return date, out

    def _same_bar(self, ticker: str, date: np.datetime64, bar: tuple[float, ...] | None) -> bool:
        f = self.frames[ticker]
        has = len(f) > 0 and np.datetime64(f.index[-1], "D") == date
        if bar is None or not has:
            return bar is None and not has
        from data.data_loader import validate_ohlcv

        row = validate_ohlcv(self._frame(date, bar), f"bar of {ticker}")
        return bool(np.allclose(row.to_numpy()[0], f.iloc[-1].to_numpy(), rtol=1e-12, atol=0.0))

    @staticmethod
    def _frame(date: np.datetime64, bar: tuple[float, ...]) -> pd.DataFrame:
        return pd.DataFrame({"Date": [str(date)], "Open": [bar[0]], "High": [bar[1]], "Low": [bar[2]],
                             "Close": [bar[3]], "Volume": [bar[4]]})

    def _with_bar(self, ticker: str, frame: pd.DataFrame, date: np.datetime64, bar: tuple[float, ...]) -> pd.DataFrame:
        """``frame`` plus the new row, validated exactly as a CSV row (jumps, High/Low widening)."""
        from data.data_loader import validate_ohlcv

        new = validate_ohlcv(self._frame(date, bar), f"bar of {ticker}")
        both = pd.concat([frame.iloc[-1:], new]) if len(frame) else new
        try:
            validate_ohlcv(both.reset_index().rename(columns={"index": "Date"}), f"bars of {ticker}")
        except DataError as err:
            raise BarsError(422, str(err)) from None
        return pd.concat([frame, new])
