// `connect()` → a namespace handle; `getSandbox(ns, id, options)` → a `Sandbox` with the seed's
// methods. The sandbox is created (or fetched, with its mutable options applied) by one
// create-or-get call before its first operation, like the seed's `getSandbox` + `configure`.

import { DefaultContexts } from './interpreter.js';
import { Operations } from './operations.js';
import {
  notSupported,
  PortNotExposedError,
  SandboxNotFoundError,
  ValidationFailedError,
} from './errors.js';
import { DISABLE_SESSION, SandboxScope } from './scope.js';
import { parseSSEStream } from './sse.js';
import { Transport } from './transport.js';
import type {
  BackupInfo,
  BucketMountInfo,
  EgressLogPage,
  ForkResult,
  ExposePortOptions,
  ExposedPortInfo,
  ExposedPortStatus,
  NetworkPolicy,
  QuotaInfo,
  SandboxEvent,
  SandboxEventsLagged,
  SandboxInfo,
  SandboxLimits,
  SandboxList,
  SandboxOptions,
  SandboxUsage,
  SecretSpec,
  SessionDeleteResult,
  SessionOptions,
  ImportSnapshotOptions,
  SnapshotExport,
  SnapshotInfo,
  TunnelInfo,
} from './types.js';

const TUNNEL_ALTERNATIVE = "exposePort(port) gives a preview URL on the server's preview domain";

export interface ConnectOptions {
  /** Server URL; default `SANDPIT_URL`, else `http://127.0.0.1:7070`. */
  url?: string;
  /** API key; default `SANDPIT_KEY`. */
  apiKey?: string;
  /** Deadline of calls that answer at once (not commands, streams or code runs); default 30 s. */
  requestTimeoutMs?: number;
  /** An `exec` with a `timeout` gives up on the server when no answer came this long after the
   * timeout (default 10 s; the server itself answers within 5 s of it). */
  timeoutGraceMs?: number;
}

/** A connection to a sandpit server: what `env.Sandbox` is to the seed's `getSandbox`. */
export class SandpitNamespace {
  readonly transport: Transport;
  /** Create-or-get calls made, by sandbox id and then request body: a Worker-style
   * `getSandbox` per request costs one create-or-get per id and options, not one per request
   * (like the seed's cached `configure`); each distinct set of options is applied once. */
  readonly #ensured = new Map<string, Map<string, Promise<void>>>();

  constructor(options: ConnectOptions = {}) {
    const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
      ?.env;
    const apiKey = options.apiKey ?? env?.SANDPIT_KEY;
    if (!apiKey) {
      throw new ValidationFailedError({
        code: 'VALIDATION_FAILED',
        message: 'no API key: pass connect({ apiKey }) or set SANDPIT_KEY',
        context: {},
        httpStatus: 400,
      });
    }
    this.transport = new Transport({
      url: options.url ?? env?.SANDPIT_URL ?? 'http://127.0.0.1:7070',
      apiKey,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      timeoutGraceMs: options.timeoutGraceMs ?? 10_000,
    });
  }

  get url(): string {
    return this.transport.url;
  }

  /** Creates sandbox `id` with `options` (or applies them to the existing one), once. */
  ensureSandbox(id: string, options: SandboxOptions): Promise<void> {
    const request = createBody(id, options);
    const body = JSON.stringify(request);
    let byBody = this.#ensured.get(id);
    if (!byBody) this.#ensured.set(id, (byBody = new Map()));
    const known = byBody.get(body);
    if (known) return known;
    const done = this.transport
      .json('/v1/sandboxes', { json: request, operation: 'getSandbox' })
      .then(() => undefined);
    byBody.set(body, done);
    // A failed create is retried by the next call.
    done.catch(() => {
      if (byBody.get(body) === done) byBody.delete(body);
    });
    return done;
  }

  /** Forgets that sandbox `id` exists (after destroying it). */
  forgetSandbox(id: string): void {
    this.#ensured.delete(id);
  }
}

/** Connects to a sandpit server (`SANDPIT_URL` / `SANDPIT_KEY` by default). No request is made
 * until a sandbox is used. */
export function connect(options: ConnectOptions = {}): SandpitNamespace {
  return new SandpitNamespace(options);
}

const RESERVED_IDS = new Set(['www', 'api', 'admin', 'root', 'system', 'cloudflare', 'workers']);

