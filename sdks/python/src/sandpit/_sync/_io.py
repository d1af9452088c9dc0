"""The blocking twin of ``_async/_io.py`` (written by hand, not generated)."""

from __future__ import annotations

from websockets.sync.client import ClientConnection

from .. import errors


def recv_frame(socket: ClientConnection, timeout: float | None) -> str | bytes:
    """The next WebSocket frame, waiting at most ``timeout`` seconds."""
    try:
        return socket.recv(timeout)
    except TimeoutError as exc:
        raise errors.SandpitTimeoutError(f"nothing received within {timeout} s") from exc
