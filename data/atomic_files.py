"""Writing files so that a reader never sees half of one: a temp file in the same folder, then a rename.

One definition for every layer (data caches, agent files, run records, reports, study results):

- ``atomic_write_bytes(path, data)`` / ``atomic_write_text(path, text)``: write to ``.{name}.*.tmp`` beside
  ``path`` (parents created), give it the usual new-file mode (``0o666 & ~umask``; ``mkstemp`` makes it
  owner-only) and ``os.replace`` it onto ``path``. On any failure the temp file is removed and ``path`` keeps
  its previous content. Text is written as given (UTF-8, no newline translation).
- ``publish(tmp, path)``: the last step alone, for writers that need a file name (a library writing HTML).
- ``json_safe(obj)`` / ``write_json(path, obj)``: JSON with NaN and infinities as ``null`` (an undefined
  Sortino, say), numpy scalars and arrays as plain numbers and lists, keys as strings; indent 2, final newline.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the usual new-file mode and rename it onto ``path`` (same folder: atomic)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file beside it and a rename (temp removed on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, exactly as given) to ``path`` via a temp file beside it and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None, numpy scalars/arrays as Python numbers/lists, dict keys as str."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as JSON (``json_safe``; indent 2, final newline) at ``path``, atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
