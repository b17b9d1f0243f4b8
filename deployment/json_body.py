"""Strict JSON request bodies, and a worker process that parses the big ones.

``loads(raw)``: JSON with no NaN/Infinity, no number that overflows a float, no integer longer than
``MAX_INT_DIGITS`` digits, nesting at most ``MAX_JSON_DEPTH``; anything else is a ``BodyError`` (400).
``numbers(values, what)``: a list whose entries are all JSON numbers (not booleans, not strings;
422 otherwise). ``parse_big(raw)`` runs in ``BigBodyParser``'s worker process: ``json.loads`` holds the
GIL for the whole parse (~60 ms for 3 MB), which would stall the event loop and every other request
(/healthz included) if done in a thread; the worker returns the object with ``observation`` already
checked and converted to a float32 array (cheap to send back).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from data.market import DataError

MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 20
#: Bodies at least this large are parsed in the worker process.
BIG_BODY_BYTES = 64_000


class BodyError(DataError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text[:20]} is out of range")
    return v


def _parse_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _depth_ok(raw: bytes) -> bool:
    """Nesting of ``raw`` at most ``MAX_JSON_DEPTH`` (brackets outside strings; a byte scan)."""
    depth = 0
    in_str = esc = False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 92:  # backslash
                esc = True
            elif b == 34:
                in_str = False
        elif b == 34:
            in_str = True
        elif b in (91, 123):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif b in (93, 125):
            depth -= 1
    return True


def loads(raw: bytes) -> Any:
    """Strict JSON (see the module doc); ``BodyError`` 400 otherwise."""
    opens = raw.count(b"[") + raw.count(b"{")
    if opens > MAX_JSON_DEPTH and not _depth_ok(raw):
        raise BodyError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BodyError(400, f"request body is not valid JSON ({err.__class__.__name__}: {str(err)[:120]})") from None
    except (ValueError, RecursionError) as err:
        raise BodyError(400, f"request body is not acceptable JSON ({str(err)[:120]})") from None


def numbers(values: Any, what: str) -> list:
    """``values`` (a flat list, or one row ``[[...]]``) if every entry is a JSON number; else 422."""
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if not isinstance(values, list):
        raise BodyError(422, f"{what} must be a list of numbers")
    for i, v in enumerate(values):
        if type(v) is not float and type(v) is not int:
            raise BodyError(422, f"{what} must hold only numbers; entry {i} is {type(v).__name__}")
    return values


def parse_big(raw: bytes) -> tuple[int, Any]:
    """Worker side: ``(200, object)`` with ``observation`` as float32 (n,), or ``(status, sentence)``."""
    try:
        body = loads(raw)
        if isinstance(body, dict) and isinstance(body.get("observation"), list):
            body["observation"] = np.asarray(numbers(body["observation"], "observation"), dtype=np.float64) \
                .astype(np.float32)
        return 200, body
    except BodyError as err:
        return err.status, str(err)


def _ready() -> bool:
    return True


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a daemon thread ends the worker once its server process is gone (a server killed
    with SIGKILL never shuts its pool down, and the orphaned worker would otherwise wait forever)."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


class BigBodyParser:
    """One spawned worker process for big JSON bodies (started at once so the first request is not slow)."""

    def __init__(self) -> None:
        import multiprocessing

        self.pool = self._new_pool(multiprocessing.get_context("spawn"))
        self.pool.submit(_ready)

    @staticmethod
    def _new_pool(context: Any) -> ProcessPoolExecutor:
        import os

        return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_exit_with_parent,
                                   initargs=(os.getpid(),))

    async def parse(self, raw: bytes) -> Any:
        import asyncio
        from concurrent.futures.process import BrokenProcessPool

        try:
            status, out = await asyncio.get_running_loop().run_in_executor(self.pool, parse_big, raw)
        except BrokenProcessPool:  # the worker died (killed, out of memory): start a new one
            self.pool = self._new_pool(self.pool._mp_context)
            raise BodyError(503, "the JSON parser restarted; retry the request") from None
        if status != 200:
            raise BodyError(status, out)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
