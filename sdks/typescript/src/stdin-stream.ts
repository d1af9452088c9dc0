// `execStream`/`exec` with stdin fed while the command runs (`stdinStream`). A plain HTTP request
// sends its whole body before the answer starts, so incremental stdin goes over the sandbox's
// WebSocket control transport (docs/api.md, "WebSockets"): one `request` frame for
// `/api/execute/stream` with `stdinStream: true`, then `stdin` frames of that request while its
// events come back as `stream` frames. The events are re-encoded as SSE, so the caller gets the
// same byte stream (and `parseSSEStream`) as without stdin.

import {
  cancelledError,
  connectionError,
  errorFromHttp,
  SandboxError,
  ValidationFailedError,
} from './errors.js';
import type { SandboxScope } from './scope.js';
import type { StdinSource } from './types.js';
import { webSocketClass, webSocketUrl } from './websocket.js';

/** The request's id on the socket (one request per socket). */
const REQUEST_ID = 'exec';
/** Bytes the socket may buffer before the next stdin chunk waits (flow control: the agent stops
 * reading frames while the command's stdin is full, so this bounds local memory too). */
const HIGH_WATER = 1 << 20;

type ServerFrame =
  | { type: 'stream'; id: string; data: string; event?: string }
  | { type: 'response'; id: string; status: number; body?: unknown; done?: boolean }
  | { type: 'error'; id?: string; code: string; status?: number; message: string };

/** Runs `/api/execute/stream` with `body` over the control transport, feeding `stdin`. Resolves
 * once the command started (or rejects with the typed error of a refused request); the stream
 * then carries the command's SSE events and errors if the socket fails. */
export async function execStreamWithStdin(
  scope: SandboxScope,
  body: Record<string, unknown>,
  stdin: StdinSource,
  signal: AbortSignal | undefined,
): Promise<ReadableStream<Uint8Array>> {
  if (body.stdin !== undefined) {
    throw new ValidationFailedError({
      code: 'VALIDATION_FAILED',
      message:
        'give either `stdin` (all at once) or `stdinStream` (while the command runs), not both',
      context: {},
      httpStatus: 400,
    });
  }
  if (signal?.aborted) throw cancelledError('execStream', signal.reason);
  const [Socket, url] = await Promise.all([
    webSocketClass('stdinStream'),
    webSocketUrl(scope, '/ws', {}, 'execStream'),
  ]);
  const socket = new Socket(url);
  const encoder = new TextEncoder();
  let finished = false;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let started!: { resolve: () => void; reject: (e: unknown) => void };
  const startedPromise = new Promise<void>((resolve, reject) => {
    started = { resolve, reject };
  });
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      stop();
    },
  });

  /** Ends everything with `err` (before the start: the call rejects; after: the stream errors). */
  const fail = (err: unknown) => {
    if (finished) return;
    finished = true;
    started.reject(err);
    controller.error(err);
    socket.close();
  };
  /** The caller is done: cancel the request (the agent stops the command) and close. */
  const stop = () => {
    if (finished) return;
    finished = true;
    if (socket.readyState === socket.OPEN) {
      socket.send(JSON.stringify({ type: 'cancel', id: REQUEST_ID }));
    }
    socket.close();
  };
  const onAbort = () => fail(cancelledError('execStream', signal?.reason));
  signal?.addEventListener('abort', onAbort, { once: true });

  socket.addEventListener('open', () => {
    socket.send(
      JSON.stringify({
        type: 'request',
        id: REQUEST_ID,
        method: 'POST',
        path: '/api/execute/stream',
        body: { ...body, stdinStream: true },
      }),
    );
    pump(socket, stdin, () => finished).catch(fail);
  });
  socket.addEventListener('message', (event: MessageEvent) => {
    if (finished || typeof event.data !== 'string') return;
    const frame = JSON.parse(event.data) as ServerFrame;
    if (frame.type === 'stream') {
      started.resolve();
      const name = frame.event ? `event: ${frame.event}\n` : '';
      const data = frame.data
        .split('\n')
        .map((line) => `data: ${line}\n`)
        .join('');
      controller.enqueue(encoder.encode(`${name}${data}\n`));
    } else if (frame.type === 'response') {
      if (frame.status >= 400) {
        fail(errorFromHttp(frame.status, JSON.stringify(frame.body ?? '')));
        return;
      }
      finished = true;
      started.resolve();
      controller.close();
      socket.close();
    } else if (frame.type === 'error') {
      fail(
        new SandboxError({
          code: frame.code === 'INVALID_REQUEST' ? 'VALIDATION_FAILED' : 'INTERNAL_ERROR',
          message: `execStream: ${frame.message}`,
          context: { transportCode: frame.code },
          httpStatus: frame.status ?? 500,
        }),
      );
    }
  });
  socket.addEventListener('close', () => {
    signal?.removeEventListener('abort', onAbort);
    fail(
      connectionError(
        'CONNECTION_FAILED',
        `execStream: the WebSocket to ${scope.transport.url} closed before the command completed`,
        { url: scope.transport.url },
      ),
    );
  });
  await startedPromise;
  return stream;
}

/** Sends `stdin` as `stdin` frames, then `eof`; waits while the socket's buffer is full. */
async function pump(socket: WebSocket, stdin: StdinSource, done: () => boolean): Promise<void> {
  const chunks =
    stdin instanceof ReadableStream
      ? readableToIterable(stdin)
      : (stdin as AsyncIterable<string | Uint8Array>);
  for await (const chunk of chunks) {
    if (done()) return;
    while (socket.bufferedAmount > HIGH_WATER) {
      await new Promise((r) => setTimeout(r, 5));
      if (done()) return;
    }
    const frame =
      typeof chunk === 'string'
        ? { type: 'stdin', id: REQUEST_ID, data: chunk }
        : { type: 'stdin', id: REQUEST_ID, dataBase64: base64(chunk) };
    socket.send(JSON.stringify(frame));
  }
  if (!done()) socket.send(JSON.stringify({ type: 'stdin', id: REQUEST_ID, eof: true }));
}

async function* readableToIterable<T>(stream: ReadableStream<T>): AsyncIterable<T> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

function base64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
