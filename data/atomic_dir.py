"""Temporary output folders that do not outlive a failed, interrupted or killed write.

Folder outputs (feature stores, exports, a walk-forward fold's ``best`` run) are built under
``.<name>.tmp-<pid>-XXXX`` next to the target and swapped into place (``publish_dir``); the writer removes the
folder in a ``finally`` on any exception.

- ``make_temp_dir(out)`` first removes siblings ``.<name>.tmp-<pid>-*`` left by processes that no
  longer run (a ``kill -9`` or a power cut leaves them), then creates the new one.
- ``publish_dir(tmp, out)`` swaps the finished folder in: it gets the usual new-folder mode
  (``0o777 & ~umask``; ``mkdtemp`` makes it owner-only), an existing ``out`` is moved into a
  ``.<name>.old-<pid>-XXXX`` trash folder, ``tmp`` renamed onto ``out`` (the previous ``out`` put back if
  that fails) and the trash removed either way.
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

from data.atomic_files import usual_mode

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


def publish_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Replace the folder ``out`` (if any) by the finished folder ``tmp`` beside it; see the module docstring.

    On failure ``out`` is as it was (or still absent) and ``tmp`` is left for the caller's ``finally``.
    """
    tmp, out = Path(tmp), Path(out)
    tmp.chmod(usual_mode(folder=True))
    if not out.exists():
        tmp.rename(out)
        return
    trash = make_temp_dir(out, "old")
    try:
        out.rename(trash / out.name)
        try:
            tmp.rename(out)
        except BaseException:
            if not out.exists():
                (trash / out.name).rename(out)  # put the previous folder back
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


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
