// What every operation needs to reach one sandbox: the transport, the sandbox's routes and the
// one-time create-or-get. (The session an operation runs in is bound by `Operations`.)

import type { RequestOptions, Transport } from './transport.js';

/** The session token of the container protocol meaning "no session: a fresh `bash -c`". */
export const DISABLE_SESSION = '__DISABLE_SESSION__';

export class SandboxScope {
  readonly transport: Transport;
  readonly id: string;
  readonly #ensure: () => Promise<void>;

  constructor(transport: Transport, id: string, ensure: () => Promise<void>) {
    this.transport = transport;
    this.id = id;
    this.#ensure = ensure;
  }

  /** `/v1/sandboxes/{id}` + `rest`. */
  path(rest = ''): string {
    return `/v1/sandboxes/${encodeURIComponent(this.id)}${rest}`;
  }

  /** A forwarded container-API call (`/api/...`), after the sandbox exists. */
  async api(rest: string, options: RequestOptions): Promise<Response> {
    await this.#ensure();
    return this.transport.fetch(this.path(`/api${rest}`), options);
  }

  /** A forwarded container-API call answering JSON. */
  async apiJson<T>(rest: string, options: RequestOptions): Promise<T> {
    await this.#ensure();
    return this.transport.json<T>(this.path(`/api${rest}`), options);
  }

  /** A control-plane call on this sandbox (`/v1/sandboxes/{id}/...`), after it exists. */
  async controlJson<T>(rest: string, options: RequestOptions): Promise<T> {
    await this.#ensure();
    return this.transport.json<T>(this.path(rest), options);
  }

  /** Makes sure the sandbox exists (with its options) before the first call. */
  ensure(): Promise<void> {
    return this.#ensure();
  }
}
