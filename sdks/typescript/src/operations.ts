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

/** What to use instead of the seed's calls sandpit does not serve. */
export const UNSERVED_ALTERNATIVE = {
  mount: 'copy data in and out with writeFile/readFile (streamed, any size)',
  backup:
    'archive a directory with exec("tar ...") and readFile(path, { encoding: "none" }); a sleeping sandbox keeps its files',
} as const;

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

  // ---- the seed's bucket mounts and backups: not served by sandpit (yet) --------------------

  /** Not supported by this server: rejects with `NotSupportedError`. */
  async mountBucket(
    _bucket: string,
    _mountPath: string,
    _options?: MountBucketOptions,
  ): Promise<void> {
    throw notSupported('mountBucket', 'sandpit has no bucket mounts', UNSERVED_ALTERNATIVE.mount);
  }

  /** Not supported by this server: rejects with `NotSupportedError`. */
  async unmountBucket(_mountPath: string): Promise<void> {
    throw notSupported('unmountBucket', 'sandpit has no bucket mounts', UNSERVED_ALTERNATIVE.mount);
  }

  /** Not supported by this server: rejects with `NotSupportedError`. */
  async createBackup(_options: BackupOptions): Promise<DirectoryBackup> {
    throw notSupported('createBackup', 'sandpit has no backups', UNSERVED_ALTERNATIVE.backup);
  }

  /** Not supported by this server: rejects with `NotSupportedError`. */
  async restoreBackup(_backup: DirectoryBackup): Promise<RestoreBackupResult> {
    throw notSupported('restoreBackup', 'sandpit has no backups', UNSERVED_ALTERNATIVE.backup);
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
