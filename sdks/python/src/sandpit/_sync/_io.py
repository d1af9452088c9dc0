"""The blocking twin of ``_async/_io.py`` (written by hand, not generated)."""

from __future__ import annotations

import inspect
from typing import Any

from websockets.sync.client import ClientConnection, connect

from .. import errors

# websockets 17 warns unless a connection kept outside a `with` block says so (`legacy`).
_DIRECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
)


def open_socket(url: str, headers: dict[str, str], open_timeout: float | None) -> ClientConnection:
    """A WebSocket client connection (no message size limit: terminal output is unbounded)."""
    socket: ClientConnection = connect(
        url, additional_headers=headers, max_size=None, open_timeout=open_timeout, **_DIRECT
    )
    return socket


def recv_frame(socket: ClientConnection, timeout: float | None) -> str | bytes:
    """The next WebSocket frame, waiting at most ``timeout`` seconds."""
    try:
        return socket.recv(timeout)
    except TimeoutError as exc:
        raise errors.SandpitTimeoutError(f"nothing received within {timeout} s") from exc
