# Generated from _async/client.py by tools/unasync.py; do not edit.
# ruff: noqa
"""The blocking client: the asyncio client (``_async/client.py``) without ``await``."""


from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import urlencode

import httpx
import websockets.sync.client as ws_client
import websockets.exceptions

from .. import errors
from .._common import (
    MOUNT_ALTERNATIVE,
    SESSIONLESS,
    SandboxOptions,
    SSEDecoder,
    b64encode,
    backup_body,
    check_sandbox_id,
    check_stdin_choice,
    connection_error,
    drop_none,
    duration_ms,
    error_from_response,
    exec_body,
    file_path,
    http_timeout,
    label_params,
    mount_body,
    not_supported,
    quote_id,
    resolve_config,
    sandbox_path,
    secrets_body,
    stdin_frame,
    stream_frame_event,
    transport_error,
)
from .._models import (
    JSON,
    BackupInfo,
    BucketMount,
    CheckChangesResult,
    CodeContext,
    ExecEvent,
    ExecResult,
    Execution,
    ExecutionError,
    ExposedPort,
    FileInfo,
    ForkResult,
    GitCheckoutResult,
    LogEvent,
    ProcessInfo,
    ProcessLogs,
    ReadFileResult,
    RestoreBackupResult,
    Result,
    SandboxEvent,
    SandboxInfo,
    SandboxUsage,
    SnapshotExport,
    SnapshotInfo,
    WaitForLogResult,
    WatchEvent,
)
from ._io import StdinSource, iterate, open_socket, recv_frame, start_pump, stop_pump

T = TypeVar("T")
OutputCallback = Callable[[str], None]
# Size of the pieces a local file is uploaded in.
_CHUNK = 256 * 1024
# The id of the one request on a control-transport socket (``stdin_stream``).
_STDIN_REQUEST = "exec"


class Sandpit:
    """A connection to a sandpit server (``url``/``api_key`` default to ``SANDPIT_URL`` /
    ``SANDPIT_KEY``). ``connect_timeout`` bounds how long an unreachable server takes to fail;
    ``timeout`` bounds each read (default: none, commands bound themselves)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        connect_timeout: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        self.url, self._api_key = resolve_config(url, api_key)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=http_timeout(connect_timeout, timeout),
        )

    def __enter__(self) -> Sandpit:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def sandbox(
        self,
        sandbox_id: str | None = None,
        *,
        image: str | None = None,
        sleep_after: str | int | None = None,
        keep_alive: bool | None = None,
        env: Mapping[str, str] | None = None,
        limits: Mapping[str, Any] | None = None,
        network: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
        ephemeral: bool | None = None,
        keep_alive_while_busy: bool | None = None,
        labels: Mapping[str, str] | None = None,
        ttl: str | int | None = None,
        normalize_id: bool = False,
        enable_default_session: bool = True,
        snapshot: str | None = None,
    ) -> Sandbox:
        """A handle on sandbox ``sandbox_id`` (a fresh ``sb-…`` id when omitted). Nothing is sent
        yet: the options are applied by create-or-get on first use (or on ``with``).

        ``labels`` tag the sandbox for ``list_sandboxes(labels=…)``; ``ttl`` (seconds or
        ``"2h"``) destroys it that long after creation; ``keep_alive_while_busy=False`` lets it
        sleep on idle even while background processes run (default: they keep it awake)."""
        if sandbox_id is None:
            sandbox_id = "sb-" + _random_suffix()
        options = SandboxOptions(
            image=image,
            sleep_after=sleep_after,
            keep_alive=keep_alive,
            env=env,
            limits=limits,
            network=network,
            secrets=secrets,
            ephemeral=ephemeral,
            keep_alive_while_busy=keep_alive_while_busy,
            labels=labels,
            ttl=ttl,
            snapshot=snapshot,
        )
        return Sandbox(
            self,
            check_sandbox_id(sandbox_id, normalize_id),
            options,
            None if enable_default_session else SESSIONLESS,
        )

    def list_sandboxes(self, *, labels: Mapping[str, str] | None = None) -> list[SandboxInfo]:
        """Every sandbox of the key's tenant (all pages); with ``labels``, only those carrying
        every one of them."""
        found: list[SandboxInfo] = []
        cursor: str | None = None
        while True:
            params = drop_none({"limit": 500, "cursor": cursor, "label": label_params(labels)})
            page = self._json("GET", "/v1/sandboxes", params=params)
            found += [SandboxInfo.from_json(item) for item in page.get("sandboxes", [])]
            cursor = page.get("nextCursor")
            if not cursor:
                return found

    def watch_sandboxes(self) -> EventStream[SandboxEvent]:
        """The key's tenant's sandbox changes as they happen (``GET /v1/events``): created,
        started, stopped, updated, destroyed. Returns once the server has subscribed the
        stream, so every change made afterwards arrives, in order; list the sandboxes then to
        know the starting point. Close the stream (``with``/``close()``) to stop."""
        events = self._events("GET", "/v1/events")
        # The first event is `ready`: the server's subscription exists from here on.
        events.__next__()
        return EventStream(_mapped(_sandbox_events(events), SandboxEvent.from_json))

    # --- backups and snapshots of the tenant (docs/persistence.md) ------------------------

    def list_backups(self) -> list[BackupInfo]:
        """The key's tenant's backups, newest first."""
        body = self._json("GET", "/v1/backups")
        return [BackupInfo.from_json(item) for item in body.get("backups", [])]

    def get_backup(self, backup_id: str) -> BackupInfo:
        """One backup (``BackupNotFoundError`` for an unknown id or another tenant's)."""
        return BackupInfo.from_json(self._json("GET", f"/v1/backups/{quote_id(backup_id)}"))

    def delete_backup(self, backup_id: str) -> None:
        """Deletes a backup's archive and record."""
        self._request("DELETE", f"/v1/backups/{quote_id(backup_id)}")

    def list_snapshots(self) -> list[SnapshotInfo]:
        """The key's tenant's snapshots, oldest first."""
        body = self._json("GET", "/v1/snapshots")
        return [SnapshotInfo.from_json(item) for item in body.get("snapshots", [])]

    def get_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """One snapshot (``SnapshotNotFoundError`` for an unknown id or another tenant's)."""
        path = f"/v1/snapshots/{quote_id(snapshot_id)}"
        return SnapshotInfo.from_json(self._json("GET", path))

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Deletes a snapshot (``SnapshotInUseError`` while sandboxes created from it exist)."""
        self._request("DELETE", f"/v1/snapshots/{quote_id(snapshot_id)}")

    def export_snapshot(self, snapshot_id: str) -> SnapshotExport:
        """Exports a snapshot to the server's object store (a zstd tar of its layers with its
        SHA-256), so it outlives the server's disk and can move to another server using the
        same store; import it with :meth:`import_snapshot`."""
        path = f"/v1/snapshots/{quote_id(snapshot_id)}/export"
        return SnapshotExport.from_json(self._json("POST", path))

    def import_snapshot(
        self, object_key: str, *, sha256: str | None = None, name: str | None = None
    ) -> SnapshotInfo:
        """Imports an export of the key's tenant (``object_key`` of :meth:`export_snapshot`) as
        a new snapshot. ``sha256``, if given, must be the export's (``ValidationFailedError``
        otherwise); ``SnapshotExportNotFoundError`` for a key that is not there or is another
        tenant's; ``SnapshotImportFailedError`` for a corrupt or truncated archive."""
        body = drop_none({"objectKey": object_key, "sha256": sha256, "name": name})
        return SnapshotInfo.from_json(self._json("POST", "/v1/snapshots/import", json=body))

    def create_from_snapshot(
        self, snapshot_id: str, sandbox_id: str | None = None, **options: Any
    ) -> Sandbox:
        """Creates sandbox ``sandbox_id`` (a fresh id when omitted) from the snapshot's files and
        image, now; ``options`` are those of :meth:`sandbox`."""
        sandbox = self.sandbox(sandbox_id, snapshot=snapshot_id, **options)
        sandbox._ensure()
        return sandbox

    # --- HTTP plumbing -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | Iterable[bytes] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, json=json, params=params, content=content
            )
        except httpx.TransportError as exc:
            raise connection_error(exc, self.url) from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        response = self._request(method, path, **kwargs)
        if not response.content:
            return {}
        body = response.json()
        return body if isinstance(body, dict) else {"data": body}

    def _events(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        read_timeout: float | None = None,
    ) -> Iterator[JSON]:
        """The JSON events of an SSE answer, as they arrive. Leaving the iteration early closes
        the connection, which the server takes as "stop" (the command, run or watch ends)."""
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if read_timeout is not None:
            timeout = httpx.Timeout(self._http.timeout.connect, read=max(read_timeout, 0.001))
        try:
            with self._http.stream(method, path, json=json, timeout=timeout) as response:
                if response.status_code >= 400:
                    raise error_from_response(response.status_code, response.read())
                decoder = SSEDecoder()
                for chunk in response.iter_bytes():
                    for event in decoder.feed(chunk):
                        if isinstance(event, errors.SandpitError):
                            # The server's last word on a stream a stop/destroy cut short.
                            raise event
                        yield event
                for event in decoder.finish():
                    if isinstance(event, errors.SandpitError):
                        raise event
                    yield event
        except httpx.TransportError as exc:
            raise connection_error(exc, self.url) from exc


