"""sandpit: Python SDK for the sandpit sandbox platform.

``Sandpit`` (blocking) and ``AsyncSandpit`` (asyncio) have the same methods::

    from sandpit import Sandpit

    with Sandpit() as client, client.sandbox("user-123", ephemeral=True) as sb:
        print(sb.exec("echo hi").stdout)

Errors are the classes of :mod:`sandpit.errors`, one per code of the server's error table.
"""

from . import errors
from ._async.client import (
    AsyncEventStream,
    AsyncExecutionSession,
    AsyncProcess,
    AsyncSandbox,
    AsyncSandpit,
    AsyncTerminal,
)
from ._models import (
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
from ._sync.client import EventStream, ExecutionSession, Process, Sandbox, Sandpit, Terminal
from .errors import (
    SandpitConnectionError,
    SandpitError,
    SandpitNotSupportedError,
    SandpitTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncEventStream",
    "AsyncExecutionSession",
    "AsyncProcess",
    "AsyncSandbox",
    "AsyncSandpit",
    "AsyncTerminal",
    "BackupInfo",
    "BucketMount",
    "CheckChangesResult",
    "CodeContext",
    "EventStream",
    "ExecEvent",
    "ExecResult",
    "Execution",
    "ExecutionError",
    "ExecutionSession",
    "ExposedPort",
    "FileInfo",
    "ForkResult",
    "GitCheckoutResult",
    "LogEvent",
    "Process",
    "ProcessInfo",
    "ProcessLogs",
    "ReadFileResult",
    "RestoreBackupResult",
    "Result",
    "Sandbox",
    "SandboxEvent",
    "SandboxInfo",
    "SandboxUsage",
    "Sandpit",
    "SandpitConnectionError",
    "SandpitError",
    "SandpitNotSupportedError",
    "SandpitTimeoutError",
    "SnapshotExport",
    "SnapshotInfo",
    "Terminal",
    "WaitForLogResult",
    "WatchEvent",
    "errors",
]
