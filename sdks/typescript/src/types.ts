// Option and result types: the seed's (reference §1.2–§1.5, same names and shapes) plus
// sandpit's own options, marked as such.

// ---- Sandbox options -------------------------------------------------------------------------

/** Resource limits of a sandbox (sandpit). Unset fields take the server's defaults. */
export interface SandboxLimits {
  cpus?: number;
  memoryMb?: number;
  pids?: number;
  diskMb?: number;
}

/** Outbound network policy (sandpit); see the server's docs/networking.md. */
export interface NetworkPolicy {
  mode: 'none' | 'allowlist' | 'full';
  /** Domain patterns (`example.com`, `*.example.com`) and CIDRs. */
  allow?: string[];
}

/** A secret bound to hosts (sandpit): the sandbox sees a placeholder, the egress proxy puts the
 * value into requests to `hosts` only. */
export interface SecretSpec {
  value: string;
  hosts: string[];
  header?: string;
}

export interface SandboxOptions {
  /** Idle time before the sandbox sleeps: seconds or `"30s"`, `"5m"`, `"1h"` (default 10 min). */
  sleepAfter?: string | number;
  /** Never sleep for idleness; destroy it yourself. */
  keepAlive?: boolean;
  /** sandpit: running background processes keep the sandbox awake (default true); `false`: it
   * sleeps after `sleepAfter` without calls even while processes run (the sleep kills them). */
  keepAliveWhileBusy?: boolean;
  /** sandpit: time to live, seconds or `"30s"`, `"5m"`, `"1h"`: the sandbox is destroyed once it
   * passes, asleep or not (`SandboxInfo.expiresAt`); `0` removes it. Counted from the create-or-get
   * that sends it: once per namespace and set of options, like every option (so a Worker-style
   * `getSandbox` per request does not extend it; `setTtl` does). */
  ttl?: string | number;
  /** `false`: calls without a session run sessionless (a fresh `bash -c` each). Default true. */
  enableDefaultSession?: boolean;
  /** Lower-case the id (preview URLs need lower-case labels). */
  normalizeId?: boolean;
  /** Labels of the sandbox (at most 32; keys `[A-Za-z0-9._/-]{1,63}`, values without `=`, `,` or
   * spaces): merged into an existing sandbox's labels; `listSandboxes({ labels })` filters by them. */
  labels?: Record<string, string>;
  /** Accepted for source compatibility and ignored (sandpit has one transport: HTTP). */
  transport?: 'http' | 'websocket' | 'rpc';
  /** Accepted for source compatibility and ignored. */
  containerTimeouts?: Record<string, number>;
  /** sandpit: image of the sandbox (default `default`); fixed when it is created. */
  image?: string;
  /** sandpit: resource limits. */
  limits?: SandboxLimits;
  /** sandpit: outbound network policy (default `none`). */
  network?: NetworkPolicy;
  /** sandpit: secrets by env var name. */
  secrets?: Record<string, SecretSpec>;
  /** sandpit: drop the writable layer whenever the sandbox sleeps; fixed when created. */
  ephemeral?: boolean;
  /** sandpit: environment of the sandbox's sessions and processes. */
  env?: Record<string, string>;
  /** sandpit: start from this snapshot's file system (`createSnapshot`, `fork`) instead of a
   * fresh image; only when the sandbox is created (`SANDBOX_CONFLICT` for an existing one made
   * otherwise). */
  snapshot?: string;
}

/** A sandbox as the control plane reports it (sandpit's `SandboxInfo`). */
export interface SandboxInfo {
  id: string;
  image: string;
  state: 'creating' | 'running' | 'sleeping';
  sleepAfterSecs: number;
  keepAlive: boolean;
  /** Running background processes keep the sandbox awake. */
  keepAliveWhileBusy?: boolean;
  ephemeral: boolean;
  labels?: Record<string, string>;
  /** When the `ttl` destroys the sandbox (absent or null: never). */
  expiresAt?: string | null;
  /** On a PATCH answer: changes that wait for the next start (`"env"`, `"limits.diskMb"`). */
  pendingRestart?: string[];
  env: Record<string, string>;
  limits: SandboxLimits;
  network?: NetworkPolicy;
  secrets?: Array<{ name: string; hosts: string[]; header?: string | null }>;
  createdAt: string;
  lastActiveAt: string;
}

