// What every test file needs: the server under test (SANDPIT_URL, SANDPIT_KEY), fresh sandbox
// ids, polling with generous deadlines, and cleanup. Kept outside test/, because node's test
// runner runs every .mjs file under a `test` directory.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { connect, getSandbox } from '../dist/index.js';

export const URL_BASE = process.env.SANDPIT_URL ?? '';
export const KEY = process.env.SANDPIT_KEY ?? '';

assert.ok(URL_BASE, 'SANDPIT_URL must be set (e.g. http://127.0.0.1:7070)');
assert.ok(KEY, 'SANDPIT_KEY must be set');

/** A sandbox id nobody else uses. */
export function sandboxId(prefix) {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** The namespace of the server under test. */
export const ns = connect({ url: URL_BASE, apiKey: KEY });

/**
 * A fresh sandbox for one test file, destroyed by `after`.
 * @param {string} prefix
 * @param {import('../dist/index.js').SandboxOptions} [options]
 */
export function freshSandbox(prefix, options) {
  return getSandbox(ns, sandboxId(prefix), options);
}

/**
 * Polls `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws with
 * `what`). Generous deadlines: the machine is shared and slow.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>} check
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * How many processes in the sandbox have exactly `args` as their command line, counted from
 * another session (the default one may be busy with the command under test).
 * @param {import('../dist/index.js').ExecutionSession} probe
 * @param {string} args
 */
export async function countProcesses(probe, args) {
  const ps = await probe.exec('ps -eo args=');
  assert.equal(ps.exitCode, 0, ps.stderr);
  return ps.stdout.split('\n').filter((line) => line.trim() === args).length;
}
