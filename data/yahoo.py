"""Daily OHLCV from Yahoo Finance (the ``yfinance`` package), with retries and an on-disk cache.

Named ``yahoo`` rather than ``yfinance`` so that a CLI run as ``python data/x.py`` (which puts
``data/`` first on ``sys.path``) still imports the real ``yfinance`` package.

The only network call is ``_download``; tests replace it with recorded responses. A download is
retried with exponential backoff; a ticker Yahoo does not know (an empty answer) is reported as
``None`` so the loader can drop it. Results are cached as CSV files under
``$XDG_CACHE_HOME/drl-hedge-fund/yfinance`` (``~/.cache/...``) or ``<cache_dir>/yfinance``, never inside
the repository, written to a temporary file and renamed into place. A span that reaches today or
later is not cached, because its last bars are still changing.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from data.atomic_files import atomic_write_text
from data.market import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS: tuple[str, ...] = ("Date", "Open", "High", "Low", "Close", "Volume")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/drl-hedge-fund`` or ``~/.cache/drl-hedge-fund``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "drl-hedge-fund"


def cache_root(cache_dir: str | None = None) -> Path:
    """The folder holding cached downloads; raises ``DataError`` if it lies inside the repository."""
    root = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).resolve()
    if root == REPO_ROOT or REPO_ROOT in root.parents:
        raise DataError(f"cache directory '{root}' is inside the repository; choose a folder outside it")
    return root / "yfinance"


def _download(ticker: str, start: str, end: str) -> pd.DataFrame:
    """Ask Yahoo for daily bars of ``ticker`` from ``start`` to ``end`` inclusive (the network call).

    Returns yfinance's frame: a DatetimeIndex (exchange time zone) and columns Open, High, Low,
    Close (split/dividend adjusted, USD) and Volume (units); empty for an unknown ticker.
    """
    import yfinance
    from yfinance.exceptions import YFTickerMissingError

    stop = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()  # yfinance's end is exclusive
    debug = yfinance.config.debug
    hide = debug.hide_exceptions
    debug.hide_exceptions = False  # raise network errors instead of logging them and returning nothing
    try:
        return yfinance.Ticker(ticker).history(
            start=start, end=stop, interval="1d", auto_adjust=True, actions=False
        )
    except YFTickerMissingError:  # unknown or delisted ticker, or no bars in the span
        return pd.DataFrame()
    finally:
        debug.hide_exceptions = hide


def to_table(frame: pd.DataFrame) -> pd.DataFrame:
    """yfinance's frame -> a plain table with columns Date (ISO day in the exchange's time zone),
    Open, High, Low, Close, Volume; rows that are entirely NaN (Yahoo's placeholders) are removed."""
    if frame.shape[0] == 0:
        return pd.DataFrame(columns=list(COLUMNS))
    if isinstance(frame.columns, pd.MultiIndex):  # yfinance.download(...) layout: (field, ticker)
        frame = frame.droplevel(-1, axis=1)
    prices = frame[[c for c in COLUMNS[1:] if c in frame.columns]]
    prices = prices.loc[~prices.isna().all(axis=1)]
    index = pd.DatetimeIndex(prices.index)
    if index.tz is not None:
        index = index.tz_localize(None)
    table = prices.reset_index(drop=True)
    table.insert(0, "Date", index.strftime("%Y-%m-%d"))
    return table


def fetch_history(
    ticker: str,
    start: str,
    end: str,
    cache_dir: str | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    today: dt.date | None = None,
) -> pd.DataFrame | None:
    """Daily bars of ``ticker`` over ``[start, end]`` as a table (see ``to_table``), or ``None`` when
    Yahoo has no data for it.

    Served from the cache when present and readable (a damaged cache file is replaced). Otherwise ``_download`` is tried ``retries`` times, sleeping
    ``backoff_s * 2**k`` seconds after failure ``k``; when every try fails, ``DataError`` names the
    ticker and the last error.
    """
    path = cache_root(cache_dir) / f"{ticker}_{start}_{end}.csv"
    if path.is_file():
        try:
            cached = pd.read_csv(path, dtype={"Date": str})
            if list(cached.columns) == list(COLUMNS) and len(cached):
                return cached
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
            pass
        path.unlink(missing_ok=True)  # unreadable (edited or damaged by hand): download again
    last_error: Exception | None = None
    frame = None
    for attempt in range(retries):
        try:
            frame = _download(ticker, start, end)
            break
        except Exception as err:  # network errors come in many types (requests, curl_cffi, yfinance)
            last_error = err
            if attempt + 1 < retries:
                sleep(backoff_s * 2**attempt)
    if frame is None:
        raise DataError(f"could not download {ticker} from yfinance after {retries} attempts ({last_error})")
    table = to_table(frame)
    if table.shape[0] == 0:
        return None
    if dt.date.fromisoformat(end) < (today or dt.date.today()):
        atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
    return table

