"""Shared by the benchmark scripts (imported as ``bench_common``: a script's folder is on ``sys.path``)."""

from pathlib import Path

from data.config import DataConfig

#: The shared real-data folder beside the repository (``../shared/data/market``).
DEFAULT_DATA_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "market")

#: All 21 tickers of ../shared/data/market by category (TLT stands in for IEF, SHY for SHV).
UNIVERSE = {
    "growth": ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "DOT-USD", "AVAX-USD", "LINK-USD", "XRP-USD",
               "LTC-USD", "DOGE-USD"],
    "hedge": ["BITO", "UVXY"],
    "traditional": ["SPY", "QQQ", "GLD", "BND", "TLT"],
    "stable": ["BIL", "SHY", "USDT-USD", "USDC-USD"],
}


def real_data_config(source: str = "csv", data_dir: str = DEFAULT_DATA_DIR) -> DataConfig:
    """The benchmarks' common span: all 21 tickers, 2019-01-01..2023-12-31, statistics fitted to 2022-12-31."""
    return DataConfig(universe=UNIVERSE, start="2019-01-01", end="2023-12-31", train_end="2022-12-31",
                      source=source, data_dir=data_dir, risk_free="")
