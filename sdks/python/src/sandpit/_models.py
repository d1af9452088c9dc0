"""Result types: the wire's camelCase JSON read once into typed, snake_case dataclasses.

Each type keeps the JSON it was read from in ``raw``, so fields a newer server adds are not lost.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JSON = dict[str, Any]


def _decode_output(body: JSON, key: str) -> str:
    """``stdout``/``stderr`` of an exec answer (sandpit sends base64 when asked for bytes)."""
    value = str(body.get(key) or "")
    if body.get("encoding") == "base64":
        return base64.b64decode(value).decode("utf-8", "replace")
    return value


@dataclass(frozen=True)
class ExecResult:
    """The result of a finished command (the seed's ``ExecResult``)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    success: bool
    timed_out: bool = False
    session_id: str | None = None
    reason: str | None = None
    """``"oom"`` when the kernel's OOM killer ended the command (``exit_code`` 137)."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON, command: str = "") -> ExecResult:
        exit_code = int(body.get("exitCode", -1))
        return cls(
            command=str(body.get("command", command)),
            exit_code=exit_code,
            stdout=_decode_output(body, "stdout"),
            stderr=_decode_output(body, "stderr"),
            success=exit_code == 0,
            timed_out=bool(body.get("timedOut", False)),
            session_id=body.get("sessionId"),
            reason=_optional_str(body.get("reason")),
            raw=body,
        )


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ExecEvent:
    """One event of a command stream: ``start``, ``stdout``, ``stderr``, ``complete``, ``error``."""

    type: str
    data: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None
    reason: str | None = None
    """On ``complete``: ``"oom"`` when the OOM killer ended the command."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, event: JSON) -> ExecEvent:
        data = str(event.get("data") or "")
        if event.get("encoding") == "base64":
            data = base64.b64decode(data).decode("utf-8", "replace")
        code = event.get("exitCode")
        return cls(
            type=str(event.get("type", "")),
            data=data,
            exit_code=None if code is None else int(code),
            timed_out=bool(event.get("timedOut", False)),
            error=event.get("error") if isinstance(event.get("error"), str) else None,
            reason=_optional_str(event.get("reason")),
            raw=event,
        )


ProcessStatus = Literal["starting", "running", "completed", "failed", "killed", "error"]


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ProcessInfo:
    """A background process as the sandbox reports it."""

    id: str
    command: str
    status: str
    pid: int | None = None
    exit_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    session_id: str | None = None
    reason: str | None = None
    """``"oom"`` when the OOM killer ended the process (status ``killed``, exit code 137)."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> ProcessInfo:
        return cls(
            id=str(body.get("id") or body.get("processId") or ""),
            command=str(body.get("command", "")),
            status=str(body.get("status", "running")),
            pid=body.get("pid"),
            exit_code=body.get("exitCode"),
            start_time=parse_time(body.get("startTime")),
            end_time=parse_time(body.get("endTime")),
            session_id=body.get("sessionId"),
            reason=_optional_str(body.get("reason")),
            raw=body,
        )


@dataclass(frozen=True)
class ProcessLogs:
    process_id: str
    stdout: str
    stderr: str
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> ProcessLogs:
        return cls(
            process_id=str(body.get("processId", "")),
            stdout=str(body.get("stdout", "")),
            stderr=str(body.get("stderr", "")),
            raw=body,
        )


@dataclass(frozen=True)
class LogEvent:
    """One event of a process log stream: ``process_info``, ``stdout``, ``stderr``, ``exit``,
    ``error``."""

    type: str
    data: str = ""
    exit_code: int | None = None
    reason: str | None = None
    """On ``exit``: ``"oom"`` when the OOM killer ended the process."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, event: JSON) -> LogEvent:
        code = event.get("exitCode")
        return cls(
            type=str(event.get("type", "")),
            data=str(event.get("data") or event.get("error") or ""),
            exit_code=None if code is None else int(code),
            reason=_optional_str(event.get("reason")),
            raw=event,
        )


@dataclass(frozen=True)
class WaitForLogResult:
    line: str
    match: Any = None


@dataclass(frozen=True)
class FileInfo:
    name: str
    absolute_path: str
    relative_path: str
    type: str
    size: int
    modified_at: str
    mode: str
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> FileInfo:
        return cls(
            name=str(body.get("name", "")),
            absolute_path=str(body.get("absolutePath", "")),
            relative_path=str(body.get("relativePath", "")),
            type=str(body.get("type", "other")),
            size=int(body.get("size", 0)),
            modified_at=str(body.get("modifiedAt", "")),
            mode=str(body.get("mode", "")),
            raw=body,
        )

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"


@dataclass(frozen=True)
class ReadFileResult:
    """A file read through the JSON file API: ``content`` is text, or base64 for binary files
    (``encoding == "base64"``); ``bytes`` is the content as bytes either way."""

    path: str
    content: str
    encoding: str
    is_binary: bool
    mime_type: str | None
    size: int | None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> ReadFileResult:
        return cls(
            path=str(body.get("path", "")),
            content=str(body.get("content", "")),
            encoding=str(body.get("encoding", "utf-8")),
            is_binary=bool(body.get("isBinary", False)),
            mime_type=body.get("mimeType"),
            size=body.get("size"),
            raw=body,
        )

    @property
    def bytes(self) -> bytes:
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode()


@dataclass(frozen=True)
class WatchEvent:
    """A file-system change (``type == "event"``), or the watch's ``watching``/``stopped``."""

    type: str
    event_type: str | None = None
    path: str | None = None
    is_directory: bool = False
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, event: JSON) -> WatchEvent:
        return cls(
            type=str(event.get("type", "")),
            event_type=event.get("eventType"),
            path=event.get("path"),
            is_directory=bool(event.get("isDirectory", False)),
            raw=event,
        )