/** The seed's id rules (reference §1.2); the server checks them again. */
function sandboxIdOf(id: string, normalize: boolean | undefined): string {
  const value = normalize ? id.toLowerCase() : id;
  const problem =
    value.length < 1 || value.length > 63
      ? 'must be 1-63 characters'
      : value.startsWith('-') || value.endsWith('-')
        ? 'must not start or end with "-"'
        : RESERVED_IDS.has(value.toLowerCase())
          ? 'is reserved'
          : !/^[A-Za-z0-9-]+$/.test(value)
            ? 'may contain only letters, digits and "-"'
            : undefined;
  if (problem) {
    throw new ValidationFailedError({
      code: 'VALIDATION_FAILED',
      message: `sandbox id ${JSON.stringify(id)} ${problem}`,
      context: { sandboxId: id },
      httpStatus: 400,
    });
  }
  return value;
}

/** The sandbox `id` of namespace `ns`; created with `options` on first use. */
export function getSandbox(
  ns: SandpitNamespace,
  id: string,
  options: SandboxOptions = {},
): Sandbox {
  return new Sandbox(ns, sandboxIdOf(id, options.normalizeId), options);
}

/** The sandboxes of the key's tenant (one page; pass `nextCursor` as `cursor` for the next);
 * with `labels`, only those carrying every one of them (pages walk the matching ones only). */
export function listSandboxes(
  ns: SandpitNamespace,
  options: { limit?: number; cursor?: string; labels?: Record<string, string> } = {},
): Promise<SandboxList> {
  return ns.transport.json<SandboxList>('/v1/sandboxes', {
    query: {
      limit: options.limit,
      cursor: options.cursor,
      label: Object.entries(options.labels ?? {}).map(([k, v]) => `${k}=${v}`),
    },
    operation: 'listSandboxes',
  });
}

/** The key's tenant's sandbox changes as they happen (`GET /v1/events`): created, started,
 * stopped, updated, destroyed. Resolves once the server has subscribed the stream, so every change
 * made afterwards arrives, in order; list the sandboxes then to know the starting point. Runs
 * until `signal` aborts, the loop is left, or the server shuts down. A `lagged` item means
 * events were missed: list again. */
export async function watchSandboxes(
  ns: SandpitNamespace,
  options: { signal?: AbortSignal } = {},
): Promise<AsyncGenerator<SandboxEvent | SandboxEventsLagged>> {
  const response = await ns.transport.fetch('/v1/events', {
    operation: 'watchSandboxes',
    longRunning: true,
    signal: options.signal,
  });
  const events = parseSSEStream<Record<string, unknown>>(
    response.body ?? new ReadableStream(),
    options.signal,
  );
  return (async function* () {
    for await (const data of events) {
      if (typeof data.seq === 'number') yield data as unknown as SandboxEvent;
      else if (typeof data.missed === 'number') yield { kind: 'lagged', missed: data.missed };
      // `ready` ({}) and kinds of newer servers are skipped.
    }
  })();
}

/** The key's tenant: its quota, usage and the server's per-sandbox caps. */
export function getQuota(ns: SandpitNamespace): Promise<QuotaInfo> {
  return ns.transport.json<QuotaInfo>('/v1/quota', { operation: 'getQuota' });
}

// ---- backups and snapshots of the tenant (docs/persistence.md) -------------------------------

/** The key's tenant's backups, newest first (expired ones until the reaper deletes them). */
export async function listBackups(ns: SandpitNamespace): Promise<BackupInfo[]> {
  const body = await ns.transport.json<{ backups: BackupInfo[] }>('/v1/backups', {
    operation: 'listBackups',
  });
  return body.backups;
}

/** One backup (`BackupNotFoundError` for an unknown id or another tenant's). */
export function getBackup(ns: SandpitNamespace, backupId: string): Promise<BackupInfo> {
  return ns.transport.json<BackupInfo>(`/v1/backups/${encodeURIComponent(backupId)}`, {
    operation: 'getBackup',
  });
}

/** Deletes a backup's archive and record. */
export async function deleteBackup(ns: SandpitNamespace, backupId: string): Promise<void> {
  await ns.transport.json(`/v1/backups/${encodeURIComponent(backupId)}`, {
    method: 'DELETE',
    operation: 'deleteBackup',
  });
}

/** The key's tenant's snapshots, oldest first. */
export async function listSnapshots(ns: SandpitNamespace): Promise<SnapshotInfo[]> {
  const body = await ns.transport.json<{ snapshots: SnapshotInfo[] }>('/v1/snapshots', {
    operation: 'listSnapshots',
  });
  return body.snapshots;
}

/** One snapshot (`SNAPSHOT_NOT_FOUND` for an unknown id or another tenant's). */
export function getSnapshot(ns: SandpitNamespace, snapshotId: string): Promise<SnapshotInfo> {
  return ns.transport.json<SnapshotInfo>(`/v1/snapshots/${encodeURIComponent(snapshotId)}`, {
    operation: 'getSnapshot',
  });
}

