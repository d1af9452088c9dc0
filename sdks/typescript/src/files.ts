// File operations: the container protocol's JSON routes, plus sandpit's raw byte routes
// (`/v1/sandboxes/{id}/files/{path}`) for what the seed supports only over RPC: streamed or
// binary writes and `readFile(path, { encoding: 'none' })`.

import { WatchError } from './errors.js';
import type { SandboxScope } from './scope.js';
import { dataOf, eventEnd } from './sse.js';
import type {
  CheckChangesOptions,
  CheckChangesResult,
  DeleteFileResult,
  FileExistsResult,
  FileWatchSSEEvent,
  GitCheckoutOptions,
  GitCheckoutResult,
  ListFilesResult,
  MkdirResult,
  MoveFileResult,
  ReadFileResult,
  ReadFileStreamResult,
  RenameFileResult,
  WatchOptions,
  WriteFileResult,
} from './types.js';

export type WriteContent = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>;

/** The raw route of `path`: the whole path is one encoded segment, so an absolute path starts
 * with `%2F` and `.`/`..` reach the sandbox unresolved (the sandbox is the boundary). */
function rawPath(scope: SandboxScope, path: string): string {
  return scope.path(`/files/${encodeURIComponent(path)}`);
}

export async function writeFile(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  content: WriteContent,
  options: { encoding?: string } = {},
): Promise<WriteFileResult> {
  if (typeof content === 'string') {
    return scope.apiJson<WriteFileResult>('/write', {
      json: { path, content, encoding: options.encoding, sessionId },
      operation: 'writeFile',
      // Up to 64 MiB: as long as the transfer takes (a dead server is caught by create-or-get).
      longRunning: true,
    });
  }
  // Bytes and streams go over the raw upload route, in constant memory whatever the size.
  await scope.ensure();
  return scope.transport.json<WriteFileResult>(rawPath(scope, path), {
    method: 'PUT',
    body: content as BodyInit,
    query: { sessionId },
    operation: 'writeFile',
    longRunning: true,
  });
}

export interface ReadFileOptions {
  encoding?: 'utf-8' | 'utf8' | 'base64';
}

export async function readFile(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  options: ReadFileOptions = {},
): Promise<ReadFileResult> {
  return scope.apiJson<ReadFileResult>('/read', {
    json: { path, encoding: options.encoding, sessionId },
    operation: 'readFile',
    longRunning: true,
  });
}

/** `readFile(path, { encoding: 'none' })`: the file's raw bytes as a stream (any size). */
export async function readFileRaw(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
): Promise<ReadFileStreamResult> {
  await scope.ensure();
  const response = await scope.transport.fetch(rawPath(scope, path), {
    query: { sessionId },
    operation: 'readFile',
    longRunning: true,
  });
  return {
    success: true,
    path,
    content: response.body ?? new ReadableStream(),
    size: Number(response.headers.get('content-length') ?? 0),
    mimeType: response.headers.get('content-type') ?? 'application/octet-stream',
    timestamp: new Date().toISOString(),
  };
}

export async function readFileStream(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
): Promise<ReadableStream<Uint8Array>> {
  const response = await scope.api('/read/stream', {
    json: { path, sessionId },
    operation: 'readFileStream',
    longRunning: true,
  });
  return response.body ?? new ReadableStream();
}

export function mkdir(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  options: { recursive?: boolean } = {},
): Promise<MkdirResult> {
  return scope.apiJson('/mkdir', {
    json: { path, recursive: options.recursive ?? false, sessionId },
    operation: 'mkdir',
  });
}

export function deleteFile(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
): Promise<DeleteFileResult> {
  return scope.apiJson('/delete', { json: { path, sessionId }, operation: 'deleteFile' });
}

export function renameFile(
  scope: SandboxScope,
  sessionId: string | undefined,
  oldPath: string,
  newPath: string,
): Promise<RenameFileResult> {
  return scope.apiJson('/rename', {
    json: { oldPath, newPath, sessionId },
    operation: 'renameFile',
  });
}

