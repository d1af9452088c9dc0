// Typed errors. Every error the server answers is an `ErrorResponse` envelope whose `code` comes
// from the protocol's one error table (error-codes.ts); `errorFromResponse` turns it into the
// class the seed's SDK throws for that code, so `catch (e) { if (e instanceof
// FileNotFoundError) ... }` ports unchanged. Failures that never got an answer (server down, no
// answer in time) are `ConnectionError`s with a client-side code.

import { ERROR_STATUS, type ErrorCode } from './error-codes.js';

/** Codes the SDK itself gives without an answer from the server (not in the server's table):
 * the server could not be reached or did not answer in time, or the call is one of the seed's
 * that this server does not serve (`NOT_SUPPORTED`, thrown before any request). */
export type ClientErrorCode = 'CONNECTION_FAILED' | 'REQUEST_TIMEOUT' | 'NOT_SUPPORTED';

/** The server's error envelope (the seed's `ErrorResponse`). */
export interface ErrorResponse {
  code: ErrorCode;
  message: string;
  context: Record<string, unknown>;
  httpStatus: number;
  timestamp?: string;
  operation?: string;
  suggestion?: string;
}

/** Base class of every error this SDK throws. */
export class SandboxError extends Error {
  readonly code: ErrorCode | ClientErrorCode;
  /** The HTTP status of the answer (0 when no answer came). */
  readonly httpStatus: number;
  readonly context: Record<string, unknown>;
  readonly operation: string | undefined;
  readonly suggestion: string | undefined;
  readonly timestamp: string | undefined;

  constructor(response: ErrorResponse | ClientErrorInit, options?: { cause?: unknown }) {
    super(response.message, options);
    this.name = new.target.name;
    this.code = response.code;
    this.httpStatus = response.httpStatus;
    this.context = response.context ?? {};
    this.operation = 'operation' in response ? response.operation : undefined;
    this.suggestion = 'suggestion' in response ? response.suggestion : undefined;
    this.timestamp = 'timestamp' in response ? response.timestamp : undefined;
  }

  /** The envelope, as the server would have sent it. */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      httpStatus: this.httpStatus,
      context: this.context,
    };
  }
}

interface ClientErrorInit {
  code: ClientErrorCode;
  message: string;
  httpStatus: 0;
  context: Record<string, unknown>;
}

// Files
export class FileNotFoundError extends SandboxError {}
export class FileExistsError extends SandboxError {}
export class FileSystemError extends SandboxError {}
export class PermissionDeniedError extends SandboxError {}
// Commands and processes
export class CommandNotFoundError extends SandboxError {}
export class CommandError extends SandboxError {}
export class ProcessNotFoundError extends SandboxError {}
export class ProcessError extends SandboxError {}
export class ProcessReadyTimeoutError extends SandboxError {}
export class ProcessExitedBeforeReadyError extends SandboxError {}
// Sessions
export class SessionAlreadyExistsError extends SandboxError {}
export class SessionTerminatedError extends SandboxError {}
// Ports
export class PortNotExposedError extends SandboxError {}
export class InvalidPortError extends SandboxError {}
export class PortError extends SandboxError {}
export class ServiceNotRespondingError extends SandboxError {}
// Git
export class GitRepositoryNotFoundError extends SandboxError {}
export class GitBranchNotFoundError extends SandboxError {}
export class GitAuthenticationError extends SandboxError {}
export class GitNetworkError extends SandboxError {}
export class InvalidGitUrlError extends SandboxError {}
export class GitError extends SandboxError {}
// Code interpreter
export class ContextNotFoundError extends SandboxError {}
export class InterpreterNotReadyError extends SandboxError {}
export class CodeExecutionError extends SandboxError {}
export class PythonNotAvailableError extends SandboxError {}
export class JavaScriptNotAvailableError extends SandboxError {}
// Requests and the platform
export class ValidationFailedError extends SandboxError {}
/** A call or stream cut short: `reason` is `stopped`, `destroyed` or `shutdown` when the server
 * cut it (the sandbox was stopped or destroyed, or the server shut down), `cancelled` when the
 * caller's AbortSignal did. */
