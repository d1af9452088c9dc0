// exec and execStream over `/api/execute` and `/api/execute/stream`.

import { CommandError, cancelledError } from './errors.js';
import type { SandboxScope } from './scope.js';
import { parseSSEStream } from './sse.js';
import { execStreamWithStdin } from './stdin-stream.js';
import type { ExecEvent, ExecOptions, ExecResult, StreamOptions } from './types.js';

/** The request body shared by both routes. */
function executeBody(
  command: string,
  sessionId: string | undefined,
  options: ExecOptions | StreamOptions,
) {
  return {
    command,
    sessionId,
    timeoutMs: options.timeout,
    env: options.env,
    cwd: options.cwd,
    origin: 'origin' in options ? options.origin : undefined,
    stdin: options.stdin,
    // sandpit: byte-exact output as base64 (the default is UTF-8 text).
    encoding: options.encoding === 'base64' ? 'base64' : undefined,
  };
}

function wantsStream(options: ExecOptions): boolean {
  return Boolean(
    options.stream ||
    options.onOutput ||
    options.onStdout ||
    options.onStderr ||
    options.stdinStream,
  );
}

export async function exec(
  scope: SandboxScope,
  sessionId: string | undefined,
  command: string,
  options: ExecOptions = {},
): Promise<ExecResult> {
  // With a `timeout`, the server kills the command and answers; a server that does not answer
  // by then (plus a grace) is given up on instead of waited for forever.
  const waitMs = options.timeout ? options.timeout + scope.transport.timeoutGraceMs : undefined;
  const deadline = waitMs === undefined ? undefined : AbortSignal.timeout(waitMs);
  const signals = [options.signal, deadline].filter((s): s is AbortSignal => s !== undefined);
  const guarded = { ...options, signal: signals.length > 0 ? AbortSignal.any(signals) : undefined };
  try {
    const result = wantsStream(options)
      ? await execStreaming(scope, sessionId, command, guarded)
      : await scope.apiJson<ExecResult>('/execute', {
          json: executeBody(command, sessionId, options),
          signal: guarded.signal,
          operation: 'exec',
          longRunning: true,
        });
    options.onComplete?.(result);
    return result;
  } catch (caught) {
    const err =
      deadline?.aborted && !options.signal?.aborted
        ? scope.transport.noAnswer('exec', waitMs ?? 0, caught)
        : caught;
    options.onError?.(err as Error);
    throw err;
  }
}

/** exec with output delivered as it is produced, folded into one ExecResult. */
async function execStreaming(
  scope: SandboxScope,
  sessionId: string | undefined,
  command: string,
  options: ExecOptions,
): Promise<ExecResult> {
  const started = Date.now();
  const stream = await execStream(scope, sessionId, command, options);
  const out: string[] = [];
  const err: string[] = [];
  try {
    for await (const event of parseSSEStream<ExecEvent>(stream, options.signal)) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        const data = event.data ?? '';
        (event.type === 'stdout' ? out : err).push(data);
        options.onOutput?.(event.type, data);
        (event.type === 'stdout' ? options.onStdout : options.onStderr)?.(data);
      } else if (event.type === 'complete') {
        const exitCode = event.exitCode ?? 0;
        return {
          success: exitCode === 0,
          exitCode,
          stdout: out.join(''),
          stderr: err.join(''),
          command,
          duration: Date.now() - started,
          timestamp: event.timestamp,
          ...(sessionId === undefined ? {} : { sessionId }),
          ...(event.timedOut ? { timedOut: true } : {}),
          ...(event.reason ? { reason: event.reason } : {}),
        };
      } else if (event.type === 'error') {
        throw new CommandError({
          code: 'COMMAND_EXECUTION_ERROR',
          message: event.error ?? event.data ?? 'the command failed',
          context: { command },
          httpStatus: 500,
        });
      }
    }
  } catch (e) {
    if (options.signal?.aborted) throw cancelledError('exec', options.signal.reason);
    throw e;
  }
  if (options.signal?.aborted) throw cancelledError('exec', options.signal.reason);
  throw new CommandError({
    code: 'COMMAND_EXECUTION_ERROR',
    message: 'the output stream ended before the command completed',
    context: { command },
    httpStatus: 500,
  });
}

export async function execStream(
  scope: SandboxScope,
  sessionId: string | undefined,
  command: string,
  options: StreamOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  if (options.stdinStream !== undefined) {
    await scope.ensure();
    const body = executeBody(command, sessionId, options);
    return execStreamWithStdin(scope, body, options.stdinStream, options.signal);
  }
  const response = await scope.api('/execute/stream', {
    json: executeBody(command, sessionId, options),
    signal: options.signal,
    operation: 'execStream',
    longRunning: true,
  });
  return response.body ?? new ReadableStream();
}
