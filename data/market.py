"""The two arrays-only records that cross the data layer's seams.

``MarketData`` is what a source (synthetic, CSV, yfinance) returns after calendar alignment and
validation. ``FeatureStore`` is what the feature pipeline produces and what the environment,
agents, training and evaluation consume. Both hold plain numpy arrays; axis 0 is the day on the
crypto (7-day) calendar, axis 1 the asset in universe order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data or configuration. ``str(err)`` is one sentence meant for the user."""


@dataclass(frozen=True)
class MarketData:
    """Daily OHLCV aligned on the 7-day calendar.

    Shapes: ``dates`` (T,) ``datetime64[D]``; every price/volume array (T, N) float64.

    - ``close`` etc. are adjusted prices in the asset's quote currency (USD). Before an asset's first
      quote they are NaN; on days its market is closed (weekend for an ETF) the previous close is
      carried over (so the day's return is exactly 0) and ``volume`` is 0.
    - ``listed[t, i]``: the asset has a real quote on or before day t.
    - ``tradable[t, i]``: the asset's market is open on day t and it is listed (can be traded at t's close).
    - ``source`` is ``"synthetic"``, ``"csv"`` or ``"yfinance"``; ``synthetic`` labels reports.
    """

    dates: np.ndarray
    tickers: tuple[str, ...]
    categories: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    listed: np.ndarray
    tradable: np.ndarray
    source: str
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    @property
    def n_days(self) -> int:
        return int(self.dates.shape[0])

    @property
    def n_assets(self) -> int:
        return len(self.tickers)


@dataclass(frozen=True)
class FeatureStore:
    """Normalised features plus what the environment needs to account for a portfolio.

    Shapes (T days after warm-up rows are dropped, N assets, F features per asset):

    - ``dates`` (T,) ``datetime64[D]``
    - ``features`` (T, N, F) float32: feature f of asset i known at the close of day t, normalised with
      ``norm_mean``/``norm_std`` (F,) fitted on days ``<= train_end`` only, clipped to [-clip, clip];
      0 where the asset is not yet listed.
    - ``close`` (T, N) float64: adjusted close of day t (carried over on closed days, NaN before listing).
    - ``returns`` (T, N) float64: simple return from close t to close t+1 (0 where not listed, 0 on the
      last day, where it is unknown). Index t is the return earned by weights chosen at t's close.
    - ``volume`` (T, N) float64: traded dollar volume of day t, 0 on closed days.
    - ``tradable`` (T, N) bool, ``listed`` (T, N) bool: as in ``MarketData``.
    """

    dates: np.ndarray
    tickers: tuple[str, ...]
    categories: tuple[str, ...]
    feature_names: tuple[str, ...]
    features: np.ndarray
    close: np.ndarray
    returns: np.ndarray
    volume: np.ndarray
    tradable: np.ndarray
    listed: np.ndarray
    norm_mean: np.ndarray
    norm_std: np.ndarray
    train_end: np.datetime64
    source: str
    content_hash: str = ""

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    @property
    def n_days(self) -> int:
        return int(self.dates.shape[0])

    @property
    def n_assets(self) -> int:
        return len(self.tickers)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def slice_dates(self, start: str | None = None, end: str | None = None) -> FeatureStore:
        """The rows with ``start <= date <= end`` (ISO strings, inclusive); statistics unchanged."""
        lo = 0 if start is None else int(np.searchsorted(self.dates, np.datetime64(start, "D"), "left"))
        hi = self.n_days if end is None else int(np.searchsorted(self.dates, np.datetime64(end, "D"), "right"))
        if hi <= lo:
            raise DataError(f"no data between {start or 'the start'} and {end or 'the end'}")
        sl = slice(lo, hi)
        return FeatureStore(
            dates=self.dates[sl], tickers=self.tickers, categories=self.categories,
            feature_names=self.feature_names, features=self.features[sl], close=self.close[sl],
            returns=self.returns[sl], volume=self.volume[sl], tradable=self.tradable[sl],
            listed=self.listed[sl], norm_mean=self.norm_mean, norm_std=self.norm_std,
            train_end=self.train_end, source=self.source, content_hash=self.content_hash,
        )


#: The arrays ``store_content_hash`` covers, in order.
HASHED_ARRAYS = ("dates", "features", "close", "returns", "volume", "tradable", "listed", "norm_mean", "norm_std")


def store_content_hash(store: FeatureStore) -> str:
    """SHA-256 (hex) over the store's arrays (dtype, shape, bytes), names, train_end and source."""
    h = hashlib.sha256()
    for meta in (store.tickers, store.categories, store.feature_names, (str(store.train_end), store.source)):
        h.update("\x1f".join(meta).encode() + b"\x1e")
    for name in HASHED_ARRAYS:
        arr = np.ascontiguousarray(getattr(store, name))
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
