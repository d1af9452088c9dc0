"""The few I/O calls whose asyncio and blocking forms differ by more than ``await`` (the
sync twin is ``_sync/_io.py``, written by hand)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection

from .. import errors


async def recv_frame(socket: ClientConnection, timeout: float | None) -> str | bytes:
    """The next WebSocket frame, waiting at most ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(socket.recv(), timeout)
    except asyncio.TimeoutError as exc:
        raise errors.SandpitTimeoutError(f"nothing received within {timeout} s") from exc