/** Deletes a snapshot (`SNAPSHOT_IN_USE` while sandboxes created from it exist). */
export async function deleteSnapshot(ns: SandpitNamespace, snapshotId: string): Promise<void> {
  await ns.transport.json(`/v1/snapshots/${encodeURIComponent(snapshotId)}`, {
    method: 'DELETE',
    operation: 'deleteSnapshot',
  });
}

/** Exports a snapshot to the server's object store (a zstd tar of its layers, checksummed),
 * so it outlives the server's disk and can move to another server using the same store. Import
 * it with `importSnapshot`. `SNAPSHOT_NOT_FOUND` for an unknown id or another tenant's. */
export function exportSnapshot(ns: SandpitNamespace, snapshotId: string): Promise<SnapshotExport> {
  return ns.transport.json<SnapshotExport>(
    `/v1/snapshots/${encodeURIComponent(snapshotId)}/export`,
    { method: 'POST', operation: 'exportSnapshot', longRunning: true },
  );
}

/** Imports an export of the key's tenant (`objectKey` from `exportSnapshot`) as a new snapshot.
 * `sha256`, if given, must be the export's (`SNAPSHOT_IMPORT_FAILED` otherwise, and for a
 * corrupt or truncated archive); `SNAPSHOT_EXPORT_NOT_FOUND` for a key that is not there or
 * belongs to another tenant. */
export function importSnapshot(
  ns: SandpitNamespace,
  options: ImportSnapshotOptions,
): Promise<SnapshotInfo> {
  return ns.transport.json<SnapshotInfo>('/v1/snapshots/import', {
    json: options,
    operation: 'importSnapshot',
    longRunning: true,
  });
}

/** Creates sandbox `id` from snapshot `snapshotId` (its files, its image) and returns it,
 * running. The same as `getSandbox(ns, id, { ...options, snapshot })` plus the create now. */
export async function createFromSnapshot(
  ns: SandpitNamespace,
  snapshotId: string,
  id: string,
  options: SandboxOptions = {},
): Promise<Sandbox> {
  const sandbox = getSandbox(ns, id, { ...options, snapshot: snapshotId });
  await ns.ensureSandbox(sandbox.id, { ...options, snapshot: snapshotId });
  return sandbox;
}

/** The body of create-or-get: the seed's options that mean something to sandpit, plus its own. */
function createBody(id: string, options: SandboxOptions) {
  return {
    id,
    sleepAfter: options.sleepAfter,
    keepAlive: options.keepAlive,
    keepAliveWhileBusy: options.keepAliveWhileBusy,
    labels: options.labels,
    ttl: options.ttl,
    image: options.image,
    limits: options.limits,
    network: options.network,
    secrets: options.secrets,
    ephemeral: options.ephemeral,
    env: options.env,
    snapshot: options.snapshot,
  };
}

/** The mutable options of a sandbox (sandpit's `UpdateSandboxRequest`). */
export interface SandboxUpdate {
  sleepAfter?: string | number;
  keepAlive?: boolean;
  keepAliveWhileBusy?: boolean;
  env?: Record<string, string>;
  limits?: SandboxLimits;
  network?: NetworkPolicy;
  secrets?: Record<string, SecretSpec>;
  /** Merged: `null` removes a label. */
  labels?: Record<string, string | null>;
  ttl?: string | number;
}

export class Sandbox extends Operations {
  readonly id: string;
  readonly #ns: SandpitNamespace;

  constructor(ns: SandpitNamespace, id: string, options: SandboxOptions) {
    const ensure = () => ns.ensureSandbox(id, options);
    const defaultSession = options.enableDefaultSession === false ? DISABLE_SESSION : undefined;
    super(new SandboxScope(ns.transport, id, ensure), defaultSession, new DefaultContexts());
    this.id = id;
    this.#ns = ns;
  }

  // ---- sessions ------------------------------------------------------------------------------

  /** Creates a session: its own shell with its own cwd and environment. */
  async createSession(options: SessionOptions = {}): Promise<ExecutionSession> {
    const id = options.id ?? options.name ?? `session-${crypto.randomUUID()}`;
    await this.scope.apiJson('/session/create', {
      json: { id, env: options.env, cwd: options.cwd, commandTimeoutMs: options.commandTimeoutMs },
      operation: 'createSession',
    });
    return new ExecutionSession(this.scope, id, this.contexts);
  }