/** One request or connection through a sandbox's egress proxy (sandpit). */
export interface EgressLogEntry {
  time: string;
  host: string;
  port: number;
  /** `http` (a plain request) or `connect` (a tunnel, HTTPS included). */
  kind: string;
  decision: string;
  rule?: string | null;
  reason?: string | null;
  bytesUp: number;
  bytesDown: number;
}

export interface EgressLogPage {
  entries: EgressLogEntry[];
  /** Older entries dropped from the bounded log. */
  dropped: number;
}

/** The tenant's quota, usage and the server's per-sandbox caps (sandpit). */
export interface QuotaInfo {
  tenant: string;
  quota: { sandboxes?: number; runningSandboxes?: number; memoryMb?: number; diskMb?: number };
  isDefault: boolean;
  usage: { sandboxes: number; runningSandboxes: number; memoryMb: number; diskMb: number };
  caps: {
    memoryMb: number;
    cpus: number;
    pids: number;
    diskMb: number;
    exposedPorts: number;
    processes: number;
  };
}

/** What a sandbox uses now (`GET /v1/sandboxes/{id}/usage`): cgroup counters of the current run
 * (zero while it sleeps), its writable layer's bytes and its egress proxy's bytes. */
export interface SandboxUsage {
  state: SandboxInfo['state'];
  cpuUsec: number;
  memoryBytes: number;
  memoryPeakBytes: number;
  pids: number;
  diskBytes: number;
  /** false: `diskBytes` is a lower bound (the walk of the layer was cut short). */
  diskComplete: boolean;
  networkBytesUp: number;
  networkBytesDown: number;
}

/** Why a command or process ended, besides its exit code: `oom` — the kernel's OOM killer (the
 * sandbox reached `limits.memoryMb`; exit code 137). */
export type EndReason = 'oom';

export interface SandboxList {
  sandboxes: SandboxInfo[];
  nextCursor?: string | null;
}

/** One change of one of the tenant's sandboxes (`GET /v1/events`, see `watchSandboxes`). */
export interface SandboxEvent {
  /** Increases with every event the server sends (over all tenants: a tenant's stream may skip). */
  seq: number;
  sandboxId: string;
  kind: 'created' | 'started' | 'stopped' | 'updated' | 'destroyed';
  /** The state after the change. */
  state: 'creating' | 'running' | 'sleeping' | 'destroyed';
  at: string;
}

/** `watchSandboxes` fell behind and missed `missed` events: list the sandboxes again. */
export interface SandboxEventsLagged {
  kind: 'lagged';
  missed: number;
}

// ---- Commands --------------------------------------------------------------------------------

export interface BaseExecOptions {
  /** Kill the command after this many milliseconds (exit code 124, `timedOut: true`). */
  timeout?: number;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** `'base64'` (sandpit): stdout/stderr (and streamed `data`) as base64 of the exact bytes. */
  encoding?: string;
}

export interface ExecOptions extends BaseExecOptions {
  stream?: boolean;
  onOutput?: (stream: 'stdout' | 'stderr', data: string) => void;
  /** The form of the seed's guides: per-stream callbacks (implies streaming). */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  onComplete?: (result: ExecResult) => void;
  onError?: (error: Error) => void;
  /** Aborting closes the request; the server then stops the command (SIGTERM, SIGKILL 5 s later)
   * and `exec` rejects with `OperationInterruptedError`. */
  signal?: AbortSignal;
  origin?: 'user' | 'internal';
  /** Run in this session instead of the sandbox's default one. */
  sessionId?: string;
  /** Alias of `sessionId` used by some of the seed's guides. */
  session?: string;
  /** sandpit: bytes for the command's stdin (default `/dev/null`). */
  stdin?: string;
  /** sandpit: stdin fed while the command runs, chunk by chunk (EOF when it ends); exclusive with
   * `stdin`. Goes over the sandbox's WebSocket control transport (needs a WebSocket, as
   * `terminal()` does). */
  stdinStream?: StdinSource;
}

