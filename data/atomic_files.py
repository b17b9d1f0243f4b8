"""Writing files so that a reader never sees half of one: a temp file in the same folder, then a rename.

One definition for every layer (data caches, agent files, run records, reports, study results):

- ``atomic_write_bytes(path, data)`` / ``atomic_write_text(path, text)``: write to ``.{name}.*.tmp`` beside
  ``path`` (parents created), give it the usual new-file mode (``0o666 & ~umask``; ``mkstemp`` makes it
  owner-only) and ``os.replace`` it onto ``path``. On any failure the temp file is removed and ``path`` keeps
  its previous content. Text is written as given (UTF-8, no newline translation).
- ``with atomic_path(path) as tmp:``: for writers that need a file name (``fig.savefig``, ``frame.to_csv``,
  ``torch.save``, a library writing HTML): ``tmp`` is ``.{name}.*.tmp{suffix}`` beside ``path`` (parents
  created; ``suffix`` defaults to ``path``'s, so matplotlib picks the format); on normal exit it is published
  onto ``path``, on any exception removed (``path`` keeps its previous content) and the exception re-raised.
- ``publish(tmp, path)``: the last step alone: the usual new-file mode, then ``os.replace``.
- Folders (feature stores, exports, copied runs): ``data.atomic_dir`` (``make_temp_dir``, ``publish_dir``).
- ``json_safe(obj)`` / ``write_json(path, obj)``: JSON with NaN and infinities as ``null`` (an undefined
  Sortino, say), numpy scalars and arrays as plain numbers and lists, keys as strings; indent 2, final newline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def usual_mode(folder: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` gives under the process umask: ``0o666`` (``0o777`` for a folder)
    ``& ~umask`` (``mkstemp``/``mkdtemp`` make owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the usual new-file mode and rename it onto ``path`` (same folder: atomic)."""
    os.chmod(tmp, usual_mode())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A temp file name beside ``path`` for a writer that needs one; published onto ``path`` when the block
    ends normally, removed (``path`` untouched) when it raises.

    The temp is ``.{name}.XXXXXXXX.tmp{suffix}`` (``suffix`` defaults to ``path``'s, e.g. ``.png``), created
    empty so no other writer can take the name; parents of ``path`` are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{ending}")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file beside it and a rename (temp removed on failure)."""
    with atomic_path(path, suffix="") as tmp:
        tmp.write_bytes(data)


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
