// What every compatibility test file needs: the server under test (SANDPIT_URL, SANDPIT_KEY),
// a fresh sandbox id, the published SandboxClient pointed at it, and its removal afterwards.
// Kept outside test/, because node's test runner runs every .mjs file under a `test` directory.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { SandboxClient } from '@cloudflare/sandbox';

export const URL_BASE = process.env.SANDPIT_URL;
export const KEY = process.env.SANDPIT_KEY;

/** A sandbox id nobody else uses. */
export function sandboxId(prefix) {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** Fails the file's setup with a clear message when no server is given. */
export function requireServer() {
  assert.ok(URL_BASE, 'SANDPIT_URL must be set (e.g. http://127.0.0.1:7070)');
  assert.ok(KEY, 'SANDPIT_KEY must be set');
}

/** The published client for sandbox `id`, authenticated with `key`; `extra` adds options. */
export function sandboxClient(id, key = KEY, extra = {}) {
  return new SandboxClient({
    baseUrl: `${URL_BASE}/v1/sandboxes/${id}`,
    defaultHeaders: { Authorization: `Bearer ${key}` },
    // A sandpit 503 means "retry"; don't let a broken server stall the suite for minutes.
    retryTimeoutMs: 30_000,
    ...extra,
  });
}

/** Destroys the sandbox (after the tests of a file). */
export async function destroySandbox(id) {
  if (!URL_BASE || !KEY) return;
  await fetch(`${URL_BASE}/v1/sandboxes/${id}`, {
    method: 'DELETE',
    headers: { Authorization: `Bearer ${KEY}` },
  });
}
