// A PTY over the agent's `/ws/pty` WebSocket (reference §2.13): binary frames are terminal
// bytes both ways, text frames are JSON status/control messages. The socket is authenticated
// with a single-use ticket, so the same URL works from a browser (`terminalUrl`).

import { SandboxError } from './errors.js';
import type { SandboxScope } from './scope.js';
import type { TerminalOptions } from './types.js';
import { webSocketClass, webSocketUrl } from './websocket.js';

/** The WebSocket URL of a session's terminal, with a fresh single-use ticket (valid 60 s). */
export async function terminalUrl(
  scope: SandboxScope,
  sessionId: string,
  options: TerminalOptions = {},
): Promise<string> {
  const query: Record<string, string> = { sessionId };
  if (options.cols) query.cols = String(options.cols);
  if (options.rows) query.rows = String(options.rows);
  if (options.shell) query.shell = options.shell;
  return webSocketUrl(scope, '/ws/pty', query, 'terminal');
}

export async function openTerminal(
  scope: SandboxScope,
  sessionId: string,
  options: TerminalOptions = {},
): Promise<Terminal> {
  const [Socket, url] = await Promise.all([
    webSocketClass('terminal()'),
    terminalUrl(scope, sessionId, options),
  ]);
  return new Terminal(new Socket(url));
}

type StatusMessage =
  | { type: 'ready' }
  | { type: 'exit'; code: number; signal?: string }
  | { type: 'error'; message: string };

/** An attached terminal. Pipe `onData` to xterm.js or `process.stdout`, and keystrokes to
 * `write`; or hand `socket` itself to xterm.js's AttachAddon. */
export class Terminal {
  readonly socket: WebSocket;
  /** Resolves once the output so far was replayed and the terminal is live. */
  readonly ready: Promise<void>;
  /** Resolves with the shell's exit code (128+n when killed by signal n), or `null` when the
   * socket closed without one. */
  readonly exited: Promise<number | null>;
  readonly #listeners = new Set<(data: Uint8Array) => void>();

  constructor(socket: WebSocket) {
    this.socket = socket;
    socket.binaryType = 'arraybuffer';
    let exitCode: number | null = null;
    this.ready = new Promise((resolve, reject) => {
      socket.addEventListener('message', (event: MessageEvent) => {
        if (typeof event.data !== 'string') {
          const bytes = new Uint8Array(event.data as ArrayBuffer);
          for (const listener of this.#listeners) listener(bytes);
          return;
        }
        const message = JSON.parse(event.data) as StatusMessage;
        if (message.type === 'ready') resolve();
        else if (message.type === 'exit') exitCode = message.code;
        else if (message.type === 'error') reject(terminalError(message.message));
      });
      socket.addEventListener('error', () => reject(terminalError('the WebSocket failed')));
      socket.addEventListener('close', () => reject(terminalError('closed before ready')));
    });
    this.ready.catch(() => {});
    this.exited = new Promise((resolve) => {
      socket.addEventListener('close', () => resolve(exitCode));
    });
  }

  /** Calls `listener` with every chunk of terminal output; returns a function that stops it. */
  onData(listener: (data: Uint8Array) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Sends keystrokes. */
  write(data: string | Uint8Array): void {
    this.socket.send(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  resize(cols: number, rows: number): void {
    this.socket.send(JSON.stringify({ type: 'resize', cols, rows }));
  }

  /** Detaches (the shell keeps running for the next attach). */
  close(): void {
    this.socket.close();
  }
}

function terminalError(message: string): SandboxError {
  return new SandboxError({
    code: 'INTERNAL_ERROR',
    message: `terminal: ${message}`,
    context: {},
    httpStatus: 500,
  });
}