/** What `stdinStream` accepts: chunks of text (sent as UTF-8) or bytes, in order. */
export type StdinSource =
  | AsyncIterable<string | Uint8Array>
  | Iterable<string | Uint8Array>
  | ReadableStream<string | Uint8Array>;

export interface ExecResult {
  success: boolean;
  exitCode: number;
  stdout: string;
  stderr: string;
  command: string;
  duration: number;
  timestamp: string;
  sessionId?: string;
  /** sandpit: the command was killed by its `timeout`. */
  timedOut?: boolean;
  /** sandpit: `oom` when the OOM killer ended the command. */
  reason?: EndReason;
}

export interface StreamOptions extends BaseExecOptions {
  sessionId?: string;
  bufferSize?: number;
  /** Aborting closes the stream; the server then stops the command. */
  signal?: AbortSignal;
  /** sandpit: stdin fed while the command runs (see `ExecOptions.stdinStream`). */
  stdinStream?: StdinSource;
  /** sandpit: bytes for the command's stdin, all at once. */
  stdin?: string;
}

export interface ExecEvent {
  type: 'start' | 'stdout' | 'stderr' | 'complete' | 'error';
  timestamp: string;
  data?: string;
  command?: string;
  exitCode?: number;
  result?: ExecResult;
  error?: string;
  sessionId?: string;
  pid?: number;
  timedOut?: boolean;
  /** sandpit: on `complete`, `oom` when the OOM killer ended the command. */
  reason?: EndReason;
}

// ---- Processes -------------------------------------------------------------------------------

export type ProcessStatus = 'starting' | 'running' | 'completed' | 'failed' | 'killed' | 'error';

export interface ProcessOptions extends BaseExecOptions {
  sessionId?: string;
  /** sandpit: keep stdin open as a pipe for `Process.sendStdin` (default: /dev/null). */
  stdin?: boolean;
  processId?: string;
  autoCleanup?: boolean;
  onExit?: (code: number | null) => void;
  onOutput?: (stream: 'stdout' | 'stderr', data: string) => void;
  onStart?: (process: Process) => void;
  onError?: (error: Error) => void;
}

export interface WaitForLogResult {
  line: string;
  match?: RegExpMatchArray;
}

export interface WaitForExitResult {
  exitCode: number;
  /** sandpit: `oom` when the OOM killer ended the process. */
  reason?: EndReason;
}

export interface WaitForPortOptions {
  mode?: 'http' | 'tcp';
  path?: string;
  status?: number | { min: number; max: number };
  timeout?: number;
  interval?: number;
}

export interface Process {
  readonly id: string;
  readonly pid?: number;
  readonly command: string;
  readonly status: ProcessStatus;
  readonly startTime: Date;
  readonly endTime?: Date;
  readonly exitCode?: number;
  readonly sessionId?: string;
  /** sandpit: `oom` when the OOM killer ended the process. */
  readonly reason?: EndReason;
  kill(signal?: string): Promise<void>;
  getStatus(): Promise<ProcessStatus>;
  getLogs(): Promise<{ stdout: string; stderr: string }>;
  waitForLog(pattern: string | RegExp, timeout?: number): Promise<WaitForLogResult>;
  waitForPort(port: number, options?: WaitForPortOptions): Promise<void>;
  waitForExit(timeout?: number): Promise<WaitForExitResult>;
  /** sandpit: writes to the stdin of a process started with `stdin: true`; resolves once the
   * bytes are in the pipe. `close` closes stdin afterwards (EOF). */
  sendStdin(
    data: string | Uint8Array,
    options?: { close?: boolean },
  ): Promise<{ bytesWritten: number; closed: boolean }>;
  /** sandpit: closes the process's stdin (EOF). */
  closeStdin(): Promise<void>;
}

export interface LogEvent {
  type: 'stdout' | 'stderr' | 'exit' | 'error' | 'process_info';
  timestamp: string;
  data: string;
  processId: string;
  sessionId?: string;
  exitCode?: number;
  status?: ProcessStatus;
  /** sandpit: on `exit`, `oom` when the OOM killer ended the process. */
  reason?: EndReason;
}

