"""Load daily OHLCV from a source, validate it and align it on the 7-day (crypto) calendar.

Sources: ``synthetic`` (``data.synthetic``, the default that runs anywhere), ``csv`` (a folder of
yfinance-layout files ``DIR/TICKER.csv`` with columns Date,Open,High,Low,Close,Volume and optionally
Adj Close) and ``yfinance`` (downloaded and cached by ``data.yahoo``).

Every source ends in the same two steps:

1. ``validate_ohlcv`` turns one ticker's raw table into a clean frame or raises ``DataError`` with one
   sentence naming the file/ticker and the offending date;
2. ``align`` puts all tickers on the daily calendar: an asset's price is carried over on days it has
   no quote (weekends and holidays for ETFs: zero return, volume 0, not tradable), prices before its
   first quote are NaN (not listed). Tickers the source lacks and assets with fewer than
   ``cfg.min_history_days`` quotes in the span are dropped and reported, as long as two assets remain.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data.config import DataConfig
from data.market import DataError, MarketData
from data.synthetic import calendar, generate_market
from data.universe import Universe, calendar_of

SOURCES: tuple[str, ...] = ("synthetic", "csv", "yfinance")
PRICE_COLUMNS: tuple[str, ...] = ("Open", "High", "Low", "Close")
REQUIRED_COLUMNS: tuple[str, ...] = ("Date", *PRICE_COLUMNS, "Volume")
MAX_DAILY_JUMP = 20.0  # a close-to-close ratio above this (or below its inverse) is a data error


def _day(ts) -> str:
    return str(np.datetime64(ts, "D"))


def validate_ohlcv(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check one ticker's raw table and return it clean.

    ``raw`` has string or numeric columns Date, Open, High, Low, Close, Volume (optionally Adj Close,
    whose ratio to Close then adjusts Open/High/Low/Close). ``name`` names the origin in messages,
    e.g. ``"file 'DIR/BTC-USD.csv'"``. Returns a float64 frame indexed by ``datetime64[D]`` dates with
    columns Open, High, Low, Close (USD, adjusted) and Volume (units); High/Low are widened to
    contain Open and Close. Raises ``DataError`` on: no rows, missing columns, unparsable dates,
    NaN/non-numeric or non-positive prices, negative volume, High < Low, duplicate or unsorted
    dates, and one-day close ratios beyond ``MAX_DAILY_JUMP``.
    """
    if raw.shape[0] == 0:
        raise DataError(f"{name} has no rows of data")
    columns = {str(c).strip(): c for c in raw.columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{name} lacks the column(s) {', '.join(missing)}; expected {','.join(REQUIRED_COLUMNS)}")
    text = raw[columns["Date"]].astype(str).str.strip()
    dates = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{name} has an unparsable date '{text.iloc[k]}' on data row {k + 1}")
    day = dates.to_numpy().astype("datetime64[D]")
    dup = pd.Series(day).duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{name} has the date {_day(day[int(np.argmax(dup))])} twice")
    back = np.diff(day.view("int64")) < 0
    if back.any():
        k = int(np.argmax(back)) + 1
        raise DataError(f"{name} has unsorted dates: {_day(day[k])} comes after {_day(day[k - 1])}")
    values = {}
    for col in (*PRICE_COLUMNS, "Volume", "Adj Close"):
        if col not in columns:
            continue
        x = pd.to_numeric(raw[columns[col]], errors="coerce").to_numpy(dtype=np.float64)
        nan = ~np.isfinite(x)
        if nan.any():
            k = int(np.argmax(nan))
            raise DataError(f"{name} has a missing or non-numeric {col} on {_day(day[k])}")
        limit = 0.0 if col == "Volume" else None
        nonpos = x < 0 if limit is not None else x <= 0
        if nonpos.any():
            k = int(np.argmax(nonpos))
            what = "a negative" if col == "Volume" else "a zero or negative"
            raise DataError(f"{name} has {what} {col} ({x[k]:g}) on {_day(day[k])}")
        values[col] = x
    inverted = values["High"] < values["Low"]
    if inverted.any():
        k = int(np.argmax(inverted))
        raise DataError(
            f"{name} has High ({values['High'][k]:g}) below Low ({values['Low'][k]:g}) on {_day(day[k])}"
        )
    if "Adj Close" in values:
        factor = values.pop("Adj Close") / values["Close"]
        for col in PRICE_COLUMNS:
            values[col] = values[col] * factor
    ratio = values["Close"][1:] / values["Close"][:-1]
    jump = (ratio > MAX_DAILY_JUMP) | (ratio < 1.0 / MAX_DAILY_JUMP)
    if jump.any():
        k = int(np.argmax(jump)) + 1
        raise DataError(
            f"{name} has an absurd one-day jump on {_day(day[k])} "
            f"(close {values['Close'][k - 1]:g} -> {values['Close'][k]:g})"
        )
    body = np.maximum(values["Open"], values["Close"])
    values["High"] = np.maximum(values["High"], body)
    values["Low"] = np.minimum(values["Low"], np.minimum(values["Open"], values["Close"]))
    return pd.DataFrame(values, index=pd.Index(day, name="Date"))[[*PRICE_COLUMNS, "Volume"]]


def read_csv_ticker(path: Path) -> pd.DataFrame:
    """Read and validate one yfinance-layout CSV (see ``validate_ohlcv``)."""
    name = f"file '{path}'"
    try:
        raw = pd.read_csv(path, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{name} is not a readable CSV ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise DataError(f"{name} cannot be read ({err.strerror or err})") from None
    if raw.shape[0] == 0:
        raise DataError(f"{name} is empty: it has a header but no rows")
    return validate_ohlcv(raw, name)


def _frames_from_csv(universe: Universe, data_dir: str) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    if not data_dir:
        raise DataError("source 'csv' needs a data directory (--data-dir DIR or data.data_dir in the config)")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data directory '{data_dir}' does not exist")
    frames, missing = {}, {}
    for ticker in universe.tickers:
        path = folder / f"{ticker}.csv"
        if not path.is_file():
            missing[ticker] = f"no file {path.name} in {folder}"
            continue
        frames[ticker] = read_csv_ticker(path)
    return frames, missing


def _frames_from_yfinance(universe: Universe, start: str, end: str, cache_dir: str
                          ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    from data import yahoo

    frames, missing = {}, {}
    for ticker in universe.tickers:
        raw = yahoo.fetch_history(ticker, start, end, cache_dir=cache_dir or None)
        if raw is None:
            missing[ticker] = "yfinance returned no data"
            continue
        frames[ticker] = validate_ohlcv(raw, f"ticker '{ticker}' from yfinance")
    return frames, missing


def _market_to_frames(market: MarketData) -> dict[str, pd.DataFrame]:
    """Per-ticker frames holding only the days a simulated asset actually quoted."""
    frames = {}
    for i, ticker in enumerate(market.tickers):
        rows = market.tradable[:, i]
        frames[ticker] = pd.DataFrame(
            {"Open": market.open[rows, i], "High": market.high[rows, i], "Low": market.low[rows, i],
             "Close": market.close[rows, i], "Volume": market.volume[rows, i]},
            index=pd.Index(market.dates[rows], name="Date"),
        )
    return frames


def series_warnings(ticker: str, frame: pd.DataFrame, start: str, end: str) -> list[str]:
    """Sentences about a legal but suspicious series: volume 0 on every quote, or a close that never changes.

    ``frame`` is the ticker's clean table (``validate_ohlcv``) clipped to ``[start, end]``.
    """
    out = []
    n = len(frame)
    if n and not (frame["Volume"].to_numpy() > 0).any():
        out.append(f"{ticker} reports zero volume on all {n} quoted days between {start} and {end}; "
                   "the slippage rule sees no traded volume for it")
    close = frame["Close"].to_numpy()
    if n > 1 and (close == close[0]).all():
        out.append(f"{ticker}'s close is {close[0]:g} on all {n} quoted days between {start} and {end}; "
                   "its returns are all zero (a stale or placeholder series?)")
    return out


def align(frames: dict[str, pd.DataFrame], universe: Universe, start: str, end: str, source: str,
          min_history_days: int = 1, missing: dict[str, str] | None = None,
          verbose: bool = True) -> MarketData:
    """Align per-ticker frames (from ``validate_ohlcv``) on the 7-day calendar of ``[start, end]``.

    The calendar is trimmed to the days between the first and the last quote of any kept asset. An
    asset quoted before ``start`` is listed from the first day, at its last close before the span.
    ``missing`` maps tickers the source lacks to a reason; they and assets with fewer than
    ``min_history_days`` quotes in the span are dropped, reported in ``MarketData.dropped``/``notes``
    and printed to stderr when ``verbose``. Raises ``DataError`` when fewer than 2 assets remain.

    Two suspicious but legal series are kept with one ``warning:`` line each (also in ``notes``): a kept
    asset whose volume is zero on every quoted day of the span (the slippage rule then sees no liquidity)
    and one whose close never changes (zero returns: a stale or placeholder series).
    """
    days = calendar(start, end)
    lo, hi = days[0], days[-1]
    reasons = dict(missing or {})
    kept: list[str] = []
    clipped: dict[str, pd.DataFrame] = {}
    carried_in: dict[str, float] = {}  # last close before the span, carried into its first days
    for ticker in universe.tickers:
        frame = frames.get(ticker)
        if frame is None:
            reasons.setdefault(ticker, "the source has no data for it")
            continue
        idx = frame.index.to_numpy().astype("datetime64[D]")
        sub = frame.loc[(idx >= lo) & (idx <= hi)]
        if len(sub) == 0:
            reasons[ticker] = f"no quotes between {start} and {end}"
        elif len(sub) < min_history_days:
            reasons[ticker] = (f"only {len(sub)} quotes between {start} and {end}, "
                               f"fewer than min_history_days={min_history_days}")
        else:
            kept.append(ticker)
            clipped[ticker] = sub
            before = frame["Close"].to_numpy()[idx < lo]
            if len(before):
                carried_in[ticker] = float(before[-1])
    if not kept:
        raise DataError(f"no data between {start} and {end} for any ticker of the universe "
                        f"(source '{source}')")
    if len(kept) < 2:
        why = ", ".join(f"{t} ({reasons[t]})" for t in universe.tickers if t in reasons)
        raise DataError(f"only {kept[0]} has enough history between {start} and {end}; at least 2 assets "
                        f"are needed (dropped: {why})")
    first = lo if carried_in else min(np.datetime64(f.index[0], "D") for f in clipped.values())
    last = max(np.datetime64(f.index[-1], "D") for f in clipped.values())
    days = np.arange(first, last + 1, dtype="datetime64[D]")
    dropped = tuple(t for t in universe.tickers if t in reasons)  # universe order
    notes = [f"dropped {t}: {reasons[t]}" for t in dropped]
    if first > lo or last < hi:
        notes.append(f"calendar trimmed to the quoted span {first}..{last} (asked {start}..{end})")
    warned = [f"warning: {w}" for t in kept for w in series_warnings(t, clipped[t], start, end)]
    notes.extend(warned)
    sub_universe = universe.subset(kept)
    shape = (len(days), len(kept))
    out = {c: np.full(shape, np.nan) for c in PRICE_COLUMNS}
    volume = np.zeros(shape)
    quoted = np.zeros(shape, dtype=bool)
    has_price = np.zeros(shape, dtype=bool)
    for i, ticker in enumerate(sub_universe.tickers):
        frame = clipped[ticker]
        pos = (frame.index.to_numpy().astype("datetime64[D]") - first).astype(np.int64)
        quoted[pos, i] = True
        # Index of the last quoted day on or before each day (-1 before the first quote).
        last_q = np.maximum.accumulate(np.where(quoted[:, i], np.arange(len(days)), -1))
        live = last_q >= 0
        close = np.full(len(days), np.nan)
        close[pos] = frame["Close"].to_numpy()
        close[live] = close[last_q[live]]
        if ticker in carried_in:  # quoted before the span: listed, at its last close, until it quotes
            close[: pos[0]] = carried_in[ticker]
            live[: pos[0]] = True
        has_price[:, i] = live
        for col in PRICE_COLUMNS:
            col_v = close.copy()  # closed days: a flat bar at the carried close
            col_v[pos] = frame[col].to_numpy()
            out[col][:, i] = col_v
        volume[pos, i] = frame["Volume"].to_numpy()
        span = quoted[pos[0]: pos[-1] + 1, i]
        if calendar_of(ticker) == "7d" and not span.all():
            gap = days[pos[0] + int(np.argmin(span))]
            notes.append(f"{ticker} has no quote on {int((~span).sum())} day(s) between its first and last "
                         f"quote (first: {gap}); its price is carried over and it is not tradable then")
        last_day = np.datetime64(frame.index[-1], "D")
        if last_day < last - 6:
            notes.append(f"{ticker}'s last quote is {last_day}; its price is carried over after that")
    if verbose:
        for note in notes:
            print(note if note.startswith("warning: ") else f"note: {note}", file=sys.stderr)
    return MarketData(
        dates=days, tickers=sub_universe.tickers, categories=sub_universe.categories,
        open=out["Open"], high=out["High"], low=out["Low"], close=out["Close"], volume=volume,
        listed=has_price, tradable=quoted, source=source, dropped=dropped, notes=tuple(notes),
    )


def load_market(cfg: DataConfig, source: str | None = None, data_dir: str | None = None,
                verbose: bool = True) -> MarketData:
    """Load the market of ``cfg`` from ``source`` (default ``cfg.source``) and align it.

    ``data_dir`` (default ``cfg.data_dir``) is the CSV folder for ``source='csv'``. The universe is
    ``cfg.build_universe()`` (substitutes applied), the span ``[cfg.start, cfg.end]``. Returns
    ``MarketData`` with the dropped tickers in ``.dropped`` (see ``align``); raises ``DataError`` with
    one sentence on bad input.
    """
    src = (source or cfg.source or "").strip().lower()
    if src not in SOURCES:
        raise DataError(f"unknown data source '{source or cfg.source}'; expected one of {', '.join(SOURCES)}")
    universe = cfg.build_universe()
    calendar(cfg.start, cfg.end)  # validates the dates with one sentence
    if src == "synthetic":
        market = generate_market(universe, cfg.start, cfg.end, cfg.seed)
        frames, missing = _market_to_frames(market), {}
    elif src == "csv":
        frames, missing = _frames_from_csv(universe, data_dir if data_dir is not None else cfg.data_dir)
    else:
        frames, missing = _frames_from_yfinance(universe, cfg.start, cfg.end, cfg.cache_dir)
    return align(frames, universe, cfg.start, cfg.end, src, cfg.min_history_days, missing, verbose)
