"""``CryptoHedgeFundEnv``: a daily multi-asset allocation environment with exact accounting.

Action space
    ``Box(0, 1, (N + 1,), float32)``: a non-negative score per risky asset, the last slot is cash.
    Scores are normalised to the simplex (``a / a.sum()``, all zeros = all cash); closed or not yet
    listed assets keep their drifted weight and the rest of the budget is spread over tradable
    assets and cash in proportion to the scores; tradable weights are capped at ``max_weight``.
    The map is the identity on feasible simplex inputs. With margin on, risky weights are
    ``max_leverage`` times the risky scores' share and the cash slot goes negative (borrowed).
    See ``environments.accounting`` for the exact rule. NaN, infinite or negative entries, or a
    wrong shape, raise ``ValueError``; nothing is repaired silently.

Observation space
    ``Box(-inf, inf, (obs_dim,), float32)``, ``obs_dim = window * N * F + 2N + 1``, laid out as
    ``[features[t - window + 1 : t + 1] (window, N, F) C-order | weights (N + 1), cash last |
    tradable mask of day t (N), 1.0 = can trade]``, where t is the day the next action is taken.

Reward
    ``EnvConfig.reward``: ``log_return`` (log of NAV growth over the step, net of all costs),
    ``dsr`` (differential Sharpe ratio) or ``risk_adjusted``; minus the concentration penalty.

Construction
    ``CryptoHedgeFundEnv(prices, features, transaction_costs, ...)`` from arrays (the paper's
    signature), ``CryptoHedgeFundEnv.from_store(store, config, start, end)`` from an in-memory
    ``data.market.FeatureStore`` (costs per asset category, tradable masks and dollar volume from
    the store) or ``CryptoHedgeFundEnv.from_directory(dir, config, ...)`` from a written store.

Starting state
    All cash at ``initial_nav``. ``reset(seed=...)`` draws the first decision day uniformly in
    ``[first, last - episode_length]`` (``[first, last - 1]`` when ``episode_length == 0``), where
    ``first >= window - 1`` is the first day with a full window and ``last`` the span's last day.
    ``reset(options={"start": s, "end": e})`` runs the fixed span instead (s, e: day indices or ISO
    dates; e defaults to the span's last day): decisions at s, ..., e - 1, the last state is day e.
    ``options["weights"]`` (N + 1,) sets the starting weights (on the simplex, 0 on unlisted assets).

Episode end
    ``terminated``: liquidation (margin call) or bankruptcy. ``truncated``: the episode reached its
    length or the end of the span.

Info (``step``)
    ``nav`` (currency, after the step), ``weights`` (N + 1,) after drift, ``target_weights`` (N + 1,)
    post-trade, ``cost`` = ``fee`` + ``slippage`` (currency), ``turnover`` (sum |risky weight change|),
    ``drawdown`` (1 - NAV / peak), ``gross_leverage`` (sum |risky weights|), ``log_return``,
    ``interventions`` (list of str: weight_cap, drawdown_control, liquidation, bankruptcy), ``t``
    (the new day's index) and ``date`` (ISO string, when dates are known). Holding a closed asset
    is the rule above, not an intervention.

Backtests
    Step a fixed span with weight actions:
    ``obs, info = env.reset(options={"start": "2023-01-01", "end": "2023-12-31"})``, then
    ``env.step(w)`` until ``terminated or truncated``, reading ``info["nav"]`` etc.; ``env.core``
    holds the arrays (``first``, ``last``, ``dates``, ``features``, ``market``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.lib.stride_tricks import as_strided

from data.market import DataError, FeatureStore
from data.universe import DEFAULT_COSTS_BPS
from environments.accounting import (
    MarketArrays,
    PortfolioState,
    check_actions,
    step_portfolios,
)
from environments.action_prior import prior_table
from environments.config import EnvConfig, env_section

_ENV_FIELDS = frozenset(f.name for f in fields(EnvConfig))


def trailing_adv(volume: np.ndarray, window: int) -> np.ndarray:
    """Average dollar volume (T, N) over the open days (volume > 0) among days ``t - window + 1 .. t``.

    Uses only data up to day t (no look-ahead); 0 where no open day falls in the window.
    """
    vol = np.nan_to_num(np.asarray(volume, dtype=np.float64), nan=0.0)
    vol = np.maximum(vol, 0.0)
    zero = np.zeros((1, vol.shape[1]))
    csum = np.concatenate([zero, np.cumsum(vol, axis=0)])
    ccount = np.concatenate([zero, np.cumsum(vol > 0, axis=0)])
    hi = np.arange(1, vol.shape[0] + 1)
    lo = np.maximum(hi - window, 0)
    sums = csum[hi] - csum[lo]
    counts = ccount[hi] - ccount[lo]
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


class MarketCore:
    """Read-only market arrays and span rules shared by the single and the batched env.

    ``features`` (T, N, F) float32 C-contiguous; ``windows`` is a (T - window + 1, window, N, F)
    strided view of it (no copy): ``windows[t - window + 1]`` is the observation window of day t.
    Decisions may be taken on days ``first .. last - 1``; ``last`` is the last day whose close is used.
    """

    def __init__(
        self, features: np.ndarray, market: MarketArrays, cfg: EnvConfig, first: int, last: int,
        dates: np.ndarray | None = None, tickers: tuple[str, ...] | None = None,
    ) -> None:
        self.cfg = cfg
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.market = market
        n_days, self.n_assets, self.n_features = self.features.shape
        w = cfg.window
        if n_days < w + 1:
            raise DataError(f"the data has {n_days} days but a window of {w} needs at least {w + 1}")
        s0, s1, s2 = self.features.strides
        self.windows = as_strided(
            self.features, (n_days - w + 1, w, self.n_assets, self.n_features), (s0, s0, s1, s2),
            writeable=False,
        )
        self.first = max(int(first), w - 1)
        self.last = min(int(last), n_days - 1)
        if self.last - self.first < 1:
            raise DataError(
                f"the span has no room for one decision: a {w}-day window needs day {w - 1} "
                f"or later and the span ends at day {self.last}"
            )
        self.dates = dates
        self._iso: list[str] | None = None
        self.tickers = tickers or tuple(f"asset{i}" for i in range(self.n_assets))
        self.window_size = w * self.n_assets * self.n_features
        self.obs_dim = self.window_size + 2 * self.n_assets + 1
        self.tradable_f32 = market.tradable.astype(np.float32)

    @property
    def obs_layout(self) -> dict[str, int]:
        """The observation layout: ``{"window", "n_assets", "n_features"}``."""
        return {"window": self.cfg.window, "n_assets": self.n_assets, "n_features": self.n_features}

    def observation(self, t: int, weights: np.ndarray) -> np.ndarray:
        """One observation (obs_dim,) float32 for decision day ``t`` and weights (N + 1,)."""
        out = np.empty(self.obs_dim, dtype=np.float32)
        out[: self.window_size] = self.windows[t - self.cfg.window + 1].reshape(-1)
        out[self.window_size : self.window_size + self.n_assets + 1] = weights
        out[self.window_size + self.n_assets + 1 :] = self.tradable_f32[t]
        return out

    def observations(self, t: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Observations (M, obs_dim) float32 for days ``t`` (M,) and weights (M, N + 1)."""
        m = t.shape[0]
        if out is None:
            out = np.empty((m, self.obs_dim), dtype=np.float32)
        ws, n = self.window_size, self.n_assets
        win = out[:, :ws].reshape(m, self.cfg.window, n, self.n_features) if m else None
        for row, day in enumerate(t):
            win[row] = self.windows[day - self.cfg.window + 1]
        out[:, ws : ws + n + 1] = weights
        out[:, ws + n + 1 :] = self.tradable_f32[t]
        return out

    def day_index(self, value: Any, name: str) -> int:
        """A day index from an int or an ISO date string (the last day on or before that date)."""
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and self.dates is not None:
            try:
                day = np.datetime64(value, "D")
            except ValueError:
                raise ValueError(f"{name} '{value}' is not an ISO date") from None
            return int(np.searchsorted(self.dates, day, "right")) - 1
        raise ValueError(f"{name} must be a day index{' or an ISO date' if self.dates is not None else ''}")

    def fixed_span(self, options: dict[str, Any]) -> tuple[int, int]:
        """``(start, end)`` from reset options ``start``/``end``; checked against the span."""
        start = self.day_index(options["start"], "start") if "start" in options else self.first
        end = self.day_index(options["end"], "end") if "end" in options else self.last
        if start < self.first or end > self.last or end <= start:
            raise ValueError(
                f"the episode span must satisfy {self.first} <= start < end <= {self.last}, "
                f"got start={start}, end={end}"
            )
        return start, end

    def random_span(self, rng: np.random.Generator) -> tuple[int, int]:
        """A random ``(start, end)``: uniform start, then ``episode_length`` steps or to the end."""
        length = self.cfg.episode_length
        hi = self.last - length if length else self.last - 1
        start = int(rng.integers(self.first, max(hi, self.first) + 1))
        end = min(start + length, self.last) if length else self.last
        return start, end

    def initial_weights(self, options: dict[str, Any], start: int) -> np.ndarray:
        """Starting weights (N + 1,): all cash, or ``options["weights"]`` after validation."""
        n = self.n_assets
        if "weights" not in options:
            weights = np.zeros(n + 1)
            weights[n] = 1.0
            return weights
        try:
            weights = np.asarray(options["weights"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"initial weights must be {n + 1} numbers") from None
        if weights.shape != (n + 1,) or not np.isfinite(weights).all():
            raise ValueError(f"initial weights must be {n + 1} finite numbers")
        if not self.cfg.margin and (weights < 0).any():
            raise ValueError("initial weights must be non-negative without margin")
        if abs(weights.sum() - 1.0) > 1e-9:
            raise ValueError(f"initial weights must sum to 1, got {weights.sum():.6g}")
        listed = self.market.tradable[: start + 1].any(axis=0)
        if (weights[:n][~listed] != 0).any():
            raise ValueError("initial weights must be 0 on assets that have never been tradable")
        return weights

    def date_of(self, t: int) -> str | None:
        """ISO date of day ``t`` (None when the env has no dates)."""
        if self.dates is None:
            return None
        if self._iso is None:
            self._iso = [str(d) for d in self.dates.astype("datetime64[D]")]
        return self._iso[t]


def _config_with(config: EnvConfig | None, options: dict[str, Any]) -> EnvConfig:
    options = env_section(options)
    unknown = sorted(set(options) - _ENV_FIELDS)
    if unknown:
        raise ValueError(f"unknown environment option '{unknown[0]}'")
    return replace(config or EnvConfig(), **options)


def _per_asset(value: Any, n: int, name: str, default: float) -> np.ndarray:
    arr = np.full(n, default) if value is None else np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be a non-negative number or {n} non-negative numbers")
    return arr


class CryptoHedgeFundEnv(gym.Env):
    """Single-portfolio trading environment; the module docstring is its specification.

    Args (the paper's signature):
        prices: (T, N) close prices (array or DataFrame with a date index and ticker columns); NaN
            before an asset's first quote (not listed, not tradable).
        features: (T, N, F) or (T, N) features known at each day's close (finite; already normalised).
        transaction_costs: fee per asset as a fraction of traded notional, scalar or (N,); default 0.001.
        config: an ``EnvConfig``; ``**options`` override its fields (e.g. ``window=30``).
        volume: (T, N) dollar volume for the square-root slippage rule; without it slippage is flat.
        tradable: (T, N) bool; default: listed (finite price). Closed days are False.
        slippage_costs: slippage fraction per asset at 1% of ADV, scalar or (N,); default 0.
        dates, tickers: labels for ``info["date"]`` and date-valued reset options.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, prices: Any, features: Any, transaction_costs: Any = None, *,
        config: EnvConfig | None = None, volume: Any = None, tradable: Any = None,
        slippage_costs: Any = None, dates: Any = None, tickers: Any = None, **options: Any,
    ) -> None:
        cfg = _config_with(config, options)
        if hasattr(prices, "columns") and hasattr(prices, "index"):
            tickers = tickers or tuple(str(c) for c in prices.columns)
            if dates is None:
                try:
                    dates = np.asarray(prices.index, dtype="datetime64[D]")
                except (TypeError, ValueError):
                    dates = None
            prices = prices.to_numpy(dtype=np.float64)
        close = np.asarray(prices, dtype=np.float64)
        if close.ndim != 2:
            raise ValueError(f"prices must be a (days, assets) array, got shape {close.shape}")
        n_days, n = close.shape
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim == 2:
            feats = feats[:, :, None]
        if feats.ndim != 3 or feats.shape[:2] != (n_days, n):
            raise ValueError(f"features must have shape ({n_days}, {n}, F), got {feats.shape}")
        if not np.isfinite(feats).all():
            raise ValueError("features contain NaN or infinite values")
        listed = np.isfinite(close)
        if (close[listed] <= 0).any():
            raise ValueError("prices must be positive where they are known")
        ret = np.zeros_like(close)
        both = listed[:-1] & listed[1:]
        ret[:-1][both] = close[1:][both] / close[:-1][both] - 1.0
        tradable_arr = listed.copy() if tradable is None else np.asarray(tradable, dtype=bool) & listed
        if tradable_arr.shape != (n_days, n):
            raise ValueError(f"tradable must have shape ({n_days}, {n}), got {tradable_arr.shape}")
        adv = np.zeros_like(close) if volume is None else trailing_adv(volume, cfg.adv_window)
        if adv.shape != (n_days, n):
            raise ValueError(f"volume must have shape ({n_days}, {n})")
        tickers = tuple(tickers) if tickers is not None else None
        market = MarketArrays(
            returns=ret, tradable=tradable_arr, adv=adv,
            fee_rate=_per_asset(transaction_costs, n, "transaction_costs", 0.001),
            slip_rate=_per_asset(slippage_costs, n, "slippage_costs", 0.0),
            prior=prior_table(cfg, ret, listed, tickers or ()),  # no tickers: a 7-day calendar, no T-bill leg
        )
        if dates is not None:
            dates = np.asarray(dates, dtype="datetime64[D]")
        self._setup(MarketCore(feats, market, cfg, 0, n_days - 1, dates, tickers))

    @classmethod
    def from_store(
        cls, store: FeatureStore, config: EnvConfig, start: str | None = None, end: str | None = None,
        costs_bps: dict[str, tuple[float, float]] | None = None,
    ) -> CryptoHedgeFundEnv:
        """An env over ``store``'s days ``start .. end`` (ISO dates, inclusive; default all).

        Windows may reach before ``start`` (those days are history, not look-ahead); days after
        ``end`` are dropped. Fees and slippage come from each asset's category
        (``data.universe.DEFAULT_COSTS_BPS`` updated by ``costs_bps``, in bps).
        """
        env = cls.__new__(cls)
        env._setup(core_from_store(store, config, start, end, costs_bps))
        return env

    @classmethod
    def from_directory(
        cls, store_dir: str, config: EnvConfig, start: str | None = None, end: str | None = None,
        costs_bps: dict[str, tuple[float, float]] | None = None,
    ) -> CryptoHedgeFundEnv:
        """An env over a feature-store directory written by ``data.tf_pipeline.write_store``.

        Reading the TFRecord shards imports TensorFlow (inside ``data``), so prefer ``from_store``
        with an in-memory store where one is at hand. Arguments as in ``from_store``.
        """
        from data.tf_pipeline import read_store

        return cls.from_store(read_store(store_dir), config, start, end, costs_bps)

    def _setup(self, core: MarketCore) -> None:
        self.core = core
        self.config = core.cfg
        n = core.n_assets
        self.n_assets = n
        self.obs_dim = core.obs_dim
        self.obs_layout = core.obs_layout
        self.action_space = gym.spaces.Box(0.0, 1.0, (n + 1,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (core.obs_dim,), dtype=np.float32)
        self._state: PortfolioState | None = None
        self._t = np.zeros(1, dtype=np.int64)  # the next decision day, as the kernel's (M,) = (1,) array
        self._day = 0  # the same, as a Python int
        self._end = 0
        self._done = True

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"start", "end", "weights"})
        if unknown:
            raise ValueError(f"unknown reset option '{unknown[0]}'; use start, end or weights")
        core = self.core
        if "start" in options or "end" in options:
            start, end = core.fixed_span(options)
        else:
            start, end = core.random_span(self.np_random)
        weights = core.initial_weights(options, start)
        self._state = PortfolioState.initial(
            np.array([self.config.initial_nav]), weights[None, :], self.config.vol_window
        )
        self._t[0] = self._day = start
        self._start, self._end = start, end
        self._done = False
        info = {"nav": float(self.config.initial_nav), "weights": weights.copy(), "t": start,
                "start": start, "end": end}
        if core.dates is not None:
            info["date"] = core.date_of(start)
        return core.observation(start, weights), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done or self._state is None:
            raise RuntimeError("the episode is over; call reset() before step()")
        act = check_actions(action, (self.n_assets + 1,))
        self._state, out = step_portfolios(self._state, act[None, :], self._t, self.core.market, self.config)
        t = self._day = self._day + 1
        self._t[0] = t
        terminated = bool(out.terminated[0])
        truncated = (t >= self._end) and not terminated
        self._done = terminated or truncated
        weights = self._state.weights[0]
        fee, slip = float(out.fee[0]), float(out.slippage[0])
        info = {
            "nav": float(self._state.nav[0]), "weights": weights.copy(),
            "target_weights": out.target[0].copy(), "cost": fee + slip, "fee": fee, "slippage": slip,
            "turnover": float(out.turnover[0]), "drawdown": float(out.drawdown[0]),
            "gross_leverage": float(out.gross_leverage[0]), "log_return": float(out.log_return[0]),
            "interventions": out.interventions(0), "t": t,
        }
        if self.core.dates is not None:
            info["date"] = self.core.date_of(t)
        return self.core.observation(t, weights), float(out.reward[0]), terminated, truncated, info

    # -- convenience ---------------------------------------------------------------------------
    @property
    def nav(self) -> float:
        """Current net asset value (currency)."""
        return float(self._state.nav[0]) if self._state is not None else float(self.config.initial_nav)

    @property
    def weights(self) -> np.ndarray:
        """Current (drifted) weights (N + 1,), cash last."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state.weights[0].copy()

    @property
    def day(self) -> int:
        """Index of the day of the next decision."""
        return self._day


def core_from_store(
    store: FeatureStore, config: EnvConfig, start: str | None = None, end: str | None = None,
    costs_bps: dict[str, tuple[float, float]] | None = None,
) -> MarketCore:
    """The ``MarketCore`` behind ``CryptoHedgeFundEnv.from_store`` (also used by the batched env)."""
    dates = np.asarray(store.dates, dtype="datetime64[D]")
    lo = 0 if start is None else int(np.searchsorted(dates, np.datetime64(start, "D"), "left"))
    hi = dates.shape[0] - 1 if end is None else int(np.searchsorted(dates, np.datetime64(end, "D"), "right")) - 1
    if hi < 0 or lo >= dates.shape[0] or hi <= lo:
        raise DataError(f"the feature store has no days between {start or 'its start'} and {end or 'its end'}")
    if not (np.isfinite(store.features).all() and np.isfinite(store.returns).all()):
        raise DataError("the feature store holds NaN or infinite features or returns")
    costs = dict(DEFAULT_COSTS_BPS)
    costs.update(costs_bps or {})
    unknown = sorted(set(store.categories) - set(costs))
    if unknown:
        raise DataError(f"no transaction costs are known for asset category '{unknown[0]}'")
    fee = np.array([costs[c][0] for c in store.categories], dtype=np.float64) * 1e-4
    slip = np.array([costs[c][1] for c in store.categories], dtype=np.float64) * 1e-4
    keep = slice(0, hi + 1)
    returns = np.array(store.returns[keep], dtype=np.float64)
    returns[-1] = 0.0  # the return out of the span's last day is never earned inside the span
    listed = np.asarray(store.listed[keep], dtype=bool)
    market = MarketArrays(
        returns=returns, tradable=np.asarray(store.tradable[keep], dtype=bool),
        adv=trailing_adv(store.volume[keep], config.adv_window), fee_rate=fee, slip_rate=slip,
        prior=prior_table(config, returns, listed, tuple(store.tickers)),
    )
    return MarketCore(store.features[keep], market, config, lo, hi, dates[keep], tuple(store.tickers))
