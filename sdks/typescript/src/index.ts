// @sandpit/sdk: the Cloudflare Sandbox SDK's API (`getSandbox`, `Sandbox`, its methods, result
// shapes and error classes) against a self-hosted sandpit server.

export {
  connect,
  createFromSnapshot,
  deleteBackup,
  deleteSnapshot,
  exportSnapshot,
  getBackup,
  getSandbox,
  getSnapshot,
  importSnapshot,
  listBackups,
  listSnapshots,
  getQuota,
  listSandboxes,
  watchSandboxes,
  Sandbox,
  ExecutionSession,
  SandpitNamespace,
  type ConnectOptions,
  type SandboxUpdate,
} from './sandbox.js';
export { Terminal } from './terminal.js';
export {
  parseSSEStream,
  responseToAsyncIterable,
  asyncIterableToSSEStream,
  streamFile,
  collectFile,
} from './sse.js';
export * from './errors.js';
export { ERROR_STATUS, type ErrorCode } from './error-codes.js';
export type * from './types.js';
export type { WriteContent } from './files.js';

import type { ExecResult, Process, ProcessStatus } from './types.js';

/** The seed's preview-URL router for Workers. sandpit serves preview URLs itself (its Host-routed
 * proxy, WebSockets included), so a request that reaches your code is never one for a preview
 * host: this always resolves to `null` ("not mine, handle it"), which keeps a ported Worker's
 * `const r = await proxyToSandbox(request, env); if (r) return r;` working unchanged. */
export async function proxyToSandbox(_request: unknown, _env?: unknown): Promise<Response | null> {
  return null;
}

const PROCESS_STATUSES = ['starting', 'running', 'completed', 'failed', 'killed', 'error'];

/** The seed's type guards. */
export function isExecResult(value: unknown): value is ExecResult {
  const v = value as ExecResult | null;
  return typeof v === 'object' && v !== null && typeof v.exitCode === 'number' && 'stdout' in v;
}

export function isProcess(value: unknown): value is Process {
  const v = value as Process | null;
  return (
    typeof v === 'object' && v !== null && typeof v.id === 'string' && isProcessStatus(v.status)
  );
}

export function isProcessStatus(value: unknown): value is ProcessStatus {
  return typeof value === 'string' && PROCESS_STATUSES.includes(value);
}
