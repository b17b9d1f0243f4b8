"""Hand-built ``FeatureStore`` markets for the environment tests (no data layer code involved).

``make_store`` builds a small random market on the 7-day calendar with weekday-only assets (closed
on Saturdays and Sundays: price carried, zero return, zero volume, not tradable) and late listings
(NaN price, zero features, not listed before their first day). The tests below check the builder.
"""

from __future__ import annotations

import numpy as np

from data.market import FeatureStore

CATS = ("growth", "hedge", "traditional", "stable")


def make_store(
    n_days: int = 80, n_assets: int = 4, n_features: int = 3, seed: int = 0,
    weekday_assets: tuple[int, ...] = (2, 3), late: dict[int, int] | None = None,
) -> FeatureStore:
    """A random market: ``late`` maps asset index -> first listed day (default {1: n_days // 3})."""
    rng = np.random.default_rng(seed)
    late = {1: n_days // 3} if late is None else late
    dates = np.datetime64("2021-01-04", "D") + np.arange(n_days)  # 2021-01-04 is a Monday
    weekend = (np.arange(n_days) % 7) >= 5
    listed = np.ones((n_days, n_assets), dtype=bool)
    for i, first in late.items():
        listed[:first, i] = False
    open_ = listed.copy()
    for i in weekday_assets:
        open_[weekend, i] = False
    log_ret = 0.03 * rng.standard_normal((n_days, n_assets))
    log_ret[~open_] = 0.0  # closed days carry the price over
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    close[~listed] = np.nan
    returns = np.zeros((n_days, n_assets))
    both = listed[:-1] & listed[1:]
    returns[:-1][both] = close[1:][both] / close[:-1][both] - 1.0
    volume = np.where(open_, rng.uniform(1e7, 1e9, (n_days, n_assets)), 0.0)
    features = rng.standard_normal((n_days, n_assets, n_features)).astype(np.float32)
    features[~listed] = 0.0
    return FeatureStore(
        dates=dates, tickers=tuple(f"A{i}" for i in range(n_assets)),
        categories=tuple(CATS[i % 4] for i in range(n_assets)),
        feature_names=tuple(f"f{j}" for j in range(n_features)), features=features, close=close,
        returns=returns, volume=volume, tradable=open_, listed=listed,
        norm_mean=np.zeros(n_features), norm_std=np.ones(n_features), train_end=dates[n_days // 2],
        source="synthetic",
    )


def test_make_store_respects_calendar_and_listing():
    store = make_store(n_days=30, late={1: 10})
    weekend = (np.arange(30) % 7) >= 5
    assert not store.tradable[weekend][:, 2:].any()
    assert store.tradable[~weekend][:, 2:].all()
    # A weekend day's return (close t -> t+1) is zero when both days are closed (Sat -> Sun).
    sat = np.flatnonzero((np.arange(30) % 7) == 5)
    assert np.all(store.returns[sat, 2] == 0.0)
    assert np.isnan(store.close[:10, 1]).all() and not store.listed[:10, 1].any()
    assert np.all(store.features[:10, 1] == 0) and np.all(store.returns[:10, 1] == 0)
    np.testing.assert_allclose(store.close[1:, 0] / store.close[:-1, 0] - 1, store.returns[:-1, 0])