def _random_suffix() -> str:
    return secrets.token_hex(6)


class EventStream(Generic[T]):
    """A stream of events (``for event in stream``). Close it (``with`` or
    ``close()``) to stop it early: the server then stops what produced it."""

    def __init__(self, events: Iterator[T]) -> None:
        self._events = events

    def __iter__(self) -> EventStream[T]:
        return self

    def __next__(self) -> T:
        return self._events.__next__()

    def close(self) -> None:
        closer = getattr(self._events, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> EventStream[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _sandbox_events(events: Iterator[JSON]) -> Iterator[JSON]:
    """The sandbox and lagged events of ``GET /v1/events`` (kinds of newer servers skipped)."""
    try:
        for event in events:
            if "seq" in event or "missed" in event:
                yield event
    finally:
        closer = getattr(events, "close", None)
        if closer is not None:
            closer()


def _mapped(events: Iterator[JSON], convert: Callable[[JSON], T]) -> Iterator[T]:
    try:
        for event in events:
            yield convert(event)
    finally:
        closer = getattr(events, "close", None)
        if closer is not None:
            closer()


class _Ops:
    """The operations a sandbox and an execution session share (the session's are bound to its
    shell: cwd, env and relative paths)."""

    _sandbox: Sandbox
    _session_id: str | None

    # --- commands ------------------------------------------------------------------------

    def exec(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
        stdin_stream: StdinSource | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ExecResult:
        """Runs ``command`` (bash) and returns its result; a non-zero exit is not an error.

        ``timeout`` (seconds) is enforced by the sandbox: the command is killed and the result
        has ``exit_code == 124`` and ``timed_out``. With ``on_stdout``/``on_stderr`` the output
        is streamed to the callbacks as it is produced. Cancelling the awaiting task (or
        Ctrl-C in the sync client) stops the remote command.

        ``stdin`` is the command's whole input, sent with it; ``stdin_stream`` (an iterable of
        str/bytes chunks) feeds its input while it runs, EOF when the iterable ends — over the
        sandbox's WebSocket control transport, so it may wait for output between chunks."""
        body = exec_body(command, self._session_id, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        check_stdin_choice(stdin, stdin_stream)
        if on_stdout is None and on_stderr is None and stdin_stream is None:
            return ExecResult.from_json(
                self._sandbox._api_json("POST", "execute", json=body), command
            )
        stdout: list[str] = []
        stderr: list[str] = []
        for event in self._exec_events(body, stdin_stream):
            if event.type == "stdout":
                stdout.append(event.data)
                if on_stdout is not None:
                    on_stdout(event.data)
            elif event.type == "stderr":
                stderr.append(event.data)
                if on_stderr is not None:
                    on_stderr(event.data)
            elif event.type == "complete":
                code = -1 if event.exit_code is None else event.exit_code
                return ExecResult(
                    command=command,
                    exit_code=code,
                    stdout="".join(stdout),
                    stderr="".join(stderr),
                    success=code == 0,
                    timed_out=event.timed_out,
                    session_id=self._session_id,
                    reason=event.reason,
                    raw=event.raw,
                )
            elif event.type == "error":
                raise errors.CommandExecutionError(event.error or event.data or "command failed")
        raise errors.CommandExecutionError("the command stream ended without a result")

    def exec_stream(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
        stdin_stream: StdinSource | None = None,
    ) -> EventStream[ExecEvent]:
        """The command's events as they happen: ``start``, ``stdout``/``stderr``,
        ``complete`` (``exit_code``). Closing the stream early stops the command.
        ``stdin_stream`` feeds stdin while it runs (see :meth:`exec`)."""
        body = exec_body(command, self._session_id, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        check_stdin_choice(stdin, stdin_stream)
        return EventStream(self._exec_events(body, stdin_stream))

    def _exec_events(
        self, body: JSON, stdin_stream: StdinSource | None = None
    ) -> Iterator[ExecEvent]:
        if stdin_stream is not None:
            events = self._sandbox._socket_events(body, stdin_stream)
        else:
            events = self._sandbox._api_events("POST", "execute/stream", json=body)
        return _mapped(events, ExecEvent.from_json)

    # --- background processes ------------------------------------------------------------

    def start_process(
        self,
        command: str,
        *,
        process_id: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bool = False,
    ) -> Process:
        """Starts ``command`` in the background. ``stdin=True`` keeps its stdin open for
        :meth:`Process.send_stdin`."""
        body = drop_none(
            {
                "command": command,
                "sessionId": self._session_id,
                "processId": process_id,
                "timeoutMs": duration_ms(timeout),
                "env": dict(env) if env is not None else None,
                "cwd": cwd,
                "stdin": True if stdin else None,
            }
        )
        started = self._sandbox._api_json("POST", "process/start", json=body)
        info = ProcessInfo.from_json(
            {"status": "running", "command": command, "sessionId": self._session_id, **started}
        )
        return Process(self._sandbox, info)

    def list_processes(self, status: str | None = None) -> list[Process]:
        path = "process/list" + (f"?status={status}" if status else "")
        body = self._sandbox._api_json("GET", path)
        return [
            Process(self._sandbox, ProcessInfo.from_json(item))
            for item in body.get("processes", [])
        ]

    def cleanup_completed_processes(self) -> int:
        """The seed's call; ended processes are kept for their logs (and archived across sleep),
        so like the seed's this removes nothing and returns 0."""
        return 0

    def get_process(self, process_id: str) -> Process | None:
        """The process, or None when there is no such process."""
        try:
            body = self._sandbox._api_json("GET", f"process/{process_id}")
        except errors.ProcessNotFoundError:
            return None
        return Process(self._sandbox, ProcessInfo.from_json(body.get("process", body)))

    def kill_process(self, process_id: str, signal: str | None = None) -> None:
        """Stops the process's tree: ``signal`` (default SIGTERM), SIGKILL after 5 s."""
        path = f"process/{process_id}" + (f"?signal={signal}" if signal else "")
        self._sandbox._api_json("DELETE", path)

    def kill_all_processes(self) -> int:
        body = self._sandbox._api_json("DELETE", "process/kill-all")
        return int(body.get("cleanedCount", 0))

    def get_process_logs(self, process_id: str) -> ProcessLogs:
        return ProcessLogs.from_json(
            self._sandbox._api_json("GET", f"process/{process_id}/logs")
        )

    def stream_process_logs(self, process_id: str) -> EventStream[LogEvent]:
        """The process's output so far, then live, then ``exit``."""
        events = self._sandbox._api_events("GET", f"process/{process_id}/stream")
        return EventStream(_mapped(events, LogEvent.from_json))

    # --- files ---------------------------------------------------------------------------

    def write_file(
        self, path: str, content: str | bytes, *, encoding: str | None = None
    ) -> None:
        """Writes a file (parents are created). Bytes are sent base64; for big files use
        :meth:`upload`, which streams."""
        if isinstance(content, bytes):
            content, encoding = b64encode(content), "base64"
        body = drop_none(
            {"path": path, "content": content, "encoding": encoding, "sessionId": self._session_id}
        )
        self._sandbox._api_json("POST", "write", json=body)

    def read_file(self, path: str, *, encoding: str | None = None) -> ReadFileResult:
        """Reads a file through the JSON API (at most 32 MiB): text as text, binary files as
        base64 (``.bytes`` decodes either). For any size use :meth:`read_bytes` or
        :meth:`download`."""
        body = drop_none({"path": path, "encoding": encoding, "sessionId": self._session_id})
        return ReadFileResult.from_json(self._sandbox._api_json("POST", "read", json=body))

    def read_bytes(self, path: str) -> bytes:
        """The file's exact bytes (raw route, any size, held in memory)."""
        response = self._sandbox._raw_file("GET", path, self._session_id)
        return response.content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (self.read_bytes(path)).decode(encoding)

    def upload(
        self, path: str, source: bytes | str | os.PathLike[str] | IO[bytes] | Iterable[bytes]
    ) -> int:
        """Uploads ``source`` (bytes, a local file path, a binary file object, or an iterable
        of byte chunks) to ``path``, streamed in constant memory; returns the size written.
        The file appears whole or not at all."""
        content: bytes | Iterable[bytes]
        if isinstance(source, bytes):
            content = source
        elif isinstance(source, (str, os.PathLike)):
            content = _file_chunks(Path(source))
        elif hasattr(source, "read"):
            content = _reader_chunks(source)  # type: ignore[arg-type]
        else:
            content = source
        response = self._sandbox._raw_file("PUT", path, self._session_id, content=content)
        return int(response.json().get("size", 0))

    def download(self, path: str, destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """Streams the file at ``path`` into ``destination`` (a local path or a binary file
        object) in constant memory; returns the number of bytes."""
        if isinstance(destination, (str, os.PathLike)):
            # Local disk writes of 256 KiB pieces: short enough to do on the event loop.
            with open(destination, "wb") as file:  # noqa: ASYNC230
                return self._sandbox._download_into(path, self._session_id, file)
        return self._sandbox._download_into(path, self._session_id, destination)

    def list_files(
        self, path: str = ".", *, recursive: bool = False, include_hidden: bool = False
    ) -> list[FileInfo]:
        body = drop_none(
            {
                "path": path,
                "sessionId": self._session_id,
                "options": {"recursive": recursive, "includeHidden": include_hidden},
            }
        )
        answer = self._sandbox._api_json("POST", "list-files", json=body)
        return [FileInfo.from_json(item) for item in answer.get("files", [])]

    def mkdir(self, path: str, *, recursive: bool = False) -> None:
        body = drop_none({"path": path, "recursive": recursive, "sessionId": self._session_id})
        self._sandbox._api_json("POST", "mkdir", json=body)

    def exists(self, path: str) -> bool:
        body = drop_none({"path": path, "sessionId": self._session_id})
        return bool((self._sandbox._api_json("POST", "exists", json=body)).get("exists"))

    def remove(self, path: str) -> None:
        """Deletes a file (a directory is ``IsDirectoryError``; use ``exec('rm -r …')``)."""
        body = drop_none({"path": path, "sessionId": self._session_id})
        self._sandbox._api_json("POST", "delete", json=body)

    delete_file = remove

    def rename(self, old_path: str, new_path: str) -> None:
        body = drop_none({"oldPath": old_path, "newPath": new_path, "sessionId": self._session_id})
        self._sandbox._api_json("POST", "rename", json=body)

    def move(self, source: str, destination: str) -> None:
        body = drop_none(
            {"sourcePath": source, "destinationPath": destination, "sessionId": self._session_id}
        )
        self._sandbox._api_json("POST", "move", json=body)

    # The seed's names.
    rename_file = rename
    move_file = move

    # --- watching ------------------------------------------------------------------------

    def watch(
        self,
        path: str,
        *,
        recursive: bool = True,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> EventStream[WatchEvent]:
        """Watches ``path``; returns once the watch is live. Iterate for ``WatchEvent``s
        (``type == "event"``: ``event_type`` create/modify/delete/…, ``path``)."""
        body = drop_none(
            {
                "path": path,
                "recursive": recursive,
                "include": include,
                "exclude": exclude,
                "sessionId": self._session_id,
            }
        )
        events = _mapped(
            self._sandbox._api_events("POST", "watch", json=body), WatchEvent.from_json
        )
        first = events.__next__()
        if first.type != "watching":
            _close(events)
            raise errors.WatchStartError(str(first.raw.get("error") or first.raw))
        return EventStream(events)

    def check_changes(
        self, path: str, *, since: str | None = None, recursive: bool = True
    ) -> CheckChangesResult:
        """Whether ``path`` changed since the version token ``since`` (None: start tracking)."""
        body = drop_none(
            {"path": path, "since": since, "recursive": recursive, "sessionId": self._session_id}
        )
        return CheckChangesResult.from_json(
            self._sandbox._api_json("POST", "watch/check", json=body)
        )

    # --- git, environment ----------------------------------------------------------------

    def git_checkout(
        self,
        repo_url: str,
        *,
        branch: str | None = None,
        ref: str | None = None,
        target_dir: str | None = None,
        depth: int | None = None,
        timeout: float | None = None,
    ) -> GitCheckoutResult:
        """Clones ``repo_url`` (``branch``, or ``ref`` as the seed's guides spell it) into
        ``target_dir`` (default ``/workspace/<repo>``)."""
        body = drop_none(
            {
                "repoUrl": repo_url,
                "branch": branch or ref,
                "targetDir": target_dir,
                "depth": depth,
                "timeoutMs": duration_ms(timeout),
                "sessionId": self._session_id,
            }
        )
        return GitCheckoutResult.from_json(
            self._sandbox._api_json("POST", "git/checkout", json=body)
        )

    def set_env_vars(self, env: Mapping[str, str | None]) -> None:
        """Sets (or, with None, unsets) variables for this shell and every later command,
        session and process, also after the sandbox sleeps."""
        self._sandbox._ensure()
        body = drop_none({"env": dict(env), "sessionId": self._session_id})
        self._sandbox._client._json("POST", f"{self._sandbox._path}/env", json=body)

    # --- code interpreter ----------------------------------------------------------------

    def create_code_context(
        self,
        language: str = "python",
        *,
        cwd: str | None = None,
        env_vars: Mapping[str, str] | None = None,
    ) -> CodeContext:
        """A code context: one interpreter process whose state lasts between runs."""
        body = drop_none(
            {"language": language, "cwd": cwd, "env_vars": dict(env_vars) if env_vars else None}
        )
        return CodeContext.from_json(self._sandbox._api_json("POST", "contexts", json=body))

    def list_code_contexts(self) -> list[CodeContext]:
        body = self._sandbox._api_json("GET", "contexts")
        return [CodeContext.from_json(item) for item in body.get("contexts", [])]

    def delete_code_context(self, context: CodeContext | str) -> None:
        context_id = context.id if isinstance(context, CodeContext) else context
        self._sandbox._api_json("DELETE", f"contexts/{context_id}")
        self._sandbox._default_contexts = {
            language: ctx
            for language, ctx in self._sandbox._default_contexts.items()
            if ctx.id != context_id
        }

    def run_code(
        self,
        code: str,
        *,
        context: CodeContext | None = None,
        language: str | None = None,
        timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        on_result: Callable[[Result], None] | None = None,
        on_error: Callable[[ExecutionError], None] | None = None,
    ) -> Execution:
        """Runs ``code`` in ``context`` (default: one context per language, made on first use)
        and returns its output, rich results (``Result.png`` is bytes; results render in
        Jupyter) and error. A raised exception is ``Execution.error``, not a Python exception.
        Cancelling the task interrupts the run."""
        execution = Execution(code=code)
        for event in self._code_events(code, context, language, timeout):
            kind = event.get("type")
            if kind == "stdout":
                execution.stdout.append(str(event.get("text", "")))
                if on_stdout is not None:
                    on_stdout(execution.stdout[-1])
            elif kind == "stderr":
                execution.stderr.append(str(event.get("text", "")))
                if on_stderr is not None:
                    on_stderr(execution.stderr[-1])
            elif kind == "result":
                execution.results.append(Result.from_json(event))
                if on_result is not None:
                    on_result(execution.results[-1])
            elif kind == "error":
                execution.error = ExecutionError.from_json(event)
                if on_error is not None:
                    on_error(execution.error)
            elif kind == "execution_complete":
                execution.execution_count = event.get("execution_count")
        return execution

    def run_code_stream(
        self,
        code: str,
        *,
        context: CodeContext | None = None,
        language: str | None = None,
        timeout: float | None = None,
    ) -> EventStream[JSON]:
        """The run's raw events (``stdout``/``stderr`` ``{text}``, ``result``, ``error``,
        ``execution_complete``) as they happen; closing the stream interrupts the run."""
        return EventStream(self._code_events(code, context, language, timeout))

    def _code_events(
        self,
        code: str,
        context: CodeContext | None,
        language: str | None,
        timeout: float | None,
    ) -> Iterator[JSON]:
        explicit = context is not None
        if context is None:
            context = self._sandbox._default_context(language or "python")
        body = drop_none(
            {
                "context_id": context.id,
                "code": code,
                "language": language,
                "timeout_ms": duration_ms(timeout),
            }
        )
        try:
            events = self._sandbox._api_events("POST", "execute/code", json=body)
            first = events.__next__()
        except errors.ContextNotFoundError:
            # The default context died with a sleep of the sandbox: make a new one, once.
            if explicit:
                raise
            self._sandbox._default_contexts.pop(context.language, None)
            context = self._sandbox._default_context(context.language)
            body["context_id"] = context.id
            events = self._sandbox._api_events("POST", "execute/code", json=body)
            first = events.__next__()
        try:
            yield first
            for event in events:
                yield event
        finally:
            _close(events)

    # --- the seed's bucket mounts and backups (docs/persistence.md) -----------------------

    def mount_bucket(
        self,
        bucket: str,
        mount_path: str,
        *,
        endpoint: str | None = None,
        credentials: Mapping[str, str] | None = None,
        prefix: str | None = None,
        read_only: bool = False,
        region: str | None = None,
        provider: str | None = None,
        local_bucket: bool = False,
    ) -> None:
        """Mounts ``bucket`` at ``mount_path`` inside the sandbox: an s3fs FUSE file system the
        server runs outside the sandbox, so the keys (``credentials``
        ``{"accessKeyId", "secretAccessKey"}``, else ``AWS_*``/``R2_*`` of this process) never
        enter it. It comes back whenever the sandbox wakes, until ``unmount_bucket`` or
        destroy. ``local_bucket`` and R2 bindings (no ``endpoint``) are Worker-only:
        :class:`errors.SandpitNotSupportedError`."""
        if local_bucket or endpoint is None:
            why = "local_bucket syncs through an R2 binding of a Worker"
            if not local_bucket:
                why = "an R2 binding (no endpoint) exists only in a Worker"
            raise not_supported("mount_bucket", why, MOUNT_ALTERNATIVE)
        body = mount_body(
            bucket, mount_path, endpoint, credentials, prefix, read_only, region, provider
        )
        self._sandbox._control("POST", "/mounts", json=body)

    def unmount_bucket(self, mount_path: str) -> None:
        """Unmounts the bucket at ``mount_path`` and forgets it (``InvalidMountConfigError``
        when nothing is mounted there)."""
        self._sandbox._control("DELETE", "/mounts", params={"path": mount_path})

    def create_backup(
        self,
        dir: str,
        *,
        name: str | None = None,
        ttl: str | int | None = None,
        excludes: list[str] | None = None,
        gitignore: bool = False,
        compression: Mapping[str, Any] | None = None,
        local_bucket: bool = False,
        multipart: bool = True,
    ) -> BackupInfo:
        """Archives ``dir`` into the server's object store (zstd, checksummed). ``ttl``:
        seconds or ``"2h"`` (default 3 days); ``excludes``: gitignore-style globs;
        ``compression``: ``{"format": "zstd", "level": 1-19}``. ``local_bucket`` and
        ``multipart`` are accepted for the seed's signature and not sent."""
        body = backup_body(dir, name, ttl, excludes, gitignore, compression)
        return BackupInfo.from_json(self._sandbox._control("POST", "/backups", json=body))

    def restore_backup(
        self, backup: BackupInfo | Mapping[str, Any], *, dir: str | None = None
    ) -> RestoreBackupResult:
        """Restores ``backup`` (a :class:`BackupInfo` or the seed's ``{"id", "dir"}``) into this
        sandbox at its ``dir`` (or ``dir``), atomically: a failed restore leaves the directory
        as it was."""
        if isinstance(backup, BackupInfo):
            backup_id: str = backup.id
            backup_dir: str | None = backup.dir
        else:
            backup_id, backup_dir = str(backup["id"]), backup.get("dir")
        body = drop_none({"backupId": backup_id, "dir": dir or backup_dir})
        return RestoreBackupResult.from_json(
            self._sandbox._control("POST", "/restore", json=body)
        )

    # --- terminal ------------------------------------------------------------------------

    def terminal(
        self, *, cols: int = 80, rows: int = 24, shell: str | None = None
    ) -> Terminal:
        """A PTY on this session's shell (the default session's for a sandbox) over a
        WebSocket; see :class:`Terminal`."""
        self._sandbox._ensure()
        query = self._pty_query(cols, rows, shell)
        socket = self._sandbox._websocket("/ws/pty?" + urlencode(query), "terminal")
        return Terminal(socket)

    def terminal_url(
        self, *, cols: int = 80, rows: int = 24, shell: str | None = None
    ) -> str:
        """The ``ws(s)://…/ws/pty`` URL of this session's terminal with a fresh single-use
        ticket (valid 60 s; no API key in it): for a browser (xterm.js) or any WebSocket
        client that cannot send the ``Authorization`` header."""
        self._sandbox._ensure()
        client = self._sandbox._client
        ticket = client._json("POST", f"{self._sandbox._path}/ws-ticket")
        query = {**self._pty_query(cols, rows, shell), "ticket": ticket["ticket"]}
        base = re.sub(r"^http", "ws", client.url)
        return f"{base}{self._sandbox._path}/ws/pty?" + urlencode(query)

    def _pty_query(self, cols: int, rows: int, shell: str | None) -> JSON:
        return drop_none(
            {"sessionId": self._session_id or "default", "cols": cols, "rows": rows, "shell": shell}
        )


def _close(events: Iterator[Any]) -> None:
    closer = getattr(events, "close", None)
    if closer is not None:
        closer()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _reader_chunks(reader: IO[bytes]) -> Iterator[bytes]:
    while chunk := reader.read(_CHUNK):
        yield chunk


def _send_stdin(
    socket: ws_client.ClientConnection, stdin: StdinSource, failures: list[BaseException]
) -> None:
    """Sends ``stdin`` as ``stdin`` frames of the request, then EOF (run beside the reader: the
    command may answer a chunk before it takes the next). A failure closes the socket, which
    ends the reader, and is kept in ``failures`` for it to raise."""
    try:
        for chunk in iterate(stdin):
            socket.send(json.dumps(stdin_frame(_STDIN_REQUEST, chunk)))
        socket.send(json.dumps({"type": "stdin", "id": _STDIN_REQUEST, "eof": True}))
    except websockets.exceptions.ConnectionClosed:
        pass  # the reader sees the close too
    except Exception as exc:
        failures.append(exc)
        socket.close()


class Sandbox(_Ops):
    """One sandbox. Use it as ``with client.sandbox(...) as sb:``: entering applies the
    options (create-or-get); leaving destroys it when it was made ``ephemeral``."""

    def __init__(
        self,
        client: Sandpit,
        sandbox_id: str,
        options: SandboxOptions,
        session_id: str | None,
    ) -> None:
        self.id = sandbox_id
        self._client = client
        self._options = options
        self._session_id = session_id
        self._sandbox = self
        self._path = sandbox_path(sandbox_id)
        self._ready = False
        self._default_contexts: dict[str, CodeContext] = {}

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r})"

    def __enter__(self) -> Sandbox:
        self._ensure()
        return self

    def __exit__(self, *_: object) -> None:
        if self._options.ephemeral:
            self.destroy()

    def _ensure(self) -> None:
        """Create-or-get with the handle's options, once (the seed's ``getSandbox`` options)."""
        if not self._ready:
            self._client._json(
                "POST", "/v1/sandboxes", json=self._options.create_body(self.id)
            )
            self._ready = True

    def _api_json(self, method: str, endpoint: str, *, json: Any = None) -> JSON:
        self._ensure()
        return self._client._json(method, f"{self._path}/api/{endpoint}", json=json)

    def _api_events(
        self, method: str, endpoint: str, *, json: Any = None, read_timeout: float | None = None
    ) -> Iterator[JSON]:
        self._ensure()
        for event in self._client._events(
            method, f"{self._path}/api/{endpoint}", json=json, read_timeout=read_timeout
        ):
            yield event

    def _websocket(self, rest: str, what: str) -> ws_client.ClientConnection:
        """A WebSocket to ``/v1/sandboxes/{id}{rest}`` with the key in its header."""
        client = self._client
        url = re.sub(r"^http", "ws", client.url) + self._path + rest
        try:
            return open_socket(
                url, {"Authorization": f"Bearer {client._api_key}"}, client._http.timeout.connect
            )
        except (OSError, TimeoutError) as exc:
            raise errors.SandpitConnectionError(
                f"{what}: cannot open a WebSocket at {client.url}: {exc}"
            ) from exc
        except websockets.exceptions.WebSocketException as exc:
            raise errors.SandpitError(f"{what}: WebSocket refused: {exc}") from exc

    def _socket_events(self, body: JSON, stdin: StdinSource) -> Iterator[JSON]:
        """``execute/stream`` over the sandbox's WebSocket control transport (docs/api.md,
        "WebSockets"), its stdin fed from ``stdin`` while it runs: a plain HTTP request sends
        its whole body before the answer starts. Yields the events as ``_api_events`` does;
        leaving early cancels the request, which stops the command."""
        self._ensure()
        socket = self._websocket("/ws", "exec_stream")
        request = {
            "type": "request",
            "id": _STDIN_REQUEST,
            "method": "POST",
            "path": "/api/execute/stream",
            "body": {**body, "stdinStream": True},
        }
        pump_errors: list[BaseException] = []
        finished = False
        try:
            socket.send(json.dumps(request))
            pump = start_pump(_send_stdin, socket, stdin, pump_errors)
            try:
                while True:
                    frame = json.loads(socket.recv())
                    if frame.get("id") not in (None, _STDIN_REQUEST):
                        continue
                    kind = frame.get("type")
                    if kind == "stream":
                        event = stream_frame_event(frame)
                        if isinstance(event, errors.SandpitError):
                            raise event
                        yield event
                    elif kind == "response":
                        if frame.get("status", 200) >= 400:
                            envelope = json.dumps(frame.get("body") or {}).encode()
                            raise error_from_response(frame["status"], envelope)
                        finished = True
                        return
                    elif kind == "error":
                        raise transport_error(frame)
            finally:
                stop_pump(pump)
        except websockets.exceptions.ConnectionClosed as exc:
            if pump_errors:
                raise pump_errors[0] from exc
            raise errors.SandpitConnectionError(
                f"the WebSocket to {self._client.url} closed before the command completed"
            ) from exc
        finally:
            if not finished:
                # Stops the command (the agent also does when the socket closes).
                with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                    socket.send(json.dumps({"type": "cancel", "id": _STDIN_REQUEST}))
            socket.close()

    def _raw_file(
        self,
        method: str,
        path: str,
        session_id: str | None,
        content: bytes | Iterable[bytes] | None = None,
    ) -> httpx.Response:
        self._ensure()
        params = drop_none({"sessionId": session_id})
        return self._client._request(
            method, f"{self._path}/files/{file_path(path)}", params=params, content=content
        )

    def _download_into(self, path: str, session_id: str | None, file: IO[bytes]) -> int:
        self._ensure()
        url = f"{self._path}/files/{file_path(path)}"
        params = drop_none({"sessionId": session_id})
        written = 0
        try:
            with self._client._http.stream("GET", url, params=params) as response:
                if response.status_code >= 400:
                    raise error_from_response(response.status_code, response.read())
                for chunk in response.iter_bytes():
                    file.write(chunk)
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise connection_error(exc, self._client.url) from exc
        return written

    def _default_context(self, language: str) -> CodeContext:
        context = self._default_contexts.get(language)
        if context is None:
            context = self.create_code_context(language)
            self._default_contexts[language] = context
        return context

    # --- control plane -------------------------------------------------------------------

    def _control(self, method: str, rest: str, **kwargs: Any) -> JSON:
        """``/v1/sandboxes/{id}`` + ``rest``, after the sandbox exists."""
        self._ensure()
        return self._client._json(method, f"{self._path}{rest}", **kwargs)

    def create_snapshot(self, name: str | None = None) -> SnapshotInfo:
        """Freezes the sandbox's file system into a snapshot. A running sandbox is put to sleep
        for it and woken again: its processes end (files stay)."""
        body = drop_none({"name": name})
        return SnapshotInfo.from_json(self._control("POST", "/snapshots", json=body))

    def fork(self, count: int | None = None, ids: list[str] | None = None) -> ForkResult:
        """Snapshots the sandbox and starts ``count`` children from it (or one per id of
        ``ids``), all running, all or none (1-32)."""
        body = drop_none({"count": count, "ids": ids})
        return ForkResult.from_json(self._control("POST", "/fork", json=body))

    def bucket_mounts(self) -> list[BucketMount]:
        """The sandbox's bucket mounts (never their credentials)."""
        body = self._control("GET", "/mounts")
        return [BucketMount.from_json(item) for item in body.get("mounts", [])]

    def info(self) -> SandboxInfo:
        self._ensure()
        return SandboxInfo.from_json(self._client._json("GET", self._path))

    def update(
        self,
        *,
        sleep_after: str | int | None = None,
        keep_alive: bool | None = None,
        keep_alive_while_busy: bool | None = None,
        env: Mapping[str, str] | None = None,
        limits: Mapping[str, Any] | None = None,
        labels: Mapping[str, str | None] | None = None,
        ttl: str | int | None = None,
    ) -> SandboxInfo:
        """Changes options. ``limits.cpus``/``memory_mb``/``pids`` apply at once; ``env`` and
        ``limits.disk_mb`` of a running sandbox at its next start (listed in the answer's
        ``pending_restart``). ``labels`` are merged (None removes a label); ``ttl`` counts from
        now (``0``: no expiry)."""
        options = SandboxOptions(
            sleep_after=sleep_after,
            keep_alive=keep_alive,
            keep_alive_while_busy=keep_alive_while_busy,
            env=env,
            limits=limits,
            labels=labels,
            ttl=ttl,
        )
        body = options.create_body(self.id)
        del body["id"]
        return self._patch(body)

    def set_network(
        self, mode: Literal["none", "allowlist", "full"], allow: list[str] | None = None
    ) -> SandboxInfo:
        """Replaces the outbound network policy (``allow``: domain patterns and CIDRs)."""
        return self._patch({"network": drop_none({"mode": mode, "allow": allow})})

    def set_secrets(self, secrets: Mapping[str, Mapping[str, Any]]) -> SandboxInfo:
        """Replaces the sandbox's secrets: ``{"NAME": {"value": …, "hosts": [...],
        "header"?: …}}``. Inside, ``$NAME`` holds a placeholder the egress proxy swaps for the
        value on requests to ``hosts`` only."""
        return self._patch({"secrets": secrets_body(secrets)})

    def _patch(self, body: JSON) -> SandboxInfo:
        self._ensure()
        return SandboxInfo.from_json(self._client._json("PATCH", self._path, json=body))

    def egress_log(self) -> list[JSON]:
        self._ensure()
        return list(
            (self._client._json("GET", f"{self._path}/egress-log")).get("entries", [])
        )

    def usage(self) -> SandboxUsage:
        """What the sandbox uses now: CPU time, memory, processes, disk, egress bytes (reading
        it does not wake a sleeping sandbox)."""
        self._ensure()
        return SandboxUsage.from_json(self._client._json("GET", f"{self._path}/usage"))

    def stop(self) -> SandboxInfo:
        """Puts the sandbox to sleep now (files stay; processes end)."""
        self._ensure()
        self._default_contexts.clear()
        return SandboxInfo.from_json(self._client._json("POST", f"{self._path}/stop"))

    def destroy(self) -> None:
        """Deletes the sandbox: processes, files and record. Destroying a missing sandbox is
        not an error."""
        try:
            self._client._request("DELETE", self._path)
        except errors.SandboxNotFoundError:
            pass
        self._ready = False
        self._default_contexts.clear()

    # --- preview ports -------------------------------------------------------------------

    def expose_port(
        self, port: int, *, name: str | None = None, token: str | None = None
    ) -> ExposedPort:
        """Makes ``port`` (a server listening inside) reachable at a preview URL."""
        self._ensure()
        body = drop_none({"port": port, "name": name, "token": token})
        return ExposedPort.from_json(
            self._client._json("POST", f"{self._path}/ports", json=body)
        )

    def unexpose_port(self, port: int) -> None:
        self._ensure()
        self._client._request("DELETE", f"{self._path}/ports/{port}")

    def get_exposed_ports(self) -> list[ExposedPort]:
        self._ensure()
        body = self._client._json("GET", f"{self._path}/ports")
        return [ExposedPort.from_json(item) for item in body.get("ports", [])]

    def is_port_exposed(self, port: int) -> bool:
        """Whether ``port`` is exposed (stale exposures count)."""
        return any(p.port == port for p in self.get_exposed_ports())

    def validate_port_token(self, port: int, token: str) -> bool:
        """Whether ``token`` is the token of ``port``'s preview URL."""
        return any(p.port == port and p.token == token for p in self.get_exposed_ports())

    # --- sessions ------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        command_timeout: float | None = None,
    ) -> ExecutionSession:
        """A new shell with its own cwd and environment (``command_timeout``: the default
        timeout of its commands, seconds)."""
        session_id = session_id or "session-" + _random_suffix()
        body = drop_none(
            {
                "id": session_id,
                "env": dict(env) if env is not None else None,
                "cwd": cwd,
                "commandTimeoutMs": duration_ms(command_timeout),
            }
        )
        self._api_json("POST", "session/create", json=body)
        return ExecutionSession(self, session_id)

    def list_sessions(self) -> list[str]:
        """The ids of the sandbox's sessions."""
        body = self._api_json("GET", "session/list")
        return [str(session) for session in body.get("data", [])]

    def get_session(self, session_id: str) -> ExecutionSession:
        """A handle on an existing session (no call is made)."""
        return ExecutionSession(self, session_id)

    def delete_session(self, session_id: str) -> None:
        """Ends the session's shell, its processes and terminal."""
        self._api_json("POST", "session/delete", json={"sessionId": session_id})


class ExecutionSession(_Ops):
    """A shell of a sandbox with its own cwd and environment: the sandbox's operations, run
    in this shell."""

    def __init__(self, sandbox: Sandbox, session_id: str) -> None:
        self.id = session_id
        self.sandbox = sandbox
        self._sandbox = sandbox
        self._session_id = session_id

    def __repr__(self) -> str:
        return f"ExecutionSession({self._sandbox.id!r}, {self.id!r})"


class Process:
    """A background process. Its fields are as of the last refresh (:meth:`refresh`)."""

    def __init__(self, sandbox: Sandbox, info: ProcessInfo) -> None:
        self._sandbox = sandbox
        self.info = info

    def __repr__(self) -> str:
        return f"Process({self.id!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def pid(self) -> int | None:
        return self.info.pid

    @property
    def command(self) -> str:
        return self.info.command

    @property
    def status(self) -> str:
        return self.info.status

    @property
    def exit_code(self) -> int | None:
        return self.info.exit_code

    @property
    def reason(self) -> str | None:
        """``"oom"`` when the OOM killer ended the process (as of the last refresh)."""
        return self.info.reason

    def refresh(self) -> ProcessInfo:
        body = self._sandbox._api_json("GET", f"process/{self.id}")
        self.info = ProcessInfo.from_json(body.get("process", body))
        return self.info

    def get_status(self) -> str:
        return (self.refresh()).status

    def kill(self, signal: str | None = None) -> None:
        self._sandbox.kill_process(self.id, signal)

    def get_logs(self) -> ProcessLogs:
        return self._sandbox.get_process_logs(self.id)

    def send_stdin(self, data: str | bytes, *, close: bool = False) -> None:
        """Writes to the process's stdin (started with ``stdin=True``); ``close`` ends it."""
        body: JSON = {"close": close}
        if isinstance(data, bytes):
            body["dataBase64"] = b64encode(data)
        else:
            body["data"] = data
        self._sandbox._api_json("POST", f"process/{self.id}/stdin", json=body)

    def stream_logs(self) -> EventStream[LogEvent]:
        return self._sandbox.stream_process_logs(self.id)

    def wait_for_exit(self, timeout: float | None = None) -> int | None:
        """Waits until the process ends and returns its exit code (None when it was killed
        without one). ``SandpitTimeoutError`` after ``timeout`` seconds;
        ``OperationInterruptedError`` when the sandbox is stopped or destroyed meanwhile."""
        deadline = _Deadline(timeout)
        for event in self._log_events(deadline):
            if event.type in ("exit", "complete", "error"):
                # The final record (status, end time); the stream's `error` means "ended
                # without a known exit code" (e.g. killed by a sleep of the sandbox).
                self.refresh()
                return event.exit_code
            deadline.check("process exit")
        raise errors.ProcessError(f"the log stream of {self.id} ended without an exit")

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float | None = None
    ) -> WaitForLogResult:
        """Waits for a line of output containing ``pattern`` (a substring or a regex)."""
        deadline = _Deadline(timeout)
        matcher = _line_matcher(pattern)
        pending = {"stdout": "", "stderr": ""}
        for event in self._log_events(deadline):
            if event.type in pending:
                text = pending[event.type] + event.data
                lines = text.split("\n")
                pending[event.type] = lines.pop()
                for line in lines:
                    found = matcher(line)
                    if found is not None:
                        return WaitForLogResult(line=line, match=found)
            elif event.type in ("exit", "complete", "error"):
                for line in pending.values():
                    found = matcher(line) if line else None
                    if found is not None:
                        return WaitForLogResult(line=line, match=found)
                raise errors.ProcessExitedBeforeReadyError(
                    f"process {self.id} ended before printing {pattern!r}",
                    context={"processId": self.id, "exitCode": event.exit_code},
                )
            deadline.check(f"log line {pattern!r}")
        raise errors.ProcessError(f"the log stream of {self.id} ended")

    def wait_for_port(
        self,
        port: int,
        *,
        mode: Literal["http", "tcp"] = "http",
        path: str = "/",
        status: int | tuple[int, int] = (200, 399),
        timeout: float | None = None,
        interval: float = 0.5,
    ) -> None:
        """Waits until ``port`` inside the sandbox answers (``http``: a status in ``status``
        for ``GET path``; ``tcp``: accepts a connection). Raises
        ``ProcessExitedBeforeReadyError`` if the process ends first, ``ProcessReadyTimeoutError``
        after ``timeout`` seconds."""
        low, high = (status, status) if isinstance(status, int) else status
        body = {
            "port": port,
            "mode": mode,
            "path": path,
            "statusMin": low,
            "statusMax": high,
            "processId": self.id,
            "interval": duration_ms(interval),
        }
        deadline = _Deadline(timeout)
        events = self._sandbox._api_events(
            "POST", "port-watch", json=body, read_timeout=deadline.remaining()
        )
        try:
            for event in events:
                kind = event.get("type")
                if kind == "ready":
                    return
                if kind == "process_exited":
                    raise errors.ProcessExitedBeforeReadyError(
                        f"process {self.id} exited (code {event.get('exitCode')}) "
                        f"before port {port} was ready",
                        context={
                            "processId": self.id,
                            "port": port,
                            "exitCode": event.get("exitCode"),
                        },
                    )
                if kind == "error":
                    raise errors.PortOperationError(str(event.get("error")), context={"port": port})
                deadline.check(f"port {port}", errors.ProcessReadyTimeoutError)
        except errors.SandpitTimeoutError as exc:
            raise errors.ProcessReadyTimeoutError(
                f"port {port} not ready within {timeout} s"
            ) from exc
        finally:
            _close(events)
        raise errors.PortOperationError(f"the port watch of {port} ended early")

    def _log_events(self, deadline: _Deadline) -> Iterator[LogEvent]:
        events = self._sandbox._api_events(
            "GET", f"process/{self.id}/stream", read_timeout=deadline.remaining()
        )
        try:
            for event in events:
                yield LogEvent.from_json(event)
        finally:
            _close(events)


def _line_matcher(pattern: str | re.Pattern[str]) -> Callable[[str], Any]:
    if isinstance(pattern, str):
        return lambda line: pattern if pattern in line else None
    return pattern.search


class _Deadline:
    """A client-side wait's end (``timeout`` seconds from now; None: never)."""

    def __init__(self, timeout: float | None) -> None:
        self._clock = time.monotonic
        self._end = None if timeout is None else self._clock() + timeout
        self._timeout = timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(self._end - self._clock(), 0.001)

    def check(
        self, what: str, error: type[errors.SandpitError] = errors.SandpitTimeoutError
    ) -> None:
        if self._end is not None and self._clock() >= self._end:
            raise error(f"timed out after {self._timeout} s waiting for {what}")


class Terminal:
    """An interactive shell (PTY) in the sandbox. ``send`` keystrokes, ``recv`` output bytes,
    ``resize``; ``read_until`` collects output up to a pattern. The raw WebSocket
    (``.socket``) can be piped to xterm.js or a local TTY. Close it with ``with`` or
    :meth:`close`."""

    def __init__(self, socket: ws_client.ClientConnection) -> None:
        self.socket = socket
        self.exit_code: int | None = None

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: str | bytes) -> None:
        self.socket.send(data.encode() if isinstance(data, str) else data)

    def resize(self, cols: int, rows: int) -> None:
        self.socket.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def recv(self, timeout: float | None = None) -> bytes:
        """The next piece of output; b"" once the shell exited (``exit_code`` is then set).
        ``SandpitTimeoutError`` when nothing comes within ``timeout`` seconds."""
        while True:
            try:
                frame = recv_frame(self.socket, timeout)
            except websockets.exceptions.ConnectionClosed:
                return b""
            if isinstance(frame, bytes):
                return frame
            message = json.loads(frame)
            if message.get("type") == "exit":
                self.exit_code = message.get("code")
            elif message.get("type") == "error":
                raise errors.SandpitError(str(message.get("message")), code="INTERNAL_ERROR")

    def read_until(self, pattern: str | bytes, timeout: float | None = 30.0) -> bytes:
        """Output up to and including ``pattern`` (SandpitTimeoutError after ``timeout`` s)."""
        needle = pattern.encode() if isinstance(pattern, str) else pattern
        deadline = _Deadline(timeout)
        seen = b""
        while needle not in seen:
            chunk = self.recv(deadline.remaining())
            if not chunk:
                raise errors.SandpitError(f"the terminal closed before {pattern!r}")
            seen += chunk
            deadline.check(f"terminal output {pattern!r}")
        return seen

    def close(self) -> None:
        self.socket.close()
