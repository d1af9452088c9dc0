// The error table, typed errors from real answers, and failures that get no answer: a server
// that is down, or one that never answers, must give a clear error quickly, never a hang.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { after, test } from 'node:test';

import {
  ConnectionError,
  ERROR_STATUS,
  FileNotFoundError,
  SandboxError,
  UnauthorizedError,
  connect,
  errorFromResponse,
  getSandbox,
  listSandboxes,
} from '../dist/index.js';
import { URL_BASE, sandboxId } from '../testlib/env.mjs';

test('the SDK error table is the protocol table (crates/protocol/src/error.rs)', () => {
  const source = readFileSync(
    new URL('../../../crates/protocol/src/error.rs', import.meta.url),
    'utf8',
  );
  const table = source.split('error_codes! {')[1].split('\n}\n')[0];
  const rows = [...table.matchAll(/^\s*(\w+) = (\d+),/gm)].map(([, name, status]) => [
    name.replace(/(?<!^)([A-Z])/g, '_$1').toUpperCase(),
    Number(status),
  ]);
  assert.ok(rows.length > 80);
  assert.deepEqual(Object.entries(ERROR_STATUS), rows);
});

test('errorFromResponse picks the seed class and keeps code, httpStatus, context', () => {
  const err = errorFromResponse({
    code: 'FILE_NOT_FOUND',
    message: 'no such file',
    context: { path: '/x' },
    httpStatus: 404,
  });
  assert.ok(err instanceof FileNotFoundError && err instanceof SandboxError);
  assert.equal(err.name, 'FileNotFoundError');
  assert.deepEqual([err.code, err.httpStatus, err.context.path], ['FILE_NOT_FOUND', 404, '/x']);
  const plain = errorFromResponse({
    code: 'NO_SPACE',
    message: 'full',
    context: {},
    httpStatus: 500,
  });
  assert.equal(plain.code, 'NO_SPACE');
});

test('a wrong key is UnauthorizedError', async () => {
  const bad = connect({ url: URL_BASE, apiKey: 'sp_wrong' });
  await assert.rejects(listSandboxes(bad), (err) => {
    assert.ok(err instanceof UnauthorizedError);
    assert.equal(err.code, 'UNAUTHORIZED');
    assert.equal(err.httpStatus, 401);
    return true;
  });
  await assert.rejects(getSandbox(bad, 'whatever').exec('true'), UnauthorizedError);
});

test('a server that is down: ConnectionError at once, naming the URL', async () => {
  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (probe.address());
      probe.close(() => resolve(port));
    });
  });
  const down = connect({ url: `http://127.0.0.1:${port}`, apiKey: 'k' });
  const started = Date.now();
  await assert.rejects(getSandbox(down, sandboxId('down')).exec('true'), (err) => {
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'CONNECTION_FAILED');
    assert.equal(err.httpStatus, 0);
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(err.message, /ECONNREFUSED/);
    return true;
  });
  assert.ok(Date.now() - started < 5_000);
});

/** @type {net.Server | undefined} */
let silent;
after(() => silent?.close());

test('a server that accepts but never answers: REQUEST_TIMEOUT, not a hang', async () => {
  const sockets = [];
  silent = net.createServer((socket) => sockets.push(socket));
  const port = await new Promise((resolve) =>
    silent?.listen(0, '127.0.0.1', () =>
      resolve(/** @type {net.AddressInfo} */ (silent?.address()).port),
    ),
  );
  const mute = connect({ url: `http://127.0.0.1:${port}`, apiKey: 'k', requestTimeoutMs: 500 });
  const started = Date.now();
  await assert.rejects(getSandbox(mute, sandboxId('mute')).exec('true'), (err) => {
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'REQUEST_TIMEOUT');
    assert.match(err.message, /within 500 ms/);
    return true;
  });
  assert.ok(Date.now() - started < 5_000);
  for (const s of sockets) s.destroy();
});

test('connect without a key says how to give one', () => {
  const saved = process.env.SANDPIT_KEY;
  delete process.env.SANDPIT_KEY;
  try {
    assert.throws(() => connect({ url: URL_BASE }), /SANDPIT_KEY/);
  } finally {
    process.env.SANDPIT_KEY = saved;
  }
});

test('exec with a timeout gives up on a server that creates the sandbox but never answers', async () => {
  // Answers create-or-get; swallows everything else.
  const hung = http.createServer((req, res) => {
    if (req.url === '/v1/sandboxes')
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  const port = await new Promise((resolve) =>
    hung.listen(0, '127.0.0.1', () =>
      resolve(/** @type {net.AddressInfo} */ (hung.address()).port),
    ),
  );
  try {
    const ns = connect({ url: `http://127.0.0.1:${port}`, apiKey: 'k', timeoutGraceMs: 300 });
    const sandbox = getSandbox(ns, sandboxId('hung'));
    for (const options of [{ timeout: 200 }, { timeout: 200, onStdout: () => {} }]) {
      const started = Date.now();
      await assert.rejects(sandbox.exec('sleep 100', options), (err) => {
        assert.ok(err instanceof ConnectionError, String(err));
        assert.equal(err.code, 'REQUEST_TIMEOUT');
        assert.match(err.message, /^exec: no answer from .* within 500 ms$/);
        return true;
      });
      assert.ok(Date.now() - started < 5_000);
    }
  } finally {
    hung.closeAllConnections();
    hung.close();
  }
});
