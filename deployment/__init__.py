"""The deployment layer: export (TorchScript, ONNX, TF SavedModel), serving and risk controls.

``from deployment import DeployedCryptoHedgeFund`` is resolved on first use (PEP 562), so importing the
package does not load TensorFlow or the serving stack::

    fund = DeployedCryptoHedgeFund('policy.pth', 'config.json')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {"DeployedCryptoHedgeFund": "deployment.deployed_fund"}
__all__ = ["DeployedCryptoHedgeFund"]

if TYPE_CHECKING:
    from deployment.deployed_fund import DeployedCryptoHedgeFund


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deployment' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
