"""The blocking twin of ``_async/_io.py`` (written by hand, not generated)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Iterator
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


# What ``stdin_stream`` accepts: chunks (str is sent as UTF-8, bytes as they are), in order.
StdinSource = Iterable[str | bytes] | str | bytes


def iterate(source: StdinSource) -> Iterator[str | bytes]:
    """The chunks of ``source`` (a lone str/bytes is one chunk, not its characters)."""
    if isinstance(source, (str, bytes)):
        yield source
    else:
        yield from source


def start_pump(work: Callable[..., None], *args: Any) -> threading.Thread:
    """Runs ``work(*args)`` in a thread, beside the caller's reads (a daemon thread: it ends
    when the socket it writes to is closed, or with the program if the iterable blocks)."""
    thread = threading.Thread(target=work, args=args, daemon=True, name="sandpit-stdin")
    thread.start()
    return thread


def stop_pump(thread: threading.Thread) -> None:
    """A thread cannot be cancelled: the caller closes its socket next, which ends it."""
    thread.join(timeout=0)