  /** The session `id` (no request; an unknown id is created by its first command). */
  async getSession(id: string): Promise<ExecutionSession> {
    return new ExecutionSession(this.scope, id, this.contexts);
  }

  /** Deletes a session, killing its shell, terminal and background processes. */
  async deleteSession(id: string): Promise<SessionDeleteResult> {
    if (id === 'default') {
      throw new ValidationFailedError({
        code: 'VALIDATION_FAILED',
        message: 'the default session cannot be deleted',
        context: { sessionId: id },
        httpStatus: 400,
      });
    }
    return this.scope.apiJson('/session/delete', {
      json: { sessionId: id },
      operation: 'deleteSession',
    });
  }

  // ---- ports ---------------------------------------------------------------------------------

  /** Exposes a port at a preview URL of the server's preview domain (`hostname` is accepted for
   * source compatibility and not needed). */
  async exposePort(port: number, options: ExposePortOptions = {}): Promise<ExposedPortInfo> {
    const exposed = await this.scope.controlJson<ExposedPortInfo>('/ports', {
      json: { port, name: options.name, token: options.token },
      operation: 'exposePort',
    });
    return {
      url: exposed.url,
      port: exposed.port,
      ...(exposed.name == null ? {} : { name: exposed.name }),
      ...(exposed.token === undefined ? {} : { token: exposed.token }),
      ...(exposed.stale === undefined ? {} : { stale: exposed.stale }),
    };
  }

  /** Unexposes a port; a port that is not exposed is not an error (as in the seed). */
  async unexposePort(port: number): Promise<void> {
    try {
      await this.scope.controlJson(`/ports/${port}`, {
        method: 'DELETE',
        operation: 'unexposePort',
      });
    } catch (err) {
      if (!(err instanceof PortNotExposedError)) throw err;
    }
  }

  async getExposedPorts(_hostname?: string): Promise<ExposedPortStatus[]> {
    const body = await this.scope.controlJson<{ ports: ExposedPortInfo[] }>('/ports', {
      operation: 'getExposedPorts',
    });
    return body.ports.map((p) => ({ ...p, status: 'active' as const }));
  }

  async isPortExposed(port: number): Promise<boolean> {
    return (await this.getExposedPorts()).some((p) => p.port === port);
  }

  async validatePortToken(port: number, token: string): Promise<boolean> {
    return (await this.getExposedPorts()).some((p) => p.port === port && p.token === token);
  }

  /** Not supported by this server (a Worker-side proxy into a container port): rejects with
   * `NotSupportedError`. sandpit's preview URLs accept WebSocket upgrades themselves: expose the
   * port and connect a WebSocket to its URL. */
  async wsConnect(_request: unknown, _port: number): Promise<never> {
    throw notSupported(
      'wsConnect',
      'it proxies a Worker request into the container',
      'exposePort(port) and open the WebSocket on its preview URL (the server proxies upgrades)',
    );
  }

  /** The seed's Cloudflare Tunnels (rpc transport only): not supported by this server; every
   * call rejects with `NotSupportedError`. Preview URLs (`exposePort`) are sandpit's way in. */
  readonly tunnels = {
    get: async (_port: number, _options?: { name?: string }): Promise<TunnelInfo> => {
      throw notSupported('tunnels.get', 'sandpit has no Cloudflare Tunnels', TUNNEL_ALTERNATIVE);
    },
    list: async (): Promise<TunnelInfo[]> => {
      throw notSupported('tunnels.list', 'sandpit has no Cloudflare Tunnels', TUNNEL_ALTERNATIVE);
    },
    destroy: async (_portOrInfo: number | TunnelInfo): Promise<void> => {
      throw notSupported(
        'tunnels.destroy',
        'sandpit has no Cloudflare Tunnels',
        TUNNEL_ALTERNATIVE,
      );
    },
  };

  /** The seed's container placement id: sandpit has none (`null`, a value the seed also returns). */
  async getContainerPlacementId(): Promise<string | null> {
    return null;
  }

  // ---- sandpit's control plane ---------------------------------------------------------------

  /** The sandbox as the server reports it (state, limits, network, secrets without values). */
  info(): Promise<SandboxInfo> {
    return this.scope.controlJson('', { operation: 'info' });
  }

  /** What the sandbox uses now: CPU time, memory, processes, disk, egress bytes (does not wake
   * it; a sleeping sandbox reports zeros for its cgroup counters). */
  usage(): Promise<SandboxUsage> {
    return this.scope.controlJson('/usage', { operation: 'usage' });
  }

  /** The decisions of the sandbox's egress proxy (newest 256, oldest first). */
  getEgressLog(): Promise<EgressLogPage> {
    return this.scope.controlJson('/egress-log', { operation: 'getEgressLog' });
  }

