"""Asset universes: tickers, the paper's four categories, calendars and per-category cost defaults.

Categories (first paper):
- ``growth``: growth cryptocurrencies (BTC-USD, ETH-USD, ...), traded 7 days a week;
- ``hedge``: derivatives and hedges (BITO crypto futures ETF, VXX/UVXY volatility ETFs, ETHW);
- ``traditional``: equity, gold and bond ETFs (SPY, QQQ, GLD, BND, IEF);
- ``stable``: T-bill ETFs and stablecoins (BIL, SHV, USDT-USD), the cash-like legs.

Costs are in basis points of traded notional (1 bp = 0.0001). ``fee_bps`` is charged on every unit
traded; ``slippage_bps`` is the slippage of a trade of 1% of the asset's average daily dollar volume
(see ``environments`` for the square-root impact rule that scales it with trade size).
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORIES: tuple[str, ...] = ("growth", "hedge", "traditional", "stable")

#: Per-category defaults: (fee in bps of traded notional, slippage in bps at 1% of daily volume).
DEFAULT_COSTS_BPS: dict[str, tuple[float, float]] = {
    "growth": (10.0, 5.0),
    "hedge": (5.0, 5.0),
    "traditional": (1.0, 1.0),
    "stable": (1.0, 0.5),
}


#: Periods a year of a universe quoted every day and of a weekday-only one.
PERIODS_7D = 365
PERIODS_WEEKDAY = 252


def periods_per_year(calendars: tuple[str, ...] | list[str]) -> int:
    """365 if any asset's calendar is ``"7d"`` (crypto, quoted every day), else 252 (weekday-only)."""
    return PERIODS_7D if any(c == "7d" for c in calendars) else PERIODS_WEEKDAY


def calendar_of(ticker: str) -> str:
    """``"7d"`` for assets quoted every day (tickers ending in ``-USD``), else ``"weekday"``."""
    return "7d" if ticker.upper().endswith("-USD") else "weekday"


@dataclass(frozen=True)
class Asset:
    """One tradable asset: its ticker, category, trading calendar and cost rates (bps)."""

    ticker: str
    category: str
    fee_bps: float
    slippage_bps: float

    @property
    def calendar(self) -> str:
        return calendar_of(self.ticker)


@dataclass(frozen=True)
class Universe:
    """An ordered tuple of assets. Order defines the asset axis of every array downstream."""

    assets: tuple[Asset, ...]

    @property
    def tickers(self) -> tuple[str, ...]:
        return tuple(a.ticker for a in self.assets)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(a.category for a in self.assets)

    def __len__(self) -> int:
        return len(self.assets)

    def subset(self, tickers: list[str] | tuple[str, ...]) -> Universe:
        keep = set(tickers)
        return Universe(tuple(a for a in self.assets if a.ticker in keep))


def build_universe(
    by_category: dict[str, list[str]],
    costs_bps: dict[str, tuple[float, float]] | None = None,
    substitutes: dict[str, str] | None = None,
) -> Universe:
    """Build a universe from ``{category: [tickers]}``.

    ``substitutes`` maps a paper ticker to the one actually used (``{"IEF": "TLT"}``); the substitute
    takes the original's place and category. Raises ``ValueError`` on an unknown category or a
    ticker listed twice.
    """
    costs = dict(DEFAULT_COSTS_BPS)
    costs.update(costs_bps or {})
    substitutes = substitutes or {}
    assets: list[Asset] = []
    seen: set[str] = set()
    for category, tickers in by_category.items():
        if category not in CATEGORIES:
            raise ValueError(
                f"unknown asset category '{category}'; expected one of {', '.join(CATEGORIES)}"
            )
        fee, slip = costs[category]
        for raw in tickers:
            ticker = substitutes.get(raw, raw).strip().upper()
            if ticker in seen:
                raise ValueError(f"ticker '{ticker}' appears twice in the universe")
            seen.add(ticker)
            assets.append(Asset(ticker, category, float(fee), float(slip)))
    if not assets:
        raise ValueError("the universe is empty")
    return Universe(tuple(assets))
