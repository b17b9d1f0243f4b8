"""The one import shim for technical-analysis indicators.

``pandas_ta`` needs Python >= 3.12; below that its maintained fork ``pandas_ta_classic`` offers the same
functional API (``ta.rsi(close, length=14)``) and registers the same ``df.ta`` DataFrame accessor.
Everything in the project imports ``ta`` from here, never either package directly.
"""

from __future__ import annotations

import logging
import sys

if sys.version_info >= (3, 12):  # pragma: no cover - depends on the interpreter
    import pandas_ta as ta
else:
    import pandas_ta_classic as ta

# "Series has 170 rows but indicator requires at least 200. Returning None." is expected for assets
# listed late (the caller turns None into NaN); keep it off the console.
logging.getLogger(ta.__name__).setLevel(logging.ERROR)

__all__ = ["ta"]
