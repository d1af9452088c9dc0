"""What the sync and the async client share and that does no I/O: configuration, request
bodies, the SSE decoder, and turning error answers into typed exceptions."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from . import errors
from ._models import JSON

DEFAULT_URL = "http://127.0.0.1:7070"
# The session token that makes the agent run commands without a session (the seed's).
SESSIONLESS = "__DISABLE_SESSION__"
_RESERVED_IDS = {"www", "api", "admin", "root", "system", "cloudflare", "workers"}
_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def resolve_config(url: str | None, api_key: str | None) -> tuple[str, str]:
    """The server URL and key: arguments first, then ``SANDPIT_URL`` / ``SANDPIT_KEY``."""
    base = (url or os.environ.get("SANDPIT_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("SANDPIT_KEY")
    if not key:
        raise errors.UnauthorizedError(
            "no API key: pass api_key= or set SANDPIT_KEY", http_status=0
        )
    return base, key


def http_timeout(connect: float, read: float | None) -> httpx.Timeout:
    """Connecting fails fast (a down server is an error within ``connect`` seconds); reading has
    no limit by default because a command may legitimately run for hours (its own ``timeout``
    bounds it on the server)."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=None)


def check_sandbox_id(sandbox_id: str, normalize: bool = False) -> str:
    """The seed's id rule (1-63 letters, digits, ``-``; no leading/trailing ``-``; not reserved)."""
    if normalize:
        sandbox_id = sandbox_id.lower()
    if not _ID_RE.match(sandbox_id) or sandbox_id.lower() in _RESERVED_IDS:
        raise errors.ValidationFailedError(
            f"invalid sandbox id {sandbox_id!r}: 1-63 letters, digits and '-', not starting or "
            f"ending with '-', not one of {sorted(_RESERVED_IDS)}",
            context={"sandboxId": sandbox_id},
        )
    return sandbox_id


def quote_id(value: str) -> str:
    """An id as one path segment."""
    return quote(value, safe="")


def sandbox_path(sandbox_id: str) -> str:
    return f"/v1/sandboxes/{quote(sandbox_id, safe='')}"


def file_path(path: str) -> str:
    """The raw file route's ``{path}``: one percent-encoded segment, so an absolute path keeps
    its leading slash (``%2Fetc``) and ``..`` reaches the sandbox unresolved."""
    return quote(path, safe="")


def duration_ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, round(seconds * 1000))


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def drop_none(body: Mapping[str, Any]) -> JSON:
    return {key: value for key, value in body.items() if value is not None}


@dataclass(frozen=True)
class SandboxOptions:
    """Options applied by create-or-get when a sandbox handle is first used."""

    image: str | None = None
    sleep_after: str | int | None = None
    keep_alive: bool | None = None
    env: Mapping[str, str] | None = None
    limits: Mapping[str, Any] | None = None
    network: Mapping[str, Any] | None = None
    secrets: Mapping[str, Any] | None = None
    ephemeral: bool | None = None
    keep_alive_while_busy: bool | None = None
    labels: Mapping[str, str | None] | None = None
    ttl: str | int | None = None
    snapshot: str | None = None

    def create_body(self, sandbox_id: str) -> JSON:
        return drop_none(
            {
                "id": sandbox_id,
                "image": self.image,
                "sleepAfter": self.sleep_after,
                "keepAlive": self.keep_alive,
                "env": dict(self.env) if self.env is not None else None,
                "limits": limits_body(self.limits),
                "network": dict(self.network) if self.network is not None else None,
                "secrets": secrets_body(self.secrets),
                "ephemeral": self.ephemeral,
                "keepAliveWhileBusy": self.keep_alive_while_busy,
                "labels": dict(self.labels) if self.labels is not None else None,
                "ttl": self.ttl,
                "snapshot": self.snapshot,
            }
        )


def label_params(labels: Mapping[str, str] | None) -> list[str]:
    """The ``label`` query values (``k=v``, repeated) of a list filter: all must match."""
    return [f"{key}={value}" for key, value in (labels or {}).items()]


_LIMIT_NAMES = {"cpus": "cpus", "memory_mb": "memoryMb", "pids": "pids", "disk_mb": "diskMb"}