export function moveFile(
  scope: SandboxScope,
  sessionId: string | undefined,
  sourcePath: string,
  destinationPath: string,
): Promise<MoveFileResult> {
  return scope.apiJson('/move', {
    json: { sourcePath, destinationPath, sessionId },
    operation: 'moveFile',
  });
}

export function listFiles(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  options: { recursive?: boolean; includeHidden?: boolean } = {},
): Promise<ListFilesResult> {
  return scope.apiJson('/list-files', {
    json: {
      path,
      options: { recursive: options.recursive, includeHidden: options.includeHidden },
      sessionId,
    },
    operation: 'listFiles',
  });
}

export function exists(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
): Promise<FileExistsResult> {
  return scope.apiJson('/exists', { json: { path, sessionId }, operation: 'exists' });
}

function watchBody(sessionId: string | undefined, path: string, options: CheckChangesOptions) {
  return {
    path,
    recursive: options.recursive,
    include: options.include,
    exclude: options.exclude,
    events: options.events,
    sessionId: options.sessionId ?? sessionId,
  };
}

/** Starts a watch; resolves once the watcher is live (the first event is `watching`). The
 * stream carries SSE of `FileWatchSSEEvent`, starting with that `watching` event. */
export async function watch(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  options: WatchOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const response = await scope.api('/watch', {
    json: watchBody(sessionId, path, options),
    signal: options.signal,
    operation: 'watch',
    longRunning: true,
  });
  const { first, stream } = await firstEvent<FileWatchSSEEvent>(response.body!);
  if (first?.type !== 'watching') {
    await stream.cancel().catch(() => {});
    const message = first?.type === 'error' ? first.error : 'the watch ended at once';
    throw new WatchError({
      code: 'WATCH_START_ERROR',
      message: `watch(${path}): ${message}`,
      context: { path },
      httpStatus: 500,
    });
  }
  return stream;
}

/** Reads an SSE stream up to its first event; returns that event and a stream of the whole
 * input (the bytes read so far, then the rest). */
async function firstEvent<T>(
  body: ReadableStream<Uint8Array>,
): Promise<{ first: T | undefined; stream: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const seen: Uint8Array[] = [];
  const decoder = new TextDecoder();
  let text = '';
  let first: T | undefined;
  while (first === undefined) {
    const { value, done } = await reader.read();
    if (done) break;
    seen.push(value);
    text += decoder.decode(value, { stream: true });
    const end = eventEnd(text);
    const data = end >= 0 ? dataOf(text.slice(0, end)) : undefined;
    if (data !== undefined) first = JSON.parse(data) as T;
  }
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffered = seen.shift();
      if (buffered) return controller.enqueue(buffered);
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return { first, stream };
}

export function checkChanges(
  scope: SandboxScope,
  sessionId: string | undefined,
  path: string,
  options: CheckChangesOptions = {},
): Promise<CheckChangesResult> {
  return scope.apiJson('/watch/check', {
    json: { ...watchBody(sessionId, path, options), since: options.since },
    operation: 'checkChanges',
  });
}

export function gitCheckout(
  scope: SandboxScope,
  sessionId: string | undefined,
  repoUrl: string,
  options: GitCheckoutOptions | string = {},
): Promise<GitCheckoutResult> {
  // Some of the seed's guides pass the target directory as a string.
  const opts: GitCheckoutOptions = typeof options === 'string' ? { targetDir: options } : options;
  return scope.apiJson('/git/checkout', {
    json: {
      repoUrl,
      branch: opts.branch ?? opts.ref,
      targetDir: opts.targetDir,
      depth: opts.depth,
      timeoutMs: opts.cloneTimeoutMs,
      sessionId: opts.sessionId ?? sessionId,
    },
    operation: 'gitCheckout',
    longRunning: true,
  });
}
