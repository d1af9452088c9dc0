"""The few I/O calls whose asyncio and blocking forms differ by more than ``await`` (the
sync twin is ``_sync/_io.py``, written by hand)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

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


# What ``stdin_stream`` accepts: chunks (str is sent as UTF-8, bytes as they are), in order.
StdinSource = AsyncIterable[str | bytes] | Iterable[str | bytes] | str | bytes


async def iterate(source: StdinSource) -> AsyncIterator[str | bytes]:
    """The chunks of ``source`` (a lone str/bytes is one chunk, not its characters)."""
    if isinstance(source, (str, bytes)):
        yield source
    elif isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
    else:
        for chunk in source:
            yield chunk


def start_pump(work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> asyncio.Task[None]:
    """Runs ``work(*args)`` beside the caller (the blocking client uses a thread)."""
    return asyncio.ensure_future(work(*args))


async def stop_pump(task: asyncio.Task[None]) -> None:
    """Stops what ``start_pump`` started, if it still runs."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
