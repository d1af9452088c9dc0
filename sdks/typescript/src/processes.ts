// Background processes (`/api/process/*`, `/api/port-watch`) and the seed's `Process` object.

import {
  ProcessExitedBeforeReadyError,
  ProcessNotFoundError,
  ProcessReadyTimeoutError,
  cancelledError,
} from './errors.js';
import type { SandboxScope } from './scope.js';
import { bytesToBase64, parseSSEStream } from './sse.js';
import type {
  EndReason,
  LogEvent,
  Process,
  ProcessOptions,
  ProcessStatus,
  StreamProcessLogsOptions,
  WaitForExitResult,
  WaitForLogResult,
  WaitForPortOptions,
} from './types.js';

/** A process record as the agent answers it. */
interface ProcessRecord {
  id: string;
  pid?: number;
  command: string;
  status: ProcessStatus;
  startTime: string;
  endTime?: string;
  exitCode?: number;
  sessionId?: string;
  reason?: EndReason;
}

interface PortWatchEvent {
  type: 'watching' | 'ready' | 'process_exited' | 'error';
  port: number;
  statusCode?: number;
  exitCode?: number;
  error?: string;
}

const processPath = (id: string) => `/process/${encodeURIComponent(id)}`;

export async function startProcess(
  scope: SandboxScope,
  sessionId: string | undefined,
  command: string,
  options: ProcessOptions = {},
): Promise<Process> {
  try {
    const started = await scope.apiJson<{ processId: string; pid?: number; command: string }>(
      '/process/start',
      {
        json: {
          command,
          sessionId,
          processId: options.processId,
          timeoutMs: options.timeout,
          env: options.env,
          cwd: options.cwd,
          encoding: options.encoding,
          autoCleanup: options.autoCleanup,
          stdin: options.stdin,
        },
        operation: 'startProcess',
      },
    );
    const process = new ProcessHandle(scope, {
      id: started.processId,
      ...(started.pid === undefined ? {} : { pid: started.pid }),
      command: started.command ?? command,
      status: 'running',
      startTime: new Date().toISOString(),
      ...(sessionId === undefined ? {} : { sessionId }),
    });
    options.onStart?.(process);
    if (options.onOutput || options.onExit) followProcess(scope, process.id, options);
    return process;
  } catch (err) {
    options.onError?.(err as Error);
    throw err;
  }
}

/** Feeds `onOutput`/`onExit` from the process's log stream, in the background. */
function followProcess(scope: SandboxScope, id: string, options: ProcessOptions): void {
  void (async () => {
    for await (const event of logEvents(scope, id)) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        if (event.data) options.onOutput?.(event.type, event.data);
      } else if (event.type === 'exit' || event.type === 'error') {
        options.onExit?.(event.exitCode ?? null);
        return;
      }
    }
  })().catch((err: Error) => options.onError?.(err));
}

export async function listProcesses(scope: SandboxScope): Promise<Process[]> {
  const body = await scope.apiJson<{ processes: ProcessRecord[] }>('/process/list', {
    operation: 'listProcesses',
  });
  return body.processes.map((record) => new ProcessHandle(scope, record));
}

export async function getProcess(scope: SandboxScope, id: string): Promise<Process | null> {
  try {
    return new ProcessHandle(scope, await processRecord(scope, id));
  } catch (err) {
    if (err instanceof ProcessNotFoundError) return null;
    throw err;
  }
}

async function processRecord(scope: SandboxScope, id: string): Promise<ProcessRecord> {
  const body = await scope.apiJson<{ process: ProcessRecord }>(processPath(id), {
    operation: 'getProcess',
  });
  return body.process;
}

/** Kills the process's tree (SIGTERM or `signal`, SIGKILL 5 s later); resolves once it is gone. */
export async function killProcess(scope: SandboxScope, id: string, signal?: string): Promise<void> {
  await scope.apiJson(processPath(id), {
    method: 'DELETE',
    query: { signal },
    operation: 'killProcess',
    longRunning: true,
  });
}

export async function killAllProcesses(scope: SandboxScope): Promise<number> {
  const body = await scope.apiJson<{ cleanedCount: number }>('/process/kill-all', {
    method: 'DELETE',
    operation: 'killAllProcesses',
    longRunning: true,
  });
  return body.cleanedCount;
}