export class OperationInterruptedError extends SandboxError {
  get reason(): 'stopped' | 'destroyed' | 'shutdown' | 'cancelled' | undefined {
    const reason = this.context.reason;
    if (reason === 'stopped' || reason === 'destroyed' || reason === 'shutdown') return reason;
    return this.context.cancelled === true ? 'cancelled' : undefined;
  }
}
export class ContainerUnavailableError extends SandboxError {}
export class WatchError extends SandboxError {}
// sandpit's control plane
export class UnauthorizedError extends SandboxError {}
export class SandboxNotFoundError extends SandboxError {}
export class SandboxConflictError extends SandboxError {}
export class SandboxUnavailableError extends SandboxError {}
export class SandboxStartFailedError extends SandboxError {}
export class ImageNotFoundError extends SandboxError {}
export class LimitExceededError extends SandboxError {}
export class QuotaExceededError extends SandboxError {}
export class PayloadTooLargeError extends SandboxError {}
// Backups, bucket mounts (the seed's classes) and snapshots
export class BackupCreateError extends SandboxError {}
export class BackupRestoreError extends SandboxError {}
export class BackupNotFoundError extends SandboxError {}
export class BackupExpiredError extends SandboxError {}
export class InvalidBackupConfigError extends SandboxError {}
export class BucketMountError extends SandboxError {}
export class BucketUnmountError extends SandboxError {}
export class S3FSMountError extends BucketMountError {}
export class InvalidMountConfigError extends SandboxError {}
export class MissingCredentialsError extends SandboxError {}
export class TooManyMountsError extends SandboxError {}
export class SnapshotNotFoundError extends SandboxError {}
export class SnapshotInUseError extends SandboxError {}
export class SnapshotUnsupportedError extends SandboxError {}
export class SnapshotExportNotFoundError extends SandboxError {}
export class SnapshotExportError extends SandboxError {}
export class SnapshotImportError extends SandboxError {}
// Cluster mode: the node holding the sandbox stopped answering its heartbeats
export class NodeUnavailableError extends SandboxError {}
/** The server could not be reached, or did not answer in time (`code` CONNECTION_FAILED /
 * REQUEST_TIMEOUT, `httpStatus` 0). */
export class ConnectionError extends SandboxError {}
/** A method of the seed's API that this server does not serve (Cloudflare tunnels, Worker-side
 * proxying, R2-binding and local bucket mounts): `code` NOT_SUPPORTED, `httpStatus` 0, `context.method` names
 * it and `context.alternative` says what to use instead, if anything. Thrown before any request. */
export class NotSupportedError extends SandboxError {}

type ErrorClass = new (response: ErrorResponse) => SandboxError;

// Codes without an entry here become a plain `SandboxError` (still with their code).
const CLASS_BY_CODE: Partial<Record<ErrorCode, ErrorClass>> = {
  FILE_NOT_FOUND: FileNotFoundError,
  FILE_EXISTS: FileExistsError,
  IS_DIRECTORY: FileSystemError,
  NOT_DIRECTORY: FileSystemError,
  NAME_TOO_LONG: FileSystemError,
  NO_SPACE: FileSystemError,
  TOO_MANY_FILES: FileSystemError,
  TOO_MANY_LINKS: FileSystemError,
  FILESYSTEM_ERROR: FileSystemError,
  FILE_TOO_LARGE: FileSystemError,
  READ_ONLY: FileSystemError,
  RESOURCE_BUSY: FileSystemError,
  PERMISSION_DENIED: PermissionDeniedError,
  COMMAND_PERMISSION_DENIED: PermissionDeniedError,
  PROCESS_PERMISSION_DENIED: PermissionDeniedError,
  COMMAND_NOT_FOUND: CommandNotFoundError,
  COMMAND_EXECUTION_ERROR: CommandError,
  INVALID_COMMAND: CommandError,
  STREAM_START_ERROR: CommandError,
  PROCESS_NOT_FOUND: ProcessNotFoundError,
  PROCESS_ERROR: ProcessError,
  PROCESS_READY_TIMEOUT: ProcessReadyTimeoutError,
  PROCESS_EXITED_BEFORE_READY: ProcessExitedBeforeReadyError,
  SESSION_ALREADY_EXISTS: SessionAlreadyExistsError,
  SESSION_TERMINATED: SessionTerminatedError,
  SESSION_DESTROYED: SessionTerminatedError,
  PORT_NOT_EXPOSED: PortNotExposedError,
  INVALID_PORT_NUMBER: InvalidPortError,
  INVALID_PORT: InvalidPortError,
  PORT_ALREADY_EXPOSED: PortError,
  PORT_IN_USE: PortError,
  PORT_OPERATION_ERROR: PortError,
  SERVICE_NOT_RESPONDING: ServiceNotRespondingError,
  GIT_REPOSITORY_NOT_FOUND: GitRepositoryNotFoundError,
  GIT_BRANCH_NOT_FOUND: GitBranchNotFoundError,
  GIT_AUTH_FAILED: GitAuthenticationError,
  GIT_NETWORK_ERROR: GitNetworkError,
  INVALID_GIT_URL: InvalidGitUrlError,
  GIT_CLONE_FAILED: GitError,
  GIT_CHECKOUT_FAILED: GitError,
  GIT_OPERATION_FAILED: GitError,
  CONTEXT_NOT_FOUND: ContextNotFoundError,
  INTERPRETER_NOT_READY: InterpreterNotReadyError,
  CODE_EXECUTION_ERROR: CodeExecutionError,
  PYTHON_NOT_AVAILABLE: PythonNotAvailableError,
  JAVASCRIPT_NOT_AVAILABLE: JavaScriptNotAvailableError,
  VALIDATION_FAILED: ValidationFailedError,
  OPERATION_INTERRUPTED: OperationInterruptedError,
  CONTAINER_UNAVAILABLE: ContainerUnavailableError,
  WATCH_NOT_FOUND: WatchError,
  WATCH_START_ERROR: WatchError,
  WATCH_STOP_ERROR: WatchError,
  UNAUTHORIZED: UnauthorizedError,
  SANDBOX_NOT_FOUND: SandboxNotFoundError,
  SANDBOX_CONFLICT: SandboxConflictError,
  SANDBOX_UNAVAILABLE: SandboxUnavailableError,
  SANDBOX_START_FAILED: SandboxStartFailedError,
  IMAGE_NOT_FOUND: ImageNotFoundError,
  LIMIT_EXCEEDED: LimitExceededError,
  QUOTA_EXCEEDED: QuotaExceededError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  BACKUP_CREATE_FAILED: BackupCreateError,
  BACKUP_RESTORE_FAILED: BackupRestoreError,
  BACKUP_NOT_FOUND: BackupNotFoundError,
  BACKUP_EXPIRED: BackupExpiredError,
  INVALID_BACKUP_CONFIG: InvalidBackupConfigError,
  BUCKET_MOUNT_ERROR: BucketMountError,
  BUCKET_UNMOUNT_ERROR: BucketUnmountError,
  S3FS_MOUNT_ERROR: S3FSMountError,
  INVALID_MOUNT_CONFIG: InvalidMountConfigError,
  TOO_MANY_MOUNTS: TooManyMountsError,
  MISSING_CREDENTIALS: MissingCredentialsError,
  SNAPSHOT_NOT_FOUND: SnapshotNotFoundError,
  SNAPSHOT_IN_USE: SnapshotInUseError,
  SNAPSHOT_UNSUPPORTED: SnapshotUnsupportedError,
  SNAPSHOT_EXPORT_NOT_FOUND: SnapshotExportNotFoundError,
  SNAPSHOT_EXPORT_FAILED: SnapshotExportError,
  SNAPSHOT_IMPORT_FAILED: SnapshotImportError,
  NODE_UNAVAILABLE: NodeUnavailableError,
};