export interface StreamProcessLogsOptions {
  /** Aborting ends the stream. */
  signal?: AbortSignal;
  /** sandpit: also kill the process when `signal` aborts. */
  killOnAbort?: boolean;
}

// ---- Files -----------------------------------------------------------------------------------

export interface WriteFileResult {
  success: boolean;
  path: string;
  timestamp: string;
  exitCode?: number;
  /** sandpit: bytes written (streamed and binary writes). */
  size?: number;
}

export interface ReadFileResult {
  success: boolean;
  path: string;
  content: string;
  timestamp: string;
  exitCode?: number;
  encoding?: 'utf-8' | 'base64';
  isBinary?: boolean;
  mimeType?: string;
  size?: number;
}

export interface ReadFileStreamResult {
  success: true;
  path: string;
  content: ReadableStream<Uint8Array>;
  size: number;
  mimeType: string;
  timestamp: string;
}

export interface MkdirResult {
  success: boolean;
  path: string;
  recursive: boolean;
  timestamp: string;
  exitCode?: number;
}

export interface DeleteFileResult {
  success: boolean;
  path: string;
  timestamp: string;
  exitCode?: number;
}

export interface RenameFileResult {
  success: boolean;
  path: string;
  newPath: string;
  timestamp: string;
  exitCode?: number;
}

export type MoveFileResult = RenameFileResult;

export interface FileInfo {
  name: string;
  absolutePath: string;
  relativePath: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  modifiedAt: string;
  mode: string;
  permissions: { readable: boolean; writable: boolean; executable: boolean };
}

export interface ListFilesResult {
  success: boolean;
  path: string;
  files: FileInfo[];
  count: number;
  timestamp: string;
  exitCode?: number;
}

export interface FileExistsResult {
  success: boolean;
  path: string;
  exists: boolean;
  timestamp: string;
}

export interface FileMetadata {
  mimeType: string;
  size: number;
  isBinary: boolean;
  encoding: 'utf-8' | 'base64';
}

export type FileStreamEvent =
  | {
      type: 'metadata';
      mimeType: string;
      size: number;
      isBinary: boolean;
      encoding: 'utf-8' | 'base64';
    }
  | { type: 'chunk'; data: string }
  | { type: 'complete'; bytesRead: number }
  | { type: 'error'; error: string };

export interface WatchOptions {
  recursive?: boolean;
  include?: string[];
  exclude?: string[];
  events?: Array<'create' | 'modify' | 'delete' | 'move_from' | 'move_to' | 'attrib'>;
  sessionId?: string;
  /** Aborting ends the watch. */
  signal?: AbortSignal;
}

export interface CheckChangesOptions extends Omit<WatchOptions, 'signal'> {
  since?: string;
}

export type CheckChangesResult =
  | { success: true; status: 'unchanged' | 'changed'; version: string; timestamp: string }
  | {
      success: true;
      status: 'resync';
      reason: 'expired' | 'restarted';
      version: string;
      timestamp: string;
    };

export type FileWatchSSEEvent =
  | { type: 'watching'; path: string; watchId: string }
  | {
      type: 'event';
      eventType: 'create' | 'modify' | 'delete' | 'move_from' | 'move_to' | 'attrib';
      path: string;
      isDirectory: boolean;
      timestamp: string;
    }
  | { type: 'error'; error: string }
  | { type: 'stopped'; reason: string };

export interface GitCheckoutOptions {
  branch?: string;
  /** The form of the seed's guides: same as `branch`. */
  ref?: string;
  targetDir?: string;
  sessionId?: string;
  depth?: number;
  cloneTimeoutMs?: number;
}

export interface GitCheckoutResult {
  success: boolean;
  repoUrl: string;
  branch: string;
  targetDir: string;
  timestamp: string;
  exitCode?: number;
}

// ---- Sessions --------------------------------------------------------------------------------

export interface SessionOptions {
  id?: string;
  name?: string;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Accepted and ignored, as in the seed. */
  isolation?: boolean;
  commandTimeoutMs?: number;
}

