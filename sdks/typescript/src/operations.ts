// The methods a sandbox and an execution session share (reference §1.4): the same calls, with
// the session they run in bound. `Sandbox` binds its default session, `ExecutionSession` its own.

import * as commands from './commands.js';
import * as files from './files.js';
import * as interpreter from './interpreter.js';
import * as processes from './processes.js';
import { DISABLE_SESSION, type SandboxScope } from './scope.js';
import { notSupported } from './errors.js';
import { openTerminal, terminalUrl, type Terminal } from './terminal.js';
import type {
  BackupInfo,
  BackupOptions,
  CheckChangesOptions,
  CheckChangesResult,
  CodeContext,
  CreateContextOptions,
  DeleteFileResult,
  DirectoryBackup,
  ExecOptions,
  ExecResult,
  ExecutionResult,
  FileExistsResult,
  GitCheckoutOptions,
  GitCheckoutResult,
  ListFilesResult,
  MkdirResult,
  MountBucketOptions,
  MoveFileResult,
  Process,
  ProcessOptions,
  ReadFileResult,
  ReadFileStreamResult,
  RenameFileResult,
  RestoreBackupResult,
  RunCodeOptions,
  StreamOptions,
  StreamProcessLogsOptions,
  TerminalOptions,
  WatchOptions,
  WriteFileResult,
} from './types.js';

/** What to use instead of the seed's mount forms sandpit does not serve. */
export const UNSERVED_ALTERNATIVE = {
  mount:
    'pass the S3 API endpoint and credentials: mountBucket(bucket, path, { endpoint, credentials })',
} as const;

/** The seed's fallback keys: `AWS_*`, then `R2_*` of this process (undefined: none set; the
 * server then answers `MISSING_CREDENTIALS`). */
function credentialsFromEnv(): { accessKeyId: string; secretAccessKey: string } | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  for (const prefix of ['AWS', 'R2']) {
    const accessKeyId = env?.[`${prefix}_ACCESS_KEY_ID`];
    const secretAccessKey = env?.[`${prefix}_SECRET_ACCESS_KEY`];
    if (accessKeyId && secretAccessKey) return { accessKeyId, secretAccessKey };
  }
  return undefined;
}

export class Operations {
  protected readonly scope: SandboxScope;
  /** The session calls run in (undefined: the agent's default session). */
  protected readonly sessionId: string | undefined;
  protected readonly contexts: interpreter.DefaultContexts;

  protected constructor(
    scope: SandboxScope,
    sessionId: string | undefined,
    contexts: interpreter.DefaultContexts,
  ) {
    this.scope = scope;
    this.sessionId = sessionId;
    this.contexts = contexts;
  }

  // ---- commands ------------------------------------------------------------------------------

  exec(command: string, options: ExecOptions = {}): Promise<ExecResult> {
    return commands.exec(
      this.scope,
      this.#session(options.sessionId ?? options.session),
      command,
      options,
    );
  }

