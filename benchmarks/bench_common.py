"""Shared by the benchmark scripts (imported as ``bench_common``: a script's folder is on ``sys.path``)."""

#: All 21 tickers of ../shared/data/market by category (TLT stands in for IEF, SHY for SHV).
UNIVERSE = {
    "growth": ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "DOT-USD", "AVAX-USD", "LINK-USD", "XRP-USD",
               "LTC-USD", "DOGE-USD"],
    "hedge": ["BITO", "UVXY"],
    "traditional": ["SPY", "QQQ", "GLD", "BND", "TLT"],
    "stable": ["BIL", "SHY", "USDT-USD", "USDC-USD"],
}
