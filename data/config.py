"""Typed configuration for the data layer and a strict dataclass-from-dict loader shared by all layers.

A YAML config has one section per layer (``data``, ``env``, ``agent``, ``training``, ...). Each
layer owns a frozen dataclass; ``from_mapping`` builds it and rejects unknown or mistyped keys with
one sentence, so a typo in a config never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from data.market import DataError
from data.universe import Universe, build_universe

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except DataError as err:
                errors.append(str(err))
        raise DataError(errors[0] if errors else f"{where} has an invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DataError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where} must be a list, got {type(value).__name__}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise DataError(f"{where} must be a mapping, got {type(value).__name__}")
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, where): _coerce(v, vtp, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise DataError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise DataError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys or wrong types raise ``DataError``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise DataError(
            f"unknown key '{unknown[0]}' in {where}; allowed keys are {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in mapping.items()}
    return cls(**kwargs)  # type: ignore[call-arg]


def to_mapping(obj: Any) -> Any:
    """The inverse of ``from_mapping``: plain dicts/lists/scalars, JSON- and YAML-safe."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_mapping(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class DataConfig:
    """Where the prices come from and which span and universe to use.

    - ``universe``: ``{category: [tickers]}`` with categories growth/hedge/traditional/stable.
    - ``substitutes``: ``{paper_ticker: used_ticker}``, e.g. ``{IEF: TLT}``.
    - ``start``/``end``/``train_end``: ISO dates; normalisation statistics use days ``<= train_end``.
    - ``risk_free``: ticker of the T-bill leg used as the risk-free rate, or ``""`` for
      ``risk_free_rate`` (annual, decimal).
    - ``min_history_days``: an asset needs this many quotes inside the span to be kept.
    """

    universe: dict[str, list[str]] = field(default_factory=dict)
    substitutes: dict[str, str] = field(default_factory=dict)
    costs_bps: dict[str, list[float]] = field(default_factory=dict)
    start: str = "2018-01-01"
    end: str = "2023-12-31"
    train_end: str = "2022-12-31"
    source: str = "synthetic"
    data_dir: str = ""
    cache_dir: str = ""
    seed: int = 0
    risk_free: str = "BIL"
    risk_free_rate: float = 0.04
    min_history_days: int = 120
    clip: float = 10.0

    def build_universe(self) -> Universe:
        costs = {k: (float(v[0]), float(v[1])) for k, v in self.costs_bps.items()}
        try:
            return build_universe(self.universe, costs, self.substitutes)
        except ValueError as err:
            raise DataError(str(err)) from None


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ``DataError`` with one sentence."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
    except FileNotFoundError:
        raise DataError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as err:
        raise DataError(f"config file '{path}' is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"config file '{path}' must hold a mapping of sections")
    return loaded