@dataclass(frozen=True)
class CheckChangesResult:
    status: str
    version: str
    reason: str | None = None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> CheckChangesResult:
        return cls(
            status=str(body.get("status", "")),
            version=str(body.get("version", "")),
            reason=body.get("reason"),
            raw=body,
        )


@dataclass(frozen=True)
class GitCheckoutResult:
    repo_url: str
    branch: str
    target_dir: str
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> GitCheckoutResult:
        return cls(
            repo_url=str(body.get("repoUrl", "")),
            branch=str(body.get("branch", "")),
            target_dir=str(body.get("targetDir", "")),
            raw=body,
        )


@dataclass(frozen=True)
class CodeContext:
    id: str
    language: str
    cwd: str

    @classmethod
    def from_json(cls, body: JSON) -> CodeContext:
        return cls(
            id=str(body.get("contextId") or body.get("id") or ""),
            language=str(body.get("language", "python")),
            cwd=str(body.get("cwd", "")),
        )


# MIME type of each representation a result may carry, as Jupyter names them.
_MIME = {
    "text": "text/plain",
    "html": "text/html",
    "markdown": "text/markdown",
    "latex": "text/latex",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "json": "application/json",
    "javascript": "application/javascript",
}


@dataclass(frozen=True)
class Result:
    """One rich output of a code run (a value, a figure...), with every representation the
    interpreter produced. ``png``/``jpeg`` are bytes (decoded from the wire's base64). The
    ``_repr_*_`` hooks make it render in Jupyter/IPython as it would have locally."""

    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    latex: str | None = None
    svg: str | None = None
    png: bytes | None = None
    jpeg: bytes | None = None
    json: Any = None
    javascript: str | None = None
    metadata: JSON = field(default_factory=dict)
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, event: JSON) -> Result:
        # The seed's executors may also send a Jupyter-style `data` bundle.
        bundle = dict(event)
        for kind, mime in _MIME.items():
            if kind not in bundle and isinstance(event.get("data"), dict):
                bundle[kind] = event["data"].get(mime)

        def image(kind: str) -> bytes | None:
            value = bundle.get(kind)
            return base64.b64decode(value) if isinstance(value, str) else None

        def text(kind: str) -> str | None:
            value = bundle.get(kind)
            return value if isinstance(value, str) else None

        payload = bundle.get("json")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                pass
        metadata = event.get("metadata")
        return cls(
            text=text("text"),
            html=text("html"),
            markdown=text("markdown"),
            latex=text("latex"),
            svg=text("svg"),
            png=image("png"),
            jpeg=image("jpeg"),
            json=payload,
            javascript=text("javascript"),
            metadata=metadata if isinstance(metadata, dict) else {},
            raw=event,
        )

    def formats(self) -> list[str]:
        """The representations present (``["text", "png"]``...)."""
        return [kind for kind in _MIME if getattr(self, kind) is not None]

    def save_png(self, path: str) -> None:
        """Writes the PNG representation to ``path`` (ValueError when there is none)."""
        if self.png is None:
            raise ValueError("this result has no PNG representation")
        with open(path, "wb") as file:
            file.write(self.png)

    # IPython display hooks: each returns None when the representation is absent.
    def _repr_png_(self) -> bytes | None:
        return self.png

    def _repr_jpeg_(self) -> bytes | None:
        return self.jpeg

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown

    def _repr_latex_(self) -> str | None:
        return self.latex

    def _repr_json_(self) -> Any:
        return self.json

    def _repr_javascript_(self) -> str | None:
        return self.javascript

    def __str__(self) -> str:
        return self.text or ""