export interface SessionDeleteResult {
  success: boolean;
  sessionId: string;
  timestamp: string;
}

// ---- Code interpreter ------------------------------------------------------------------------

export type CodeLanguage = 'python' | 'javascript' | 'typescript';

export interface CreateContextOptions {
  language?: CodeLanguage;
  cwd?: string;
  envVars?: Record<string, string | undefined>;
  timeout?: number;
}

export interface CodeContext {
  readonly id: string;
  readonly language: string;
  readonly cwd: string;
  readonly createdAt: Date;
  readonly lastUsed: Date;
}

export interface OutputMessage {
  text: string;
  timestamp: number;
}

export interface ChartData {
  type: 'line' | 'bar' | 'scatter' | 'pie' | 'histogram' | 'heatmap' | 'unknown';
  title?: string;
  data: unknown;
  layout?: unknown;
  config?: unknown;
  library?: 'matplotlib' | 'plotly' | 'altair' | 'seaborn' | 'unknown';
  image?: string;
}

/** One rich output of a run; images are base64. */
export interface ResultData {
  text?: string;
  html?: string;
  png?: string;
  jpeg?: string;
  svg?: string;
  latex?: string;
  markdown?: string;
  javascript?: string;
  json?: unknown;
  chart?: ChartData;
  data?: unknown;
}

export interface Result extends ResultData {
  /** The representations present (`['text', 'png']`...). */
  formats(): string[];
}

export interface ExecutionError {
  name: string;
  message: string;
  traceback: string[];
  lineNumber?: number;
}

export interface RunCodeOptions {
  context?: CodeContext;
  language?: CodeLanguage;
  envVars?: Record<string, string | undefined>;
  /** Interrupt the run after this many milliseconds. */
  timeout?: number;
  /** Aborting closes the run's stream; the server interrupts the run (SIGINT, then a kill). */
  signal?: AbortSignal;
  onStdout?: (output: OutputMessage) => void;
  onStderr?: (output: OutputMessage) => void;
  onResult?: (result: Result) => void | Promise<void>;
  onError?: (error: ExecutionError) => void;
}

export interface ExecutionResult {
  code: string;
  logs: { stdout: string[]; stderr: string[] };
  error?: ExecutionError;
  executionCount?: number;
  results: ResultData[];
}

/** The events of `runCodeStream` (the agent's `/api/execute/code` SSE). */
export type ExecutionEvent =
  | { type: 'stdout'; text: string }
  | { type: 'stderr'; text: string }
  | ({ type: 'result'; metadata?: Record<string, unknown> } & ResultData)
  | { type: 'execution_complete'; execution_count: number }
  | { type: 'error'; ename: string; evalue: string; traceback: string[] };

// ---- Ports -----------------------------------------------------------------------------------

export interface ExposePortOptions {
  /** Accepted for source compatibility: sandpit's preview URLs use the server's preview domain. */
  hostname?: string;
  name?: string;
  /** `[a-z0-9_]{1,16}`; random when absent. Same token → same URL after a re-expose. */
  token?: string;
}

export interface ExposedPortInfo {
  url: string;
  port: number;
  name?: string;
  /** sandpit: the URL's token. */
  token?: string;
  /** sandpit: the run the port was exposed in is over (the URL answers 410 until it is exposed
   * again). */
  stale?: boolean;
}

export interface ExposedPortStatus extends ExposedPortInfo {
  status: 'active';
}

// ---- Terminal --------------------------------------------------------------------------------

export interface TerminalOptions {
  cols?: number;
  rows?: number;
  shell?: string;
}

// ---- Backups, snapshots, bucket mounts (issue 13; docs/persistence.md) ------------------------

/** The seed's `BackupOptions` (reference §1.6). `ttl` is seconds (or sandpit's `"2h"`);
 * `compression.format` must be `zstd` (sandpit's only format; `gzip`/`lz4` are refused with
 * `INVALID_BACKUP_CONFIG`), `compression.level` is zstd's 1-19; `threads`, `localBucket` and
 * `multipart` are accepted for source compatibility and not sent (the server streams every
 * archive into its own object store). */
