"""The few I/O calls whose asyncio and blocking forms differ by more than ``await`` (the
sync twin is ``_sync/_io.py``, written by hand)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect

from .. import errors


async def open_socket(
    url: str, headers: dict[str, str], open_timeout: float | None
) -> ClientConnection:
    """A WebSocket client connection (no message size limit: terminal output is unbounded)."""
    return await connect(url, additional_headers=headers, max_size=None, open_timeout=open_timeout)


async def recv_frame(socket: ClientConnection, timeout: float | None) -> str | bytes:
    """The next WebSocket frame, waiting at most ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(socket.recv(), timeout)
    except asyncio.TimeoutError as exc:
        raise errors.SandpitTimeoutError(f"nothing received within {timeout} s") from exc
