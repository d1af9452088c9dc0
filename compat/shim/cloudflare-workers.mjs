// Plain-Node stand-in for the `cloudflare:workers` built-in module of workerd. The
// @cloudflare/sandbox bundle imports it at load time (RpcTarget, tracing, DurableObject base
// classes) even though SandboxClient, which is all we use, needs none of it at run time.

export class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class RpcTarget {}

const noopSpan = { setAttribute() {}, setAttributes() {}, addEvent() {}, end() {} };

// tracing.enterSpan(name, fn, ...args) runs fn(span, ...args) inside a span; here, no span.
export const tracing = {
  enterSpan(_name, fn, ...args) {
    return fn(noopSpan, ...args);
  },
};

export const env = {};