export interface BackupOptions {
  dir: string;
  name?: string;
  ttl?: number | string;
  gitignore?: boolean;
  excludes?: string[];
  localBucket?: boolean;
  compression?: { format?: 'gzip' | 'lz4' | 'zstd'; threads?: number; level?: number };
  multipart?: boolean;
}

export interface DirectoryBackup {
  readonly id: string;
  readonly dir: string;
  readonly localBucket?: boolean;
}

/** A backup as the server reports it (`createBackup`, `getBackup`, `listBackups`). */
export interface BackupInfo extends DirectoryBackup {
  name?: string;
  /** The sandbox it was taken from. */
  sandboxId: string;
  /** Bytes of the compressed archive as stored. */
  sizeBytes: number;
  /** Bytes of the uncompressed archive. */
  rawBytes: number;
  /** Hex SHA-256 of the stored archive. */
  sha256: string;
  createdAt: string;
  expiresAt: string;
}

export interface RestoreBackupResult {
  success: boolean;
  dir: string;
  id: string;
  /** sandpit: files, directories and symlinks written. */
  entries?: number;
  /** sandpit: bytes of file content written. */
  fileBytes?: number;
}

/** The seed's remote `MountBucketOptions` (sandpit serves this form only). Without
 * `credentials`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, then `R2_ACCESS_KEY_ID`/
 * `R2_SECRET_ACCESS_KEY` of this process are sent, as the seed does. The keys go to the server,
 * which gives them only to the FUSE process it runs outside the sandbox. `credentialProxy` is
 * accepted and not sent (sandpit always keeps the keys outside); `s3fsOptions` is refused by the
 * server (`VALIDATION_FAILED`); `localBucket` and R2 bindings (no `endpoint`) reject with
 * `NotSupportedError` before any request. */
export interface MountBucketOptions {
  endpoint?: string;
  provider?: 'r2' | 's3' | 'gcs';
  credentials?: { accessKeyId: string; secretAccessKey: string };
  readOnly?: boolean;
  /** Must start with `/`: only objects under it are visible. */
  prefix?: string;
  /** sandpit: SigV4 signing region (default `us-east-1`). */
  region?: string;
  s3fsOptions?: string[];
  credentialProxy?: boolean;
  localBucket?: boolean;
}

/** A bucket mount as listed by `getBucketMounts()` (never its credentials). */
export interface BucketMountInfo {
  bucket: string;
  mountPath: string;
  endpoint: string;
  prefix?: string;
  readOnly: boolean;
  region?: string;
  /** The mount is up (false while the sandbox sleeps; it comes back at wake). */
  mounted: boolean;
  createdAt: string;
}

/** An immutable snapshot of a sandbox's file system (processes are not part of it). */
export interface SnapshotInfo {
  id: string;
  name?: string;
  /** The sandbox it was taken of (which may be gone since). */
  sandboxId: string;
  /** The image under it: sandboxes created from it run that image. */
  image: string;
  sizeBytes: number;
  createdAt: string;
}

/** An export of a snapshot in the server's object store (`exportSnapshot`). */
export interface SnapshotExport {
  /** The object's key; pass it to `importSnapshot` on this or another server using the same
   * store. */
  objectKey: string;
  /** Bytes of the stored (zstd-compressed) archive. */
  sizeBytes: number;
  /** Bytes of the uncompressed archive. */
  rawBytes: number;
  /** Hex SHA-256 of the stored archive. */
  sha256: string;
  /** The snapshot exported. */
  snapshotId: string;
}

/** What `importSnapshot` imports: an export of the key's tenant. */
export interface ImportSnapshotOptions {
  /** The export's `objectKey`. */
  objectKey: string;
  /** If given, must equal the export's SHA-256 (checked before the snapshot is kept). */
  sha256?: string;
  /** A name for the new snapshot (default: the exported snapshot's). */
  name?: string;
}

/** The answer of `fork`: the snapshot it took and the children, running. */
export interface ForkResult {
  snapshot: SnapshotInfo;
  sandboxes: SandboxInfo[];
}

export interface TunnelInfo {
  id: string;
  port: number;
  url: string;
  hostname: string;
  createdAt: string;
  name?: string;
}
