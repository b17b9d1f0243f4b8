"""A model registry folder: named versions of export directories, the active one, rollback, A/B split.

State lives in ``<root>/registry.json`` (rewritten atomically on every change)::

    {"versions": {"v1": {"path": "/abs/export_dir", "registered": "2026-...Z"}, ...},
     "active": "v2", "history": ["v1"], "ab": {"v2": 0.8, "v3": 0.2} | null}

- ``activate(name)`` makes ``name`` active and pushes the previous active version on ``history``.
- ``rollback()`` pops ``history`` and re-activates the previous version. ``history`` keeps the last
  ``MAX_HISTORY`` entries.
- ``remove(name)`` drops a version that is neither active nor in the A/B split.
- ``set_ab({name: weight})`` splits traffic between versions in proportion to the (positive) weights;
  ``choose(u)`` maps a uniform draw ``u`` in [0, 1) to a variant, so a seeded RNG gives a deterministic
  split. ``clear_ab()`` sends all traffic to the active version again.

Versions are referenced by absolute path (an export directory is never copied or modified).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

from data.atomic_files import atomic_write_text
from data.market import DataError

MAX_HISTORY = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(DataError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, ...)."""


class ModelRegistry:
    """Thread-safe registry persisted in ``root/registry.json``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._file = self.root / "registry.json"
        if self._file.exists():
            try:
                self.state = json.loads(self._file.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise RegistryError(f"registry file '{self._file}' is not valid JSON") from None
            for key in ("versions", "active", "history", "ab"):
                if key not in self.state:
                    raise RegistryError(f"registry file '{self._file}' lacks the key '{key}'")
            self.state["history"] = list(self.state["history"])[-MAX_HISTORY:]
        else:
            self.state = {"versions": {}, "active": None, "history": [], "ab": None}

    def _save(self) -> None:
        atomic_write_text(self._file, json.dumps(self.state, indent=2))

    @property
    def versions(self) -> dict[str, dict]:
        return dict(self.state["versions"])

    @property
    def active(self) -> str | None:
        return self.state["active"]

    @property
    def ab(self) -> dict[str, float] | None:
        return dict(self.state["ab"]) if self.state["ab"] else None

    def path_of(self, name: str) -> Path:
        self._require(name)
        return Path(self.state["versions"][name]["path"])

    def _require(self, name: str) -> None:
        if name not in self.state["versions"]:
            known = ", ".join(sorted(self.state["versions"])) or "none"
            raise RegistryError(f"unknown model version '{name}'; registered versions: {known}")

    def register(self, name: str, path: str | os.PathLike, activate_if_first: bool = True) -> None:
        """Add version ``name`` pointing at export directory ``path`` (must exist)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"version name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        p = Path(path).resolve()
        if not p.is_dir():
            raise RegistryError(f"export directory '{path}' does not exist")
        with self._lock:
            existing = self.state["versions"].get(name)
            if existing and existing["path"] != str(p):
                raise RegistryError(f"version '{name}' is already registered for '{existing['path']}'")
            self.state["versions"][name] = {
                "path": str(p), "registered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if activate_if_first and self.state["active"] is None:
                self.state["active"] = name
            self._save()

    def activate(self, name: str) -> None:
        """Make ``name`` the active version; the previous one can be restored with ``rollback``."""
        with self._lock:
            self._require(name)
            prev = self.state["active"]
            if prev == name:
                return
            if prev is not None:
                self.state["history"] = (self.state["history"] + [prev])[-MAX_HISTORY:]
            self.state["active"] = name
            self._save()

    def rollback(self) -> str:
        """Re-activate the version active before the last ``activate``; returns its name."""
        with self._lock:
            if not self.state["history"]:
                raise RegistryError("there is no previous version to roll back to")
            name = self.state["history"].pop()
            self.state["active"] = name
            self._save()
            return name

    def set_ab(self, split: dict[str, float]) -> None:
        """Split traffic between >= 2 registered versions by positive weights (normalised to sum 1)."""
        if not isinstance(split, dict) or len(split) < 2:
            raise RegistryError("an A/B split needs at least two versions with weights")
        with self._lock:
            for name, w in split.items():
                self._require(name)
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf"):
                    raise RegistryError(f"A/B weight of '{name}' must be a positive finite number")
            top = max(float(v) for v in split.values())  # scale first: 1e308 + 1e308 would overflow
            scaled = {k: float(v) / top for k, v in split.items()}
            total = sum(scaled.values())
            self.state["ab"] = {k: v / total for k, v in scaled.items()}
            self._save()

    def remove(self, name: str) -> None:
        """Forget an inactive version (its export folder is left alone)."""
        with self._lock:
            self._require(name)
            if name == self.state["active"] or name in (self.state["ab"] or {}):
                raise RegistryError(f"version '{name}' is active or in the A/B split; activate another first")
            del self.state["versions"][name]
            self.state["history"] = [h for h in self.state["history"] if h != name]
            self._save()

    def clear_ab(self) -> None:
        with self._lock:
            self.state["ab"] = None
            self._save()

    def choose(self, u: float) -> str:
        """The version serving a request given a uniform draw ``u`` in [0, 1)."""
        with self._lock:
            ab = self.state["ab"]
            if not ab:
                if self.state["active"] is None:
                    raise RegistryError("no model version is active")
                return self.state["active"]
            acc = 0.0
            for name, w in ab.items():
                acc += w
                if u < acc:
                    return name
            return name  # u within rounding of 1