  /** Replaces the outbound network policy; applies at once. */
  setNetwork(network: NetworkPolicy): Promise<SandboxInfo> {
    return this.#patch({ network }, 'setNetwork');
  }

  /** Replaces the whole set of secrets; applies at once. */
  setSecrets(secrets: Record<string, SecretSpec>): Promise<SandboxInfo> {
    return this.#patch({ secrets }, 'setSecrets');
  }

  /** Changes limits: cpus, memory and pids of a running sandbox at once, `diskMb` at its next
   * start (then listed in the answer's `pendingRestart`). */
  setLimits(limits: SandboxLimits): Promise<SandboxInfo> {
    return this.#patch({ limits }, 'setLimits');
  }

  async setKeepAlive(keepAlive: boolean): Promise<void> {
    await this.#patch({ keepAlive }, 'setKeepAlive');
  }

  async setSleepAfter(sleepAfter: string | number): Promise<void> {
    await this.#patch({ sleepAfter }, 'setSleepAfter');
  }

  /** `false`: the sandbox sleeps after `sleepAfter` without calls even while background
   * processes run. */
  setKeepAliveWhileBusy(keepAliveWhileBusy: boolean): Promise<SandboxInfo> {
    return this.#patch({ keepAliveWhileBusy }, 'setKeepAliveWhileBusy');
  }

  /** Merges labels: a string sets one, `null` removes it. */
  setLabels(labels: Record<string, string | null>): Promise<SandboxInfo> {
    return this.#patch({ labels }, 'setLabels');
  }

  /** A new time to live counted from now (`0` removes it); `SandboxInfo.expiresAt` says when. */
  setTtl(ttl: string | number): Promise<SandboxInfo> {
    return this.#patch({ ttl }, 'setTtl');
  }

  /** sandpit's PATCH: any mutable options at once; the answer's `pendingRestart` lists what
   * waits for the next start. */
  update(changes: SandboxUpdate): Promise<SandboxInfo> {
    return this.#patch({ ...changes }, 'update');
  }

  /** Puts the sandbox to sleep now (its files stay; the next call wakes it). */
  stop(): Promise<SandboxInfo> {
    return this.scope.controlJson('/stop', { method: 'POST', operation: 'stop' });
  }

  /** Destroys the sandbox: processes, files and record. Destroying a missing one is not an error. */
  async destroy(): Promise<void> {
    try {
      await this.#ns.transport.json(this.scope.path(), { method: 'DELETE', operation: 'destroy' });
    } catch (err) {
      if (!(err instanceof SandboxNotFoundError)) throw err;
    }
    this.#ns.forgetSandbox(this.id);
  }

  // ---- snapshots, forks and bucket mounts (docs/persistence.md) -------------------------------

  /** Freezes the sandbox's file system into a snapshot. A running sandbox is put to sleep for
   * it and woken again: its processes end (files stay). */
  createSnapshot(options: { name?: string } = {}): Promise<SnapshotInfo> {
    return this.scope.controlJson('/snapshots', {
      json: { name: options.name },
      operation: 'createSnapshot',
      longRunning: true,
    });
  }

  /** Snapshots the sandbox and starts `count` children from it (or one per id of `ids`), all
   * running, all or none (1-32). The children are `Sandbox` handles of this namespace. */
  async fork(count?: number, ids?: string[]): Promise<ForkResult & { children: Sandbox[] }> {
    const result = await this.scope.controlJson<ForkResult>('/fork', {
      json: { count, ids },
      operation: 'fork',
      longRunning: true,
    });
    const children = result.sandboxes.map((s) =>
      getSandbox(this.#ns, s.id, { snapshot: result.snapshot.id }),
    );
    return { ...result, children };
  }

  /** The sandbox's bucket mounts (never their credentials). */
  async getBucketMounts(): Promise<BucketMountInfo[]> {
    const body = await this.scope.controlJson<{ mounts: BucketMountInfo[] }>('/mounts', {
      operation: 'getBucketMounts',
    });
    return body.mounts;
  }

  #patch(body: Record<string, unknown>, operation: string): Promise<SandboxInfo> {
    return this.scope.controlJson('', { method: 'PATCH', json: body, operation });
  }
}

/** A session of a sandbox (reference §1.4): the sandbox's operations run in this session. */
export class ExecutionSession extends Operations {
  readonly id: string;

  constructor(scope: SandboxScope, id: string, contexts: DefaultContexts) {
    super(scope, id, contexts);
    this.id = id;
  }
}
