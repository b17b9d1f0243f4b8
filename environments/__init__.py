"""The environments layer: ``CryptoHedgeFundEnv`` (one portfolio, a ``gymnasium.Env``), ``BatchedHedgeFundEnv``
(M portfolios in one vectorised step, a ``gymnasium.vector.VectorEnv``) and their ``EnvConfig``.

``env = CryptoHedgeFundEnv(prices, features)`` is the paper's signature; ``from_store`` builds one from a
feature store. Names are imported on first use (PEP 562), so ``import environments`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "CryptoHedgeFundEnv": "environments.crypto_hedge_fund_env",
    "BatchedHedgeFundEnv": "environments.vector_env",
    "EnvConfig": "environments.config",
}
__all__ = ["BatchedHedgeFundEnv", "CryptoHedgeFundEnv", "EnvConfig"]

if TYPE_CHECKING:
    from environments.config import EnvConfig
    from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv
    from environments.vector_env import BatchedHedgeFundEnv


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'environments' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