def limits_body(limits: Mapping[str, Any] | None) -> JSON | None:
    """Limits in snake_case (``memory_mb``) or wire case (``memoryMb``)."""
    if limits is None:
        return None
    return {_LIMIT_NAMES.get(name, name): value for name, value in limits.items()}


def secrets_body(secrets: Mapping[str, Any] | None) -> JSON | None:
    """Secrets as ``{"NAME": {"value", "hosts", "header"?}}`` (a secret always names the hosts
    it may be sent to)."""
    if secrets is None:
        return None
    return {name: drop_none(dict(spec)) for name, spec in secrets.items()}


def exec_body(
    command: str,
    session_id: str | None,
    *,
    timeout: float | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: str | bytes | None,
) -> JSON:
    body = drop_none(
        {
            "command": command,
            "sessionId": session_id,
            "timeoutMs": duration_ms(timeout),
            "env": dict(env) if env is not None else None,
            "cwd": cwd,
        }
    )
    if isinstance(stdin, bytes):
        body["stdinBase64"] = base64.b64encode(stdin).decode()
    elif stdin is not None:
        body["stdin"] = stdin
    return body


def error_from_response(status: int, body: bytes, reason: str = "") -> errors.SandpitError:
    """The typed exception of an error answer (the envelope ``{code, message, context}``)."""
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), str):
        text = body.decode("utf-8", "replace").strip()[:200]
        return errors.InternalError(
            f"HTTP error! status: {status}{' ' + reason if reason else ''}"
            + (f": {text}" if text else ""),
            http_status=status,
        )
    return error_from_envelope(envelope, status)


def error_from_envelope(envelope: JSON, status: int | None = None) -> errors.SandpitError:
    """The typed exception of an error envelope ``{code, message, context, httpStatus?}``."""
    code = str(envelope["code"])
    message = str(envelope.get("message") or envelope.get("error") or code)
    context = envelope.get("context")
    if status is None:
        given = envelope.get("httpStatus")
        status = given if isinstance(given, int) else None
    cls = errors.error_class(code)
    return cls(
        message,
        code=code,
        http_status=status,
        context=context if isinstance(context, dict) else {},
    )


def connection_error(exc: httpx.TransportError, base_url: str) -> errors.SandpitError:
    """A transport failure as the SDK's error: unreachable server vs a read that timed out."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return errors.SandpitTimeoutError(f"request to {base_url} timed out: {exc}")
    return errors.SandpitConnectionError(f"cannot reach sandpit at {base_url}: {exc}")


# One decoded SSE event: its JSON, or the typed error of an ``event: error`` envelope.
SSEItem = JSON | errors.SandpitError


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder: feed bytes, get the JSON of each complete
    ``data:`` event (the container protocol sends one JSON object per event). An event named
    ``error`` whose data is an error envelope (``code``: the server ends a stream that a stop or
    destroy of its sandbox cut short with one, ``OPERATION_INTERRUPTED``) comes out as the
    envelope's typed exception instead, for the caller to raise."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEItem]:
        self._buffer += chunk
        events: list[SSEItem] = []
        while True:
            end, skip = _event_end(self._buffer)
            if end < 0:
                return events
            raw, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            event = _parse_event(raw)
            if event is not None:
                events.append(event)

    def finish(self) -> list[SSEItem]:
        """The last event when the stream ended without a blank line after it."""
        rest, self._buffer = self._buffer, b""
        event = _parse_event(rest) if rest.strip() else None
        return [event] if event is not None else []


def _event_end(buffer: bytes) -> tuple[int, int]:
    positions = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
    found = [(pos, size) for pos, size in positions if pos >= 0]
    return min(found) if found else (-1, 0)


def _parse_event(raw: bytes) -> SSEItem | None:
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    data = [line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:")]
    names = [line[6:].strip() for line in lines if line.startswith(b"event:")]
    if not data:
        return None
    return _decode_event(b"\n".join(data), names[-1] if names else b"")


def _decode_event(data: bytes, name: bytes) -> SSEItem:
    """One event's JSON, or the typed error of an ``error`` event carrying an envelope."""
    try:
        event = json.loads(data)
    except ValueError:
        return {"type": "error", "error": "malformed event: " + repr(data[:100])}
    if not isinstance(event, dict):
        return {"type": "data", "data": event}
    if name == b"error" and isinstance(event.get("code"), str):
        return error_from_envelope(event)
    return event


