// @sandpit/sdk: the Cloudflare Sandbox SDK's API (`getSandbox`, `Sandbox`, its methods, result
// shapes and error classes) against a self-hosted sandpit server.

export {
  connect,
  getSandbox,
  getQuota,
  listSandboxes,
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
