// sandpit's control plane through the SDK: create-or-get options, listSandboxes, info,
// network policy, secrets, limits, stop/wake and destroy.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import {
  LimitExceededError,
  SandboxConflictError,
  ValidationFailedError,
  getQuota,
  getSandbox,
  listSandboxes,
  watchSandboxes,
} from '../dist/index.js';
import { ns, sandboxId } from '../testlib/env.mjs';

const id = sandboxId('ts-ctl');
const sandbox = getSandbox(ns, id, {
  sleepAfter: '2m',
  keepAlive: false,
  limits: { memoryMb: 256, pids: 200 },
  env: { FROM_OPTIONS: 'yes' },
  network: { mode: 'allowlist', allow: ['example.com'] },
  labels: { team: 'control' },
});
after(() => sandbox.destroy());

test('options are applied by create-or-get on first use', async () => {
  assert.equal((await sandbox.exec('echo $FROM_OPTIONS')).stdout, 'yes\n');
  const info = await sandbox.info();
  assert.equal(info.id, id);
  assert.equal(info.sleepAfterSecs, 120);
  assert.equal(info.limits.memoryMb, 256);
  assert.equal(info.limits.pids, 200);
  assert.deepEqual(info.network, { mode: 'allowlist', allow: ['example.com'] });
  assert.equal(info.state, 'running');
});

test('getSandbox again with new mutable options updates the sandbox', async () => {
  const again = getSandbox(ns, id, { keepAlive: true, sleepAfter: 90 });
  const info = await again.info();
  assert.equal(info.keepAlive, true);
  assert.equal(info.sleepAfterSecs, 90);
});

test('listSandboxes pages through the tenant sandboxes', async () => {
  const page = await listSandboxes(ns, { limit: 500 });
  assert.ok(page.sandboxes.some((s) => s.id === id));
});

test('getEgressLog shows what the egress proxy refused (no traffic leaves: .invalid)', async () => {
  const code = await sandbox.exec(
    "curl -s -o /dev/null -w '%{http_code}' http://not-allowed.invalid/",
  );
  assert.equal(code.stdout, '403');
  const log = await sandbox.getEgressLog();
  assert.equal(log.dropped, 0);
  const entry = log.entries.find((e) => e.host === 'not-allowed.invalid');
  assert.equal(entry?.decision, 'denied');
  assert.equal(entry?.kind, 'http');
});

test('getQuota: the tenant, its usage and the caps', async () => {
  const quota = await getQuota(ns);
  assert.equal(quota.tenant, 'default');
  assert.ok(quota.usage.sandboxes >= 1);
  assert.ok(quota.caps.memoryMb >= 256);
});

test('setNetwork, setSecrets (names only come back), setLimits', async () => {
  const net = await sandbox.setNetwork({ mode: 'none' });
  assert.equal(net.network?.mode, 'none');
  const sec = await sandbox.setSecrets({
    API_TOKEN: { value: 'secret-value', hosts: ['api.example.com'] },
  });
  assert.deepEqual(
    sec.secrets?.map((s) => s.name),
    ['API_TOKEN'],
  );
  assert.ok(!JSON.stringify(sec).includes('secret-value'));
  // Inside, the variable holds a placeholder, never the value.
  const inside = await sandbox.exec('echo "$API_TOKEN"');
  assert.ok(inside.stdout.trim().length > 0);
  assert.ok(!inside.stdout.includes('secret-value'));
  const lim = await sandbox.setLimits({ pids: 300 });
  assert.equal(lim.limits.pids, 300);
});

test('stop puts it to sleep; files survive; the next call wakes it', async () => {
  await sandbox.writeFile('/workspace/kept.txt', 'kept');
  const stopped = await sandbox.stop();
  assert.equal(stopped.state, 'sleeping');
  assert.equal((await sandbox.readFile('/workspace/kept.txt')).content, 'kept');
  assert.equal((await sandbox.info()).state, 'running');
});

test('a different image for an existing id is SandboxConflictError', async () => {
  const other = getSandbox(ns, id, { ephemeral: true });
  await assert.rejects(other.exec('true'), (err) => {
    assert.ok(err instanceof SandboxConflictError);
    assert.equal(err.httpStatus, 409);
    return true;
  });
});

test('limits above the server cap are LimitExceededError with context', async () => {
  const huge = getSandbox(ns, sandboxId('ts-huge'), { limits: { memoryMb: 1 << 30 } });
  await assert.rejects(huge.exec('true'), (err) => {
    assert.ok(err instanceof LimitExceededError);
    assert.equal(err.code, 'LIMIT_EXCEEDED');
    assert.equal(err.context.field, 'memoryMb');
    return true;
  });
});

test('the seed id rules, and normalizeId', async () => {
  for (const bad of ['', '-lead', 'trail-', 'a'.repeat(64), 'www', 'has_underscore']) {
    assert.throws(() => getSandbox(ns, bad), ValidationFailedError, bad);
  }
  const mixed = getSandbox(ns, 'Mixed-Case-X', { normalizeId: true });
  assert.equal(mixed.id, 'mixed-case-x');
});

test('destroy removes it; destroying again is fine', async () => {
  const temp = getSandbox(ns, sandboxId('ts-gone'));
  await temp.exec('true');
  await temp.destroy();
  const page = await listSandboxes(ns, { limit: 500 });
  assert.ok(!page.sandboxes.some((s) => s.id === temp.id));
  await temp.destroy();
});

test('watchSandboxes: the tenant sandbox changes as they happen', async () => {
  const controller = new AbortController();
  const events = await watchSandboxes(ns, { signal: controller.signal });
  const watched = getSandbox(ns, sandboxId('ts-events'));
  await watched.exec('true');
  await watched.destroy();
  const seen = [];
  for await (const e of events) {
    if (e.kind === 'lagged' || e.sandboxId !== watched.id) continue;
    seen.push(`${e.kind}:${e.state}`);
    assert.ok(e.seq > 0 && e.at.endsWith('Z'));
    if (e.kind === 'destroyed') break;
  }
  controller.abort();
  assert.deepEqual(seen, ['created:creating', 'started:running', 'destroyed:destroyed']);
});
