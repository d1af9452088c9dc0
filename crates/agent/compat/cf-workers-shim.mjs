export class DurableObject { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }
export class WorkerEntrypoint { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }
export class RpcTarget {}
export const tracing = { enterSpan: (_n, fn, ...a) => fn({ setAttribute() {} }, ...a) };
export const env = {};