export async function getProcessLogs(
  scope: SandboxScope,
  id: string,
): Promise<{ stdout: string; stderr: string; processId: string }> {
  const body = await scope.apiJson<{ stdout: string; stderr: string; processId?: string }>(
    `${processPath(id)}/logs`,
    { operation: 'getProcessLogs' },
  );
  return { stdout: body.stdout, stderr: body.stderr, processId: body.processId ?? id };
}

export async function streamProcessLogs(
  scope: SandboxScope,
  id: string,
  options: StreamProcessLogsOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const { signal } = options;
  if (signal && options.killOnAbort) {
    signal.addEventListener('abort', () => void killProcess(scope, id).catch(() => {}), {
      once: true,
    });
  }
  const response = await scope.api(`${processPath(id)}/stream`, {
    signal,
    operation: 'streamProcessLogs',
    longRunning: true,
  });
  return response.body ?? new ReadableStream();
}

async function* logEvents(
  scope: SandboxScope,
  id: string,
  signal?: AbortSignal,
): AsyncGenerator<LogEvent> {
  const stream = await streamProcessLogs(scope, id, signal ? { signal } : {});
  yield* parseSSEStream<LogEvent>(stream, signal);
}

/** Resolves `promise`, or rejects with `onTimeout()` after `ms` (aborting `controller`). */
async function withTimeout<T>(
  ms: number | undefined,
  controller: AbortController,
  run: (signal: AbortSignal) => Promise<T>,
  onTimeout: () => Error,
): Promise<T> {
  if (ms === undefined) return run(controller.signal);
  const timer = setTimeout(() => controller.abort(onTimeout()), ms);
  try {
    return await run(controller.signal);
  } catch (err) {
    if (controller.signal.aborted) throw controller.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** A `waitForExit` result: the exit code (-1 when unknown) and sandpit's `reason` if any. */
function exitResult(
  exitCode: number | undefined,
  reason: EndReason | undefined,
): WaitForExitResult {
  return { exitCode: exitCode ?? -1, ...(reason ? { reason } : {}) };
}

/** The seed's `Process`: a snapshot of the record plus methods that ask the server. */
export class ProcessHandle implements Process {
  readonly id: string;
  readonly pid?: number;
  readonly command: string;
  readonly status: ProcessStatus;
  readonly startTime: Date;
  readonly endTime?: Date;
  readonly exitCode?: number;
  readonly sessionId?: string;
  readonly reason?: EndReason;
  readonly #scope: SandboxScope;

  constructor(scope: SandboxScope, record: ProcessRecord) {
    this.#scope = scope;
    this.id = record.id;
    if (record.pid !== undefined) this.pid = record.pid;
    this.command = record.command;
    this.status = record.status;
    this.startTime = new Date(record.startTime);
    if (record.endTime) this.endTime = new Date(record.endTime);
    if (record.exitCode !== undefined && record.exitCode !== null) this.exitCode = record.exitCode;
    if (record.sessionId) this.sessionId = record.sessionId;
    if (record.reason) this.reason = record.reason;
  }

  kill(signal?: string): Promise<void> {
    return killProcess(this.#scope, this.id, signal);
  }

  async getStatus(): Promise<ProcessStatus> {
    return (await processRecord(this.#scope, this.id)).status;
  }

  async getLogs(): Promise<{ stdout: string; stderr: string }> {
    const { stdout, stderr } = await getProcessLogs(this.#scope, this.id);
    return { stdout, stderr };
  }

  /** Waits for a line of output (stdout or stderr) matching `pattern`. */
  waitForLog(pattern: string | RegExp, timeout?: number): Promise<WaitForLogResult> {
    const matchLine = (line: string): WaitForLogResult | undefined => {
      if (typeof pattern === 'string') return line.includes(pattern) ? { line } : undefined;
      const match = line.match(pattern);
      return match ? { line, match } : undefined;
    };
    return withTimeout(
      timeout,
      new AbortController(),
      async (signal) => {
        // The stream replays everything so far, then follows; split it into lines per stream.
        const partial = { stdout: '', stderr: '' };
        for await (const event of logEvents(this.#scope, this.id, signal)) {
          if (event.type === 'stdout' || event.type === 'stderr') {
            const lines = (partial[event.type] + event.data).split('\n');
            partial[event.type] = lines.pop() ?? '';
            for (const line of lines) {
              const found = matchLine(line);
              if (found) return found;
            }
          } else if (event.type === 'exit' || event.type === 'error') {
            for (const rest of [partial.stdout, partial.stderr]) {
              const found = rest ? matchLine(rest) : undefined;
              if (found) return found;
            }
            throw new ProcessExitedBeforeReadyError({
              code: 'PROCESS_EXITED_BEFORE_READY',
              message: `process ${this.id} exited (code ${event.exitCode ?? 'unknown'}) before a line matched ${String(pattern)}`,
              context: { processId: this.id, exitCode: event.exitCode, pattern: String(pattern) },
              httpStatus: 500,
            });
          }
        }
        throw cancelledError('waitForLog', 'the log stream ended');
      },
      () => this.#readyTimeout('waitForLog', timeout, { pattern: String(pattern) }),
    );
  }

  /** Waits until the port answers (http: a status in range; tcp: a connection). */
  waitForPort(port: number, options: WaitForPortOptions = {}): Promise<void> {
    const status = options.status ?? { min: 200, max: 399 };
    const [statusMin, statusMax] =
      typeof status === 'number' ? [status, status] : [status.min, status.max];
    return withTimeout(
      options.timeout,
      new AbortController(),
      async (signal) => {
        const response = await this.#scope.api('/port-watch', {
          json: {
            port,
            mode: options.mode ?? 'http',
            path: options.path ?? '/',
            statusMin,
            statusMax,
            processId: this.id,
            interval: options.interval,
          },
          signal,
          operation: 'waitForPort',
          longRunning: true,
        });
        for await (const event of parseSSEStream<PortWatchEvent>(response.body!, signal)) {
          if (event.type === 'ready') return;
          if (event.type === 'process_exited' || event.type === 'error') {
            throw new ProcessExitedBeforeReadyError({
              code: 'PROCESS_EXITED_BEFORE_READY',
              message:
                event.type === 'error'
                  ? `waitForPort(${port}): ${event.error}`
                  : `process ${this.id} exited (code ${event.exitCode}) before port ${port} was ready`,
              context: { processId: this.id, port, exitCode: event.exitCode },
              httpStatus: 500,
            });
          }
        }
        throw cancelledError('waitForPort', 'the port watch ended');
      },
      () => this.#readyTimeout('waitForPort', options.timeout, { port }),
    );
  }

  /** Waits for the process to end. */
  waitForExit(timeout?: number): Promise<WaitForExitResult> {
    return withTimeout(
      timeout,
      new AbortController(),
      async (signal) => {
        for await (const event of logEvents(this.#scope, this.id, signal)) {
          if (event.type === 'exit') return exitResult(event.exitCode, event.reason);
          if (event.type === 'error') {
            const record = await processRecord(this.#scope, this.id);
            return exitResult(record.exitCode, record.reason);
          }
        }
        throw cancelledError('waitForExit', 'the log stream ended');
      },
      () => this.#readyTimeout('waitForExit', timeout, {}),
    );
  }

  async sendStdin(
    data: string | Uint8Array,
    options: { close?: boolean } = {},
  ): Promise<{ bytesWritten: number; closed: boolean }> {
    const body = typeof data === 'string' ? { data } : { dataBase64: bytesToBase64(data) };
    return this.#scope.apiJson(`${processPath(this.id)}/stdin`, {
      json: { ...body, close: options.close },
      operation: 'sendStdin',
      longRunning: true,
    });
  }

  async closeStdin(): Promise<void> {
    await this.#scope.apiJson(`${processPath(this.id)}/stdin`, {
      json: { close: true },
      operation: 'closeStdin',
    });
  }

  #readyTimeout(
    operation: string,
    timeout: number | undefined,
    context: Record<string, unknown>,
  ): ProcessReadyTimeoutError {
    return new ProcessReadyTimeoutError({
      code: 'PROCESS_READY_TIMEOUT',
      message: `${operation}: process ${this.id} was not ready within ${timeout} ms`,
      context: { processId: this.id, timeout, ...context },
      httpStatus: 408,
    });
  }

  toJSON() {
    return {
      id: this.id,
      pid: this.pid,
      command: this.command,
      status: this.status,
      startTime: this.startTime,
      endTime: this.endTime,
      exitCode: this.exitCode,
      sessionId: this.sessionId,
      reason: this.reason,
    };
  }
}
