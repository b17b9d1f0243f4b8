"""Temporary output folders that do not outlive a failed, interrupted or killed write.

Folder outputs (feature stores, exports) are built under ``.<name>.tmp-<pid>-XXXX`` next to the target
and renamed into place; the writer removes the folder in a ``finally`` on any exception.

- ``make_temp_dir(out)`` first removes siblings ``.<name>.tmp-<pid>-*`` left by processes that no
  longer run (a ``kill -9`` or a power cut leaves them), then creates the new one.
- ``@sigterm_interrupts`` turns SIGTERM (what ``kill``, ``timeout`` and job schedulers send) into
  ``SystemExit`` while the decorated function runs in the main thread, so its ``finally`` clean-up runs
  as it does for Ctrl-C; the previous handler is restored afterwards.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(out: Path) -> list[Path]:
    """Remove ``.<out.name>.tmp-<pid>-*`` folders next to ``out`` whose process is gone; returns them."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)-")
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def make_temp_dir(out: Path, kind: str = "tmp") -> Path:
    """A new empty folder ``.<out.name>.<kind>-<pid>-XXXX`` next to ``out`` (stale ones swept first)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}-", dir=out.parent))


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def sigterm_interrupts(fn: F) -> F:
    """Run ``fn`` with SIGTERM raising ``SystemExit`` (main thread only; elsewhere ``fn`` runs as is)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _raise_exit)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]
