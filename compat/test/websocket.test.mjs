// The published SandboxClient in WebSocket transport mode (`transportMode: 'websocket'`): every
// call is a request frame on one multiplexed WebSocket to the agent's `/ws`, through the
// server's `/v1/sandboxes/<id>/ws`. Browsers cannot send headers on a WebSocket, so the key goes
// in the URL as `?access_token=`. Node 20 needs `--experimental-websocket` for the global
// WebSocket (package.json's test script passes it).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { parseSSEStream } from '@cloudflare/sandbox';

import { KEY, URL_BASE, destroySandbox, requireServer, sandboxClient, sandboxId } from '../lib/sandpit.mjs';

const SANDBOX_ID = sandboxId('compat-ws');

function wsClient(key) {
  const ws = URL_BASE.replace(/^http/, 'ws');
  return sandboxClient(SANDBOX_ID, KEY, {
    transportMode: 'websocket',
    wsUrl: `${ws}/v1/sandboxes/${SANDBOX_ID}/ws?access_token=${encodeURIComponent(key)}`,
  });
}

let client;

before(async () => {
  requireServer();
  assert.equal(typeof WebSocket, 'function', 'global WebSocket missing: run node with --experimental-websocket');
  // Create the sandbox first, so the WebSocket does not wait for its start.
  const res = await fetch(`${URL_BASE}/v1/sandboxes`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: SANDBOX_ID }),
  });
  assert.ok(res.status === 201 || res.status === 200, `create: ${res.status}`);
  client = wsClient(KEY);
});

after(async () => {
  client?.disconnect?.();
  await destroySandbox(SANDBOX_ID);
});

describe('SandboxClient over the WebSocket transport', { concurrency: false }, () => {
  test('requests travel over the WebSocket', async () => {
    assert.equal(client.getTransportMode(), 'websocket');
    await client.utils.ping();
    assert.equal(client.isWebSocketConnected(), true);
  });

  test('execute, sessions and files', async () => {
    await client.utils.createSession({ id: 'ws-s', env: { GREETING: 'hello' }, cwd: '/tmp' });
    const r = await client.commands.execute('echo $GREETING; pwd; (exit 3)', 'ws-s');
    assert.equal(r.stdout, 'hello\n/tmp\n');
    assert.equal(r.exitCode, 3);
    await client.files.writeFile('/workspace/ws.txt', 'over the socket', 'ws-s');
    const f = await client.files.readFile('/workspace/ws.txt', 'ws-s');
    assert.equal(f.content, 'over the socket');
  });

  test('executeStream arrives as stream frames', async () => {
    const stream = await client.commands.executeStream('for i in 1 2 3; do echo line$i; done', 'ws-s');
    const events = [];
    for await (const e of parseSSEStream(stream)) events.push(e);
    assert.equal(events[0].type, 'start');
    const out = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    assert.equal(out, 'line1\nline2\nline3\n');
    const last = events.at(-1);
    assert.equal(last.type, 'complete');
    assert.equal(last.exitCode, 0);
  });

  test('typed errors keep their code and status', async () => {
    await assert.rejects(client.files.readFile('/workspace/missing.txt', 'ws-s'), (e) => {
      assert.equal(e.code, 'FILE_NOT_FOUND');
      assert.equal(e.httpStatus ?? e.status, 404);
      return true;
    });
  });

  test('a wrong access_token is refused', async () => {
    const bad = wsClient('sp_wrong');
    await assert.rejects(bad.utils.ping());
    bad.disconnect?.();
  });
});