# --- the WebSocket control transport (``exec(..., stdin_stream=...)``) ---------------------


def stream_frame_event(frame: JSON) -> SSEItem:
    """The event of a control-transport ``stream`` frame (one SSE event: ``data``, ``event``?)."""
    return _decode_event(
        str(frame.get("data", "")).encode(), str(frame.get("event") or "").encode()
    )


def transport_error(frame: JSON) -> errors.SandpitError:
    """The typed exception of a control-transport ``error`` frame (``INVALID_REQUEST``…: the
    frame was refused; a request error is a ``response`` frame with an envelope instead)."""
    envelope = {
        "code": "VALIDATION_FAILED",
        "message": f"exec_stream: {frame.get('message', '')}",
        "context": {"transportCode": frame.get("code")},
    }
    status = frame.get("status")
    return error_from_envelope(envelope, status if isinstance(status, int) else 400)


def stdin_frame(request_id: str, chunk: str | bytes) -> JSON:
    """A ``stdin`` frame of request ``request_id``: text as ``data``, bytes as ``dataBase64``."""
    if isinstance(chunk, bytes):
        return {"type": "stdin", "id": request_id, "dataBase64": b64encode(chunk)}
    return {"type": "stdin", "id": request_id, "data": chunk}


def check_stdin_choice(stdin: object, stdin_stream: object) -> None:
    if stdin is not None and stdin_stream is not None:
        raise errors.ValidationFailedError(
            "give either stdin (all at once) or stdin_stream (while the command runs), not both",
            code="VALIDATION_FAILED",
        )


# --- the seed system's calls this server does not serve -------------------------------------

MOUNT_ALTERNATIVE = (
    "pass the S3 API endpoint and credentials: mount_bucket(bucket, path, endpoint=..., "
    "credentials={...})"
)


def credentials_from_env() -> JSON | None:
    """The seed's fallback keys of ``mount_bucket``: ``AWS_*``, then ``R2_*`` (None: neither
    is set; the server then answers ``MISSING_CREDENTIALS``)."""
    for prefix in ("AWS", "R2"):
        key = os.environ.get(f"{prefix}_ACCESS_KEY_ID")
        secret = os.environ.get(f"{prefix}_SECRET_ACCESS_KEY")
        if key and secret:
            return {"accessKeyId": key, "secretAccessKey": secret}
    return None


def mount_body(
    bucket: str,
    mount_path: str,
    endpoint: str,
    credentials: Mapping[str, str] | None,
    prefix: str | None,
    read_only: bool,
    region: str | None,
    provider: str | None,
) -> JSON:
    """The body of ``POST /v1/sandboxes/{id}/mounts`` (credentials in the seed's camelCase or
    as ``access_key_id``/``secret_access_key``)."""
    keys: JSON | None = credentials_from_env()
    if credentials is not None:
        keys = {
            "accessKeyId": credentials.get("accessKeyId", credentials.get("access_key_id", "")),
            "secretAccessKey": credentials.get(
                "secretAccessKey", credentials.get("secret_access_key", "")
            ),
        }
    return drop_none(
        {
            "bucket": bucket,
            "mountPath": mount_path,
            "endpoint": endpoint,
            "credentials": keys,
            "prefix": prefix,
            "readOnly": read_only,
            "region": region,
            "provider": provider,
        }
    )


def backup_body(
    dir: str,
    name: str | None,
    ttl: str | int | None,
    excludes: list[str] | None,
    gitignore: bool,
    compression: Mapping[str, Any] | None,
) -> JSON:
    """The body of ``POST /v1/sandboxes/{id}/backups``; the seed's ``threads`` is not sent."""
    packed = None
    if compression is not None:
        packed = drop_none({"format": compression.get("format"), "level": compression.get("level")})
    return drop_none(
        {
            "dir": dir,
            "name": name,
            "ttl": ttl,
            "excludes": excludes,
            "gitignore": gitignore or None,
            "compression": packed,
        }
    )


def not_supported(method: str, why: str, alternative: str) -> errors.SandpitNotSupportedError:
    return errors.SandpitNotSupportedError(
        f"{method} is not supported by this server: {why}; {alternative}",
        context={"method": method, "alternative": alternative},
    )