@dataclass(frozen=True)
class ExecutionError:
    """A run's exception: ``name`` (``ename``), ``message`` (``evalue``), the traceback."""

    name: str
    message: str
    traceback: list[str]

    @classmethod
    def from_json(cls, event: JSON) -> ExecutionError:
        traceback = event.get("traceback")
        return cls(
            name=str(event.get("ename") or event.get("name") or ""),
            message=str(event.get("evalue") or event.get("message") or ""),
            traceback=[str(line) for line in traceback] if isinstance(traceback, list) else [],
        )


@dataclass
class Execution:
    """The outcome of ``run_code``: output, rich results and the error if the code raised."""

    code: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The text of the main result (the value of the last expression), if any."""
        for result in self.results:
            if result.text is not None:
                return result.text
        return None

    @property
    def logs(self) -> dict[str, list[str]]:
        return {"stdout": self.stdout, "stderr": self.stderr}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any] | None:
        """Renders like the run's main result would in a notebook."""
        if not self.results:
            return None
        main = self.results[-1]
        bundle: dict[str, Any] = {}
        for kind, mime in _MIME.items():
            value = getattr(main, kind)
            if value is not None:
                bundle[mime] = value
        return bundle


@dataclass(frozen=True)
class ExposedPort:
    port: int
    url: str
    token: str
    name: str | None = None
    stale: bool = False
    """The URL answers 410 ``STALE_PREVIEW_URL``: the sandbox slept, restarted or was
    recreated since the port was exposed. Start the server again and expose the port again
    (same ``token`` to keep the URL)."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> ExposedPort:
        return cls(
            port=int(body["port"]),
            url=str(body.get("url", "")),
            token=str(body.get("token", "")),
            name=body.get("name"),
            stale=bool(body.get("stale", False)),
            raw=body,
        )


@dataclass(frozen=True)
class SandboxEvent:
    """One change of one of the tenant's sandboxes (``watch_sandboxes``, ``GET /v1/events``).
    ``kind`` is ``created``, ``started``, ``stopped``, ``updated`` or ``destroyed``, or
    ``lagged`` when the stream fell behind and missed ``missed`` events (list the sandboxes
    again; the other fields are then empty)."""

    kind: str
    sandbox_id: str = ""
    state: str = ""
    """The state after the change (``destroyed`` once gone)."""
    seq: int = 0
    at: str = ""
    missed: int = 0

    @classmethod
    def from_json(cls, body: JSON) -> SandboxEvent:
        if "missed" in body and "seq" not in body:
            return cls(kind="lagged", missed=int(body["missed"]))
        return cls(
            kind=str(body.get("kind", "")),
            sandbox_id=str(body.get("sandboxId", "")),
            state=str(body.get("state", "")),
            seq=int(body.get("seq", 0)),
            at=str(body.get("at", "")),
        )


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the control plane reports it."""

    id: str
    image: str
    state: str
    keep_alive: bool
    ephemeral: bool
    sleep_after_secs: int
    env: dict[str, str]
    limits: JSON
    network: JSON
    secrets: list[JSON]
    created_at: str
    last_active_at: str
    keep_alive_while_busy: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    """When the sandbox is destroyed (its ``ttl`` runs out); None: never."""
    pending_restart: list[str] = field(default_factory=list)
    """In the answer to ``update``: changed options that apply at the next start
    (``"env"``, ``"limits.diskMb"``)."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> SandboxInfo:
        return cls(
            id=str(body["id"]),
            image=str(body.get("image", "")),
            state=str(body.get("state", "")),
            keep_alive=bool(body.get("keepAlive", False)),
            ephemeral=bool(body.get("ephemeral", False)),
            sleep_after_secs=int(body.get("sleepAfterSecs", 0)),
            env=dict(body.get("env") or {}),
            limits=dict(body.get("limits") or {}),
            network=dict(body.get("network") or {}),
            secrets=list(body.get("secrets") or []),
            created_at=str(body.get("createdAt", "")),
            last_active_at=str(body.get("lastActiveAt", "")),
            keep_alive_while_busy=bool(body.get("keepAliveWhileBusy", True)),
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            expires_at=parse_time(body.get("expiresAt")),
            pending_restart=[str(item) for item in body.get("pendingRestart") or []],
            raw=body,
        )


@dataclass(frozen=True)
class SandboxUsage:
    """What a sandbox uses now (``usage()``). CPU, memory and pids cover the current run (zero
    while it sleeps); ``disk_bytes`` is kept across sleep (a lower bound when not
    ``disk_complete``); network bytes count traffic through the egress proxy."""

    state: str
    cpu_usec: int
    memory_bytes: int
    memory_peak_bytes: int
    pids: int
    disk_bytes: int
    disk_complete: bool
    network_bytes_up: int
    network_bytes_down: int
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> SandboxUsage:
        return cls(
            state=str(body.get("state", "")),
            cpu_usec=int(body.get("cpuUsec", 0)),
            memory_bytes=int(body.get("memoryBytes", 0)),
            memory_peak_bytes=int(body.get("memoryPeakBytes", 0)),
            pids=int(body.get("pids", 0)),
            disk_bytes=int(body.get("diskBytes", 0)),
            disk_complete=bool(body.get("diskComplete", True)),
            network_bytes_up=int(body.get("networkBytesUp", 0)),
            network_bytes_down=int(body.get("networkBytesDown", 0)),
            raw=body,
        )


@dataclass(frozen=True)
class BackupInfo:
    """A backup of a sandbox directory (``create_backup``, ``get_backup``, ``list_backups``):
    the seed's ``DirectoryBackup`` (``id``, ``dir``) with its size, digest and expiry."""

    id: str
    dir: str
    sandbox_id: str
    size_bytes: int
    """Bytes of the compressed archive as stored."""
    raw_bytes: int
    """Bytes of the uncompressed archive."""
    sha256: str
    created_at: str
    expires_at: str
    name: str | None = None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> BackupInfo:
        return cls(
            id=str(body["id"]),
            dir=str(body.get("dir", "")),
            sandbox_id=str(body.get("sandboxId", "")),
            size_bytes=int(body.get("sizeBytes", 0)),
            raw_bytes=int(body.get("rawBytes", 0)),
            sha256=str(body.get("sha256", "")),
            created_at=str(body.get("createdAt", "")),
            expires_at=str(body.get("expiresAt", "")),
            name=_optional_str(body.get("name")),
            raw=body,
        )


