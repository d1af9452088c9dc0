// The one place requests are made: base URL, bearer key, JSON bodies, the error envelope → typed
// errors, connection failures → ConnectionError, and AbortSignal → OperationInterruptedError.

import { cancelledError, connectionError, errorFromHttp, type SandboxError } from './errors.js';

export interface TransportOptions {
  /** Server URL, e.g. `http://127.0.0.1:7070`. */
  url: string;
  apiKey: string;
  /** Deadline for calls that answer at once (control plane, files, listings); default 30 s.
   * Commands, streams and code runs have none: they end with their own `timeout` or `signal`. */
  requestTimeoutMs: number;
  /** How long past a command's own `timeout` the SDK waits for its answer before giving up on
   * the server (the server kills at the timeout and answers within its 5 s kill grace). */
  timeoutGraceMs: number;
}

export interface RequestOptions {
  method?: string;
  /** JSON body (sent with `Content-Type: application/json`). */
  json?: unknown;
  /** A raw body (uploads); sent as is. */
  body?: BodyInit;
  /** An array value repeats the parameter (`label=a=1&label=b=2`). */
  query?: Record<string, string | number | string[] | undefined>;
  signal?: AbortSignal | undefined;
  /** Name of the operation, for error messages (`exec`, `readFile`...). */
  operation: string;
  /** Calls that run as long as the remote work does: no request deadline. */
  longRunning?: boolean;
}

export class Transport {
  readonly url: string;
  readonly #apiKey: string;
  readonly #requestTimeoutMs: number;
  readonly timeoutGraceMs: number;

  constructor(options: TransportOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.#apiKey = options.apiKey;
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.timeoutGraceMs = options.timeoutGraceMs;
  }

  /** The error of a call that got no answer within `ms`. */
  noAnswer(operation: string, ms: number, cause?: unknown): SandboxError {
    return connectionError(
      'REQUEST_TIMEOUT',
      `${operation}: no answer from ${this.url} within ${ms} ms`,
      { url: this.url, timeoutMs: ms },
      cause,
    );
  }

  /** Sends a request and returns the 2xx response (any other status throws its typed error). */
  async fetch(path: string, options: RequestOptions): Promise<Response> {
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, item);
      else if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = { authorization: `Bearer ${this.#apiKey}` };
    let body = options.body;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    const deadline = options.longRunning ? undefined : AbortSignal.timeout(this.#requestTimeoutMs);
    const signals = [options.signal, deadline].filter((s): s is AbortSignal => s !== undefined);
    const init: RequestInit & { duplex?: 'half' } = {
      method: options.method ?? (body === undefined ? 'GET' : 'POST'),
      headers,
      body: body ?? null,
      signal: signals.length > 0 ? AbortSignal.any(signals) : null,
    };
    // A streamed upload needs half duplex in Node's fetch.
    if (body instanceof ReadableStream) init.duplex = 'half';
    let response: Response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw this.#failure(err, options, deadline);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      throw errorFromHttp(response.status, text);
    }
    return response;
  }

  /** A request whose answer is JSON. */
  async json<T>(path: string, options: RequestOptions): Promise<T> {
    const response = await this.fetch(path, options);
    if (response.status === 204) return undefined as T;
    try {
      return (await response.json()) as T;
    } catch (err) {
      throw this.#failure(err, options, undefined);
    }
  }

  /** The error for a request that got no (complete) answer. */
  #failure(err: unknown, options: RequestOptions, deadline: AbortSignal | undefined): SandboxError {
    if (options.signal?.aborted) return cancelledError(options.operation, options.signal.reason);
    if (deadline?.aborted) return this.noAnswer(options.operation, this.#requestTimeoutMs, err);
    const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
    const detail = cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
    return connectionError(
      'CONNECTION_FAILED',
      `${options.operation}: cannot reach the sandpit server at ${this.url} (${detail})`,
      { url: this.url, cause: detail },
      err,
    );
  }

  /** A WebSocket URL of this server (`http` → `ws`). */
  wsUrl(path: string, query: Record<string, string>): string {
    const url = new URL(this.url + path);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    return url.toString();
  }
}
