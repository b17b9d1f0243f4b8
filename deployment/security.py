"""Who may change the server's state: a bearer token, same-origin JSON only, loopback without a token.

- ``load_token(token_file)``: the token from ``--token-file`` (first line, stripped) or, without one, the
  ``DRL_SERVER_TOKEN`` environment variable; None when neither is set. A token shorter than
  ``MIN_TOKEN_CHARS`` is refused (guessable).
- ``check_bind(host, token)``: binding anything but a loopback address without a token is refused.
- ``check_write(headers, token, origins, has_body)``: for state-changing endpoints:
  ``Authorization: Bearer <token>`` (constant-time comparison; 401, and always 401 on a server started
  without a token: it is read-only), ``Content-Type: application/json`` when a body is sent (415; a web
  page can post ``text/plain`` cross-origin without a preflight), and no foreign ``Origin`` (403; a
  page in the operator's browser must not drive the server).

Every failure is a ``SecurityError`` with an HTTP status and one sentence; the token never appears in
a message.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from data.market import DataError

TOKEN_ENV = "DRL_SERVER_TOKEN"
MIN_TOKEN_CHARS = 16


class SecurityError(DataError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_token(token_file: str | None) -> str | None:
    """The server (or client) token; ``DataError`` on an unreadable or too short one."""
    if token_file:
        p = Path(token_file)
        if not p.is_file():
            raise DataError(f"token file '{token_file}' does not exist")
        try:
            lines = p.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError):
            raise DataError(f"token file '{token_file}' cannot be read as text") from None
        token = lines[0].strip() if lines else ""
        where = f"token file '{token_file}'"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        where = f"${TOKEN_ENV}"
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise DataError(f"the token in {where} must be at least {MIN_TOKEN_CHARS} printable characters "
                        "without spaces")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise DataError(f"refusing to listen on {host} without a token: anyone on the network could change "
                        f"the live model; give --token-file or set {TOKEN_ENV}, or bind 127.0.0.1")


def allowed_origins(host: str, port: int) -> frozenset[str]:
    """Origins of pages served by this server itself (same origin)."""
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{scheme}://{h}:{port}" for h in names for scheme in ("http", "https"))


def check_write(headers: Mapping[str, str], token: str | None, origins: frozenset[str], has_body: bool) -> None:
    """Raise ``SecurityError`` unless a state-changing request may proceed (see the module doc)."""
    origin = headers.get("origin")
    if origin is not None and origin not in origins:
        raise SecurityError(403, "cross-origin requests may not change the server's state")
    if token is None:
        raise SecurityError(401, "this server was started without a token, so its state cannot be changed; "
                                 f"restart it with --token-file or ${TOKEN_ENV}")
    auth = headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise SecurityError(401, "this endpoint needs the server's token: send 'Authorization: Bearer <token>'")
    ctype = headers.get("content-type")
    if has_body or ctype is not None:
        kind = (ctype or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise SecurityError(415, f"content type '{kind or 'none'}' is not accepted here; send application/json")
