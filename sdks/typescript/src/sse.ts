// Server-sent events (the container protocol's streams: `data: <JSON>\n\n` per event) and the
// seed's stream helpers with the same names and shapes.

import { SandboxError, cancelledError, errorFromResponse, isErrorCode } from './errors.js';
import type { FileMetadata, FileStreamEvent } from './types.js';

/** Yields the decoded JSON of each `data:` event of an SSE byte stream. When `signal` aborts,
 * the stream is cancelled (closing the request, which stops the remote work) and the loop
 * rejects with `OperationInterruptedError`; breaking out of the loop cancels it too. A stream
 * the server cut short ends with an `event: error` carrying an error envelope (e.g.
 * `OPERATION_INTERRUPTED` when the sandbox was stopped or destroyed): the loop rejects with
 * that typed error instead of yielding it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the seed's default
export async function* parseSSEStream<T = any>(
  stream: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<T> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => void reader.cancel(signal?.reason).catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  let buffer = '';
  try {
    for (;;) {
      if (signal?.aborted) throw cancelledError('stream', signal.reason);
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (signal?.aborted) throw cancelledError('stream', signal.reason);
        throw err;
      }
      const { value, done } = chunk;
      if (done) {
        if (signal?.aborted) throw cancelledError('stream', signal.reason);
        break;
      }
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = eventEnd(buffer)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        const event = dataOf(block);
        if (event !== undefined) yield eventValue<T>(block, event);
      }
    }
    const rest = buffer + decoder.decode();
    const last = dataOf(rest);
    if (last !== undefined && last.trim() !== '') yield eventValue<T>(rest, last);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** The JSON of an event's data; throws the typed error of a server `event: error` envelope. */
function eventValue<T>(block: string, data: string): T {
  const value = JSON.parse(data) as T;
  if (eventName(block) === 'error') {
    const envelope = value as { code?: unknown; message?: unknown; context?: unknown };
    if (isErrorCode(envelope.code)) {
      const e = value as unknown as Parameters<typeof errorFromResponse>[0];
      throw errorFromResponse({
        code: e.code,
        message: typeof e.message === 'string' ? e.message : e.code,
        context: e.context ?? {},
        httpStatus: typeof e.httpStatus === 'number' ? e.httpStatus : 500,
        ...(e.timestamp === undefined ? {} : { timestamp: e.timestamp }),
      });
    }
  }
  return value;
}

/** The `event:` field of one event block (`message` when absent). */
function eventName(block: string): string {
  const line = block
    .split(/\r?\n/)
    .filter((l) => l.startsWith('event:'))
    .pop();
  return line === undefined ? 'message' : line.slice(6).trim();
}

/** Index of the blank line that ends the first event of `buffer`, or -1. */
export function eventEnd(buffer: string): number {
  const lf = buffer.indexOf('\n\n');
  const crlf = buffer.indexOf('\r\n\r\n');
  if (lf < 0) return crlf;
  if (crlf < 0) return lf;
  return Math.min(lf, crlf);
}

/** The joined `data:` lines of one event block, or undefined when it has none. */
export function dataOf(block: string): string | undefined {
  const lines = block
    .split(/\r?\n/)
    .filter((line) => line.startsWith('data:'))
    .map((line) => line.slice(line.startsWith('data: ') ? 6 : 5));
  return lines.length > 0 ? lines.join('\n') : undefined;
}

/** The seed's `responseToAsyncIterable`: the events of an SSE response. */
export function responseToAsyncIterable<T = any>(
  response: Response,
  signal?: AbortSignal,
): AsyncIterable<T> {
  if (!response.body) throw new TypeError('response has no body');
  return parseSSEStream<T>(response.body, signal);
}

/** The seed's `asyncIterableToSSEStream`: encodes events as an SSE byte stream. */
export function asyncIterableToSSEStream<T>(events: AsyncIterable<T>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const iterator = events[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { value, done } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(encoder.encode(`data: ${JSON.stringify(value)}\n\n`));
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}

/** The seed's `streamFile`: decodes a `readFileStream` stream, yielding text chunks (text files)
 * or bytes (binary files); returns the file's metadata. */
export async function* streamFile(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string | Uint8Array, FileMetadata> {
  let metadata: FileMetadata | undefined;
  for await (const event of parseSSEStream<FileStreamEvent>(stream)) {
    switch (event.type) {
      case 'metadata':
        metadata = {
          mimeType: event.mimeType,
          size: event.size,
          isBinary: event.isBinary,
          encoding: event.encoding,
        };
        break;
      case 'chunk':
        if (!metadata) throw streamError('chunk before metadata');
        yield metadata.encoding === 'base64' ? base64ToBytes(event.data) : event.data;
        break;
      case 'complete':
        if (!metadata) throw streamError('complete before metadata');
        return metadata;
      case 'error':
        throw streamError(event.error);
    }
  }
  throw streamError('the file stream ended without `complete`');
}

/** The seed's `collectFile`: the whole file of a `readFileStream` stream. */
export async function collectFile(
  stream: ReadableStream<Uint8Array>,
): Promise<{ content: string | Uint8Array; metadata: FileMetadata }> {
  const texts: string[] = [];
  const chunks: Uint8Array[] = [];
  const iterator = streamFile(stream);
  for (;;) {
    const next = await iterator.next();
    if (next.done === true) {
      const metadata: FileMetadata = next.value;
      return { content: metadata.isBinary ? concatBytes(chunks) : texts.join(''), metadata };
    }
    const chunk = next.value as string | Uint8Array;
    if (typeof chunk === 'string') texts.push(chunk);
    else chunks.push(chunk);
  }
}

function streamError(message: string): SandboxError {
  return new SandboxError({
    code: 'FILESYSTEM_ERROR',
    message: `file stream: ${message}`,
    context: {},
    httpStatus: 500,
  });
}

export function base64ToBytes(data: string): Uint8Array {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function concatBytes(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