@dataclass(frozen=True)
class RestoreBackupResult:
    """The seed's ``RestoreBackupResult`` with sandpit's counts."""

    success: bool
    id: str
    dir: str
    entries: int = 0
    """Files, directories and symlinks written."""
    file_bytes: int = 0
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> RestoreBackupResult:
        return cls(
            success=bool(body.get("success", False)),
            id=str(body.get("id", "")),
            dir=str(body.get("dir", "")),
            entries=int(body.get("entries", 0)),
            file_bytes=int(body.get("fileBytes", 0)),
            raw=body,
        )


@dataclass(frozen=True)
class SnapshotExport:
    """An export of a snapshot in the server's object store (:meth:`export_snapshot`)."""

    object_key: str
    """The object's key: pass it to :meth:`import_snapshot` on this or another server using
    the same store."""
    size_bytes: int
    """Bytes of the stored (zstd-compressed) archive."""
    raw_bytes: int
    """Bytes of the uncompressed archive."""
    sha256: str
    """Hex SHA-256 of the stored archive."""
    snapshot_id: str
    """The snapshot exported."""
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> SnapshotExport:
        return cls(
            object_key=str(body["objectKey"]),
            size_bytes=int(body.get("sizeBytes", 0)),
            raw_bytes=int(body.get("rawBytes", 0)),
            sha256=str(body.get("sha256", "")),
            snapshot_id=str(body.get("snapshotId", "")),
            raw=body,
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """An immutable snapshot of a sandbox's file system (processes are not part of it)."""

    id: str
    sandbox_id: str
    """The sandbox it was taken of (which may be gone since)."""
    image: str
    size_bytes: int
    created_at: str
    name: str | None = None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> SnapshotInfo:
        return cls(
            id=str(body["id"]),
            sandbox_id=str(body.get("sandboxId", "")),
            image=str(body.get("image", "")),
            size_bytes=int(body.get("sizeBytes", 0)),
            created_at=str(body.get("createdAt", "")),
            name=_optional_str(body.get("name")),
            raw=body,
        )


@dataclass(frozen=True)
class BucketMount:
    """A bucket mount of a sandbox as listed (never its credentials)."""

    bucket: str
    mount_path: str
    endpoint: str
    read_only: bool
    mounted: bool
    """The mount is up (False while the sandbox sleeps; it comes back at wake)."""
    created_at: str
    prefix: str | None = None
    region: str | None = None
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> BucketMount:
        return cls(
            bucket=str(body.get("bucket", "")),
            mount_path=str(body.get("mountPath", "")),
            endpoint=str(body.get("endpoint", "")),
            read_only=bool(body.get("readOnly", False)),
            mounted=bool(body.get("mounted", False)),
            created_at=str(body.get("createdAt", "")),
            prefix=_optional_str(body.get("prefix")),
            region=_optional_str(body.get("region")),
            raw=body,
        )


@dataclass(frozen=True)
class ForkResult:
    """The answer of ``fork``: the snapshot it took and the children, running (open one with
    ``client.sandbox(child.id)``)."""

    snapshot: SnapshotInfo
    sandboxes: list[SandboxInfo]
    raw: JSON = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: JSON) -> ForkResult:
        return cls(
            snapshot=SnapshotInfo.from_json(body["snapshot"]),
            sandboxes=[SandboxInfo.from_json(item) for item in body.get("sandboxes", [])],
            raw=body,
        )