/** Whether `code` is in the protocol's error table. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_STATUS, code);
}

/** The typed error for an error envelope (the seed's `createErrorFromResponse`). */
export function errorFromResponse(body: ErrorResponse): SandboxError {
  const Class = CLASS_BY_CODE[body.code] ?? SandboxError;
  return new Class(body);
}

/** The typed error for a non-2xx answer whose body may or may not be an envelope. */
export function errorFromHttp(status: number, bodyText: string): SandboxError {
  try {
    const body = JSON.parse(bodyText) as Partial<ErrorResponse>;
    if (isErrorCode(body.code)) {
      return errorFromResponse({
        code: body.code,
        message: body.message ?? `HTTP error! status: ${status}`,
        context: body.context ?? {},
        httpStatus: body.httpStatus ?? status,
        ...(body.timestamp === undefined ? {} : { timestamp: body.timestamp }),
        ...(body.operation === undefined ? {} : { operation: body.operation }),
        ...(body.suggestion === undefined ? {} : { suggestion: body.suggestion }),
      });
    }
  } catch {
    // Not JSON: fall through to the seed's generic error.
  }
  return new SandboxError({
    code: 'INTERNAL_ERROR',
    message: `HTTP error! status: ${status}${bodyText ? `: ${bodyText.slice(0, 200)}` : ''}`,
    context: {},
    httpStatus: status,
  });
}

/** A client-side error: the request got no answer. */
export function connectionError(
  code: ClientErrorCode,
  message: string,
  context: Record<string, unknown>,
  cause?: unknown,
): ConnectionError {
  return new ConnectionError({ code, message, httpStatus: 0, context }, { cause });
}

/** The error of a seed method sandpit does not serve (see `NotSupportedError`). */
export function notSupported(method: string, why: string, alternative?: string): NotSupportedError {
  return new NotSupportedError({
    code: 'NOT_SUPPORTED',
    message: `${method} is not supported by this server: ${why}${alternative ? `; ${alternative}` : ''}`,
    httpStatus: 0,
    context: { method, ...(alternative ? { alternative } : {}) },
  });
}

/** The error of an operation the caller cancelled with an AbortSignal: the request was closed,
 * which makes the server stop the remote command or run (`context.remoteStopped`). */
export function cancelledError(operation: string, reason: unknown): OperationInterruptedError {
  return new OperationInterruptedError(
    {
      code: 'OPERATION_INTERRUPTED',
      message: `${operation} was cancelled by its AbortSignal; the server stops the remote command when the request closes`,
      context: { operation, cancelled: true, remoteStopped: true },
      httpStatus: ERROR_STATUS.OPERATION_INTERRUPTED,
      operation,
    },
    { cause: reason },
  );
}
