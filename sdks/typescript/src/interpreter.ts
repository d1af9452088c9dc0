// The code interpreter: contexts (`/api/contexts`) and runs (`/api/execute/code`, SSE).

import { cancelledError } from './errors.js';
import type { SandboxScope } from './scope.js';
import { parseSSEStream } from './sse.js';
import type {
  CodeContext,
  CodeLanguage,
  CreateContextOptions,
  ExecutionEvent,
  ExecutionResult,
  Result,
  ResultData,
  RunCodeOptions,
} from './types.js';

const RESULT_FORMATS = [
  'text',
  'html',
  'png',
  'jpeg',
  'svg',
  'latex',
  'markdown',
  'javascript',
  'json',
  'chart',
  'data',
] as const;

interface ContextRecord {
  contextId?: string;
  id?: string;
  language: string;
  cwd: string;
}

function toContext(record: ContextRecord): CodeContext {
  const now = new Date();
  return {
    id: record.contextId ?? record.id ?? '',
    language: record.language,
    cwd: record.cwd,
    createdAt: now,
    lastUsed: now,
  };
}

export async function createCodeContext(
  scope: SandboxScope,
  options: CreateContextOptions = {},
): Promise<CodeContext> {
  const record = await scope.apiJson<ContextRecord>('/contexts', {
    json: { language: options.language ?? 'python', cwd: options.cwd, env_vars: options.envVars },
    operation: 'createCodeContext',
    longRunning: true,
  });
  return toContext(record);
}

export async function listCodeContexts(scope: SandboxScope): Promise<CodeContext[]> {
  const body = await scope.apiJson<{ contexts: ContextRecord[] }>('/contexts', {
    operation: 'listCodeContexts',
  });
  return body.contexts.map(toContext);
}

export async function deleteCodeContext(scope: SandboxScope, id: string): Promise<void> {
  await scope.apiJson(`/contexts/${encodeURIComponent(id)}`, {
    method: 'DELETE',
    operation: 'deleteCodeContext',
  });
}

/** The default context per language of one sandbox (the seed caches them the same way). */
export class DefaultContexts {
  readonly #byLanguage = new Map<string, Promise<CodeContext>>();

  get(scope: SandboxScope, language: CodeLanguage): Promise<CodeContext> {
    let context = this.#byLanguage.get(language);
    if (!context) {
      context = createCodeContext(scope, { language });
      // A failed creation is not cached: the next run tries again.
      context.catch(() => this.#byLanguage.delete(language));
      this.#byLanguage.set(language, context);
    }
    return context;
  }

  forget(id: string): void {
    for (const [language, context] of this.#byLanguage) {
      void context.then(
        (c) => c.id === id && this.#byLanguage.delete(language),
        () => {},
      );
    }
  }
}

export async function runCodeStream(
  scope: SandboxScope,
  contexts: DefaultContexts,
  code: string,
  options: RunCodeOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const context = options.context ?? (await contexts.get(scope, options.language ?? 'python'));
  const response = await scope.api('/execute/code', {
    json: {
      context_id: context.id,
      code,
      language: options.language,
      timeout_ms: options.timeout,
    },
    signal: options.signal,
    operation: 'runCode',
    longRunning: true,
  });
  return response.body ?? new ReadableStream();
}

/** A result with the seed's `formats()`. */
function toResult(data: ResultData): Result {
  return {
    ...data,
    formats: () => RESULT_FORMATS.filter((format) => data[format] !== undefined),
  };
}

export async function runCode(
  scope: SandboxScope,
  contexts: DefaultContexts,
  code: string,
  options: RunCodeOptions = {},
): Promise<ExecutionResult> {
  const stream = await runCodeStream(scope, contexts, code, options);
  const execution: ExecutionResult = { code, logs: { stdout: [], stderr: [] }, results: [] };
  try {
    for await (const event of parseSSEStream<ExecutionEvent>(stream, options.signal)) {
      switch (event.type) {
        case 'stdout':
        case 'stderr': {
          execution.logs[event.type].push(event.text);
          const callback = event.type === 'stdout' ? options.onStdout : options.onStderr;
          callback?.({ text: event.text, timestamp: Date.now() });
          break;
        }
        case 'result': {
          const { type: _type, metadata: _metadata, ...data } = event;
          execution.results.push(data);
          await options.onResult?.(toResult(data));
          break;
        }
        case 'error':
          execution.error = {
            name: event.ename,
            message: event.evalue,
            traceback: event.traceback,
          };
          options.onError?.(execution.error);
          break;
        case 'execution_complete':
          execution.executionCount = event.execution_count;
          break;
      }
    }
  } catch (err) {
    if (options.signal?.aborted) throw cancelledError('runCode', options.signal.reason);
    throw err;
  }
  if (options.signal?.aborted) throw cancelledError('runCode', options.signal.reason);
  return execution;
}
