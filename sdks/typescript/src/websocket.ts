// What every WebSocket of the SDK needs (the terminal, the control transport): a WebSocket class
// and an authenticated URL. The URL carries a single-use ticket instead of the API key, because
// the standard WebSocket API cannot set an Authorization header (and a key in a URL leaks into logs).

import { SandboxError } from './errors.js';
import type { SandboxScope } from './scope.js';

export type WebSocketClass = new (url: string) => WebSocket;

/** The WebSocket class: the global one (browsers, Node ≥ 22, Node 20 with
 * `--experimental-websocket`), else the `ws` package if it is installed. `feature` names the
 * call that needs it, for the error. */
export async function webSocketClass(feature: string): Promise<WebSocketClass> {
  const global = (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
  if (global) return global;
  const wsModule = 'ws';
  try {
    const ws = (await import(wsModule)) as { default: WebSocketClass };
    return ws.default;
  } catch {
    throw new SandboxError({
      code: 'VALIDATION_FAILED',
      message: `${feature} needs a WebSocket: use Node >= 22, run Node 20 with --experimental-websocket, or install the \`ws\` package`,
      context: {},
      httpStatus: 400,
    });
  }
}

/** `ws(s)://…/v1/sandboxes/{id}{rest}?…&ticket=…` with a fresh single-use ticket (valid 60 s). */
export async function webSocketUrl(
  scope: SandboxScope,
  rest: string,
  query: Record<string, string>,
  operation: string,
): Promise<string> {
  const { ticket } = await scope.controlJson<{ ticket: string }>('/ws-ticket', {
    method: 'POST',
    operation,
  });
  return scope.transport.wsUrl(scope.path(rest), { ...query, ticket });
}