  execStream(
    command: string,
    options: StreamOptions & { sessionId?: string } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    return commands.execStream(this.scope, this.#session(options.sessionId), command, options);
  }

  // ---- processes (sandbox-scoped; the session only supplies the shell) -----------------------

  startProcess(command: string, options: ProcessOptions = {}): Promise<Process> {
    return processes.startProcess(this.scope, this.#session(options.sessionId), command, options);
  }

  listProcesses(_sessionId?: string): Promise<Process[]> {
    return processes.listProcesses(this.scope);
  }

  getProcess(id: string, _sessionId?: string): Promise<Process | null> {
    return processes.getProcess(this.scope, id);
  }

  killProcess(id: string, signal?: string): Promise<void> {
    return processes.killProcess(this.scope, id, signal);
  }

  killAllProcesses(): Promise<number> {
    return processes.killAllProcesses(this.scope);
  }

  /** Completed processes are kept for their logs; like the seed, this is a no-op returning 0. */
  async cleanupCompletedProcesses(): Promise<number> {
    return 0;
  }

  getProcessLogs(id: string): Promise<{ stdout: string; stderr: string; processId: string }> {
    return processes.getProcessLogs(this.scope, id);
  }

  streamProcessLogs(
    processId: string,
    options?: StreamProcessLogsOptions,
  ): Promise<ReadableStream<Uint8Array>> {
    return processes.streamProcessLogs(this.scope, processId, options);
  }

  // ---- files ---------------------------------------------------------------------------------

  writeFile(
    path: string,
    content: files.WriteContent,
    options: { encoding?: string; sessionId?: string } = {},
  ): Promise<WriteFileResult> {
    return files.writeFile(this.scope, this.#session(options.sessionId), path, content, options);
  }

  readFile(
    path: string,
    options: { encoding: 'none'; sessionId?: string },
  ): Promise<ReadFileStreamResult>;
  readFile(
    path: string,
    options?: { encoding?: 'utf-8' | 'utf8' | 'base64'; sessionId?: string },
  ): Promise<ReadFileResult>;
  readFile(
    path: string,
    options: { encoding?: 'utf-8' | 'utf8' | 'base64' | 'none'; sessionId?: string } = {},
  ): Promise<ReadFileResult | ReadFileStreamResult> {
    const session = this.#session(options.sessionId);
    if (options.encoding === 'none') return files.readFileRaw(this.scope, session, path);
    return files.readFile(this.scope, session, path, options as files.ReadFileOptions);
  }

  readFileStream(path: string, options: { sessionId?: string } = {}) {
    return files.readFileStream(this.scope, this.#session(options.sessionId), path);
  }

  mkdir(
    path: string,
    options: { recursive?: boolean; sessionId?: string } = {},
  ): Promise<MkdirResult> {
    return files.mkdir(this.scope, this.#session(options.sessionId), path, options);
  }

  deleteFile(path: string, sessionId?: string): Promise<DeleteFileResult> {
    return files.deleteFile(this.scope, this.#session(sessionId), path);
  }

  renameFile(oldPath: string, newPath: string, sessionId?: string): Promise<RenameFileResult> {
    return files.renameFile(this.scope, this.#session(sessionId), oldPath, newPath);
  }

  moveFile(
    sourcePath: string,
    destinationPath: string,
    sessionId?: string,
  ): Promise<MoveFileResult> {
    return files.moveFile(this.scope, this.#session(sessionId), sourcePath, destinationPath);
  }

  listFiles(
    path: string,
    options: { recursive?: boolean; includeHidden?: boolean; sessionId?: string } = {},
  ): Promise<ListFilesResult> {
    return files.listFiles(this.scope, this.#session(options.sessionId), path, options);
  }

  exists(path: string, sessionId?: string): Promise<FileExistsResult> {
    return files.exists(this.scope, this.#session(sessionId), path);
  }

  watch(path: string, options: WatchOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return files.watch(this.scope, this.#session(options.sessionId), path, options);
  }

  checkChanges(path: string, options: CheckChangesOptions = {}): Promise<CheckChangesResult> {
    return files.checkChanges(this.scope, this.#session(options.sessionId), path, options);
  }

  gitCheckout(
    repoUrl: string,
    options: GitCheckoutOptions | string = {},
  ): Promise<GitCheckoutResult> {
    return files.gitCheckout(this.scope, this.sessionId, repoUrl, options);
  }

  // ---- environment ---------------------------------------------------------------------------

  /** Sets (string) or unsets (undefined/null) variables in this session and in every session,
   * process and command started afterwards; kept across sleep. */
  async setEnvVars(env: Record<string, string | undefined | null>): Promise<void> {
    const body = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v ?? null]));
    // Sessionless sandboxes change only what later commands start with (no session to export in).
    const session = this.#session(undefined);
    await this.scope.controlJson('/env', {
      json: { env: body, sessionId: session === DISABLE_SESSION ? undefined : session },
      operation: 'setEnvVars',
    });
  }

  // ---- code interpreter (sandbox-scoped) -----------------------------------------------------

  createCodeContext(options?: CreateContextOptions): Promise<CodeContext> {
    return interpreter.createCodeContext(this.scope, options);
  }

  runCode(code: string, options?: RunCodeOptions): Promise<ExecutionResult> {
    return interpreter.runCode(this.scope, this.contexts, code, options);
  }

  runCodeStream(code: string, options?: RunCodeOptions): Promise<ReadableStream<Uint8Array>> {
    return interpreter.runCodeStream(this.scope, this.contexts, code, options);
  }

  listCodeContexts(): Promise<CodeContext[]> {
    return interpreter.listCodeContexts(this.scope);
  }

  async deleteCodeContext(id: string): Promise<void> {
    await interpreter.deleteCodeContext(this.scope, id);
    this.contexts.forget(id);
  }

  // ---- the seed's bucket mounts and backups (docs/persistence.md) ---------------------------

  /** Mounts `bucket` at `mountPath` inside the sandbox (`POST /v1/sandboxes/{id}/mounts`): an
   * s3fs FUSE file system the server runs outside the sandbox, so the keys never enter it. The
   * mount comes back whenever the sandbox wakes, until `unmountBucket` or destroy. */
  async mountBucket(
    bucket: string,
    mountPath: string,
    options: MountBucketOptions = {},
  ): Promise<void> {
    if (options.localBucket === true || options.endpoint === undefined) {
      throw notSupported(
        'mountBucket',
        options.localBucket === true
          ? 'localBucket syncs through an R2 binding of a Worker'
          : 'an R2 binding (no endpoint) exists only in a Worker',
        UNSERVED_ALTERNATIVE.mount,
      );
    }
    await this.scope.controlJson('/mounts', {
      json: {
        bucket,
        mountPath,
        endpoint: options.endpoint,
        credentials: options.credentials ?? credentialsFromEnv(),
        prefix: options.prefix,
        readOnly: options.readOnly,
        region: options.region,
        provider: options.provider,
        s3fsOptions: options.s3fsOptions,
      },
      operation: 'mountBucket',
      longRunning: true,
    });
  }

  /** Unmounts the bucket mounted at `mountPath` and forgets it (`INVALID_MOUNT_CONFIG` when
   * nothing is mounted there). */
  async unmountBucket(mountPath: string): Promise<void> {
    await this.scope.controlJson('/mounts', {
      method: 'DELETE',
      query: { path: mountPath },
      operation: 'unmountBucket',
    });
  }

  /** Archives `options.dir` into the server's object store (zstd, checksummed); the answer is
   * the seed's `DirectoryBackup` with sandpit's size, digest and expiry. */
  createBackup(options: BackupOptions): Promise<BackupInfo> {
    const compression =
      options.compression === undefined
        ? undefined
        : { format: options.compression.format, level: options.compression.level };
    return this.scope.controlJson<BackupInfo>('/backups', {
      json: {
        dir: options.dir,
        name: options.name,
        ttl: options.ttl,
        excludes: options.excludes,
        gitignore: options.gitignore,
        compression,
      },
      operation: 'createBackup',
      longRunning: true,
    });
  }

  /** Restores `backup` into this sandbox, at `backup.dir` (or `options.dir`): the directory is
   * replaced atomically (a failed restore leaves it as it was). Works across sandboxes of the
   * same tenant. */
  restoreBackup(
    backup: DirectoryBackup,
    options: { dir?: string } = {},
  ): Promise<RestoreBackupResult> {
    return this.scope.controlJson<RestoreBackupResult>('/restore', {
      json: { backupId: backup.id, dir: options.dir ?? backup.dir },
      operation: 'restoreBackup',
      longRunning: true,
    });
  }

  // ---- terminal ------------------------------------------------------------------------------

  /** Attaches to this session's PTY (started on first attach). */
  terminal(options?: TerminalOptions): Promise<Terminal> {
    return openTerminal(this.scope, this.#ptySession(), options);
  }

  /** A WebSocket URL of this session's PTY for a browser (xterm.js), with a single-use ticket. */
  terminalUrl(options?: TerminalOptions): Promise<string> {
    return terminalUrl(this.scope, this.#ptySession(), options);
  }

  #session(explicit: string | undefined): string | undefined {
    return explicit ?? this.sessionId;
  }

  #ptySession(): string {
    // A terminal always belongs to a real session; sessionless sandboxes use the default one.
    const id = this.sessionId;
    return id === undefined || id === DISABLE_SESSION ? 'default' : id;
  }
}
