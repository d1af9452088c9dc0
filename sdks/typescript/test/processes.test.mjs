// Background processes, the Process object, log streams (and their cancellation), and ports.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, test } from 'node:test';

import {
  OperationInterruptedError,
  ProcessExitedBeforeReadyError,
  ProcessNotFoundError,
  ProcessReadyTimeoutError,
  isProcess,
  parseSSEStream,
} from '../dist/index.js';
import { countProcesses, freshSandbox, waitFor } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-proc');
after(() => sandbox.destroy());

describe('processes', () => {
  test('startProcess → Process; waitForLog, getLogs, waitForExit', async () => {
    const proc = await sandbox.startProcess(
      'echo booting; sleep 0.5; echo "listening on 4242"; echo warn >&2; sleep 0.5; exit 5',
      { processId: 'boot' },
    );
    assert.ok(isProcess(proc));
    assert.equal(proc.id, 'boot');
    assert.equal(typeof proc.pid, 'number');
    const found = await proc.waitForLog(/listening on (\d+)/, 30_000);
    assert.equal(found.line, 'listening on 4242');
    assert.equal(found.match?.[1], '4242');
    assert.deepEqual(await proc.waitForExit(30_000), { exitCode: 5 });
    assert.equal(await proc.getStatus(), 'failed');
    const logs = await proc.getLogs();
    assert.equal(logs.stdout, 'booting\nlistening on 4242\n');
    assert.equal(logs.stderr, 'warn\n');
    const viaSandbox = await sandbox.getProcessLogs('boot');
    assert.equal(viaSandbox.processId, 'boot');
  });

  test('startProcess with env, cwd and onOutput/onExit callbacks', async () => {
    const output = [];
    /** @type {Promise<number | null>} */
    const exited = new Promise((resolve) => {
      sandbox.startProcess('echo "$MODE $(pwd)"', {
        env: { MODE: 'bg' },
        cwd: '/tmp',
        onOutput: (_stream, data) => output.push(data),
        onExit: resolve,
      });
    });
    assert.equal(await exited, 0);
    assert.equal(output.join(''), 'bg /tmp\n');
  });

  test('waitForLog times out with ProcessReadyTimeoutError; exit first is ProcessExitedBeforeReady', async () => {
    const slow = await sandbox.startProcess('sleep 60');
    await assert.rejects(slow.waitForLog('never', 500), ProcessReadyTimeoutError);
    await slow.kill();
    const quick = await sandbox.startProcess('echo bye');
    await assert.rejects(quick.waitForLog('never', 30_000), ProcessExitedBeforeReadyError);
  });

  test('list, get, kill, killAll; getProcess of an unknown id is null', async () => {
    const one = await sandbox.startProcess('sleep 3101');
    const two = await sandbox.startProcess('sleep 3102');
    const ids = (await sandbox.listProcesses()).map((p) => p.id);
    assert.ok(ids.includes(one.id) && ids.includes(two.id));
    const got = await sandbox.getProcess(one.id);
    assert.equal(got?.status, 'running');
    assert.equal(got?.command, 'sleep 3101');
    await sandbox.killProcess(one.id);
    assert.equal(await one.getStatus(), 'killed');
    assert.ok((await sandbox.killAllProcesses()) >= 1);
    assert.equal(await two.getStatus(), 'killed');
    assert.equal(await sandbox.getProcess('no-such-process'), null);
    await assert.rejects(sandbox.getProcessLogs('no-such-process'), (err) => {
      assert.ok(err instanceof ProcessNotFoundError);
      assert.equal(err.httpStatus, 404);
      return true;
    });
  });

  test('stdin: true + sendStdin / closeStdin (sandpit extension)', async () => {
    const proc = await sandbox.startProcess('tr a-z A-Z', { stdin: true });
    const sent = await proc.sendStdin('hello ');
    assert.equal(sent.bytesWritten, 6);
    assert.equal(sent.closed, false);
    await proc.sendStdin(new TextEncoder().encode('bytes\n'));
    await proc.closeStdin();
    assert.deepEqual(await proc.waitForExit(30_000), { exitCode: 0 });
    assert.equal((await proc.getLogs()).stdout, 'HELLO BYTES\n');
    // Without stdin: true there is no pipe to write to.
    const closed = await sandbox.startProcess('sleep 60');
    await assert.rejects(closed.sendStdin('x'), (/** @type {any} */ err) => {
      assert.equal(err.code, 'VALIDATION_FAILED');
      return true;
    });
    await closed.kill();
  });

  test('streamProcessLogs replays and follows; abort ends the stream', async () => {
    const proc = await sandbox.startProcess('echo first; sleep 1; echo second; sleep 300');
    const controller = new AbortController();
    const stream = await sandbox.streamProcessLogs(proc.id, { signal: controller.signal });
    let text = '';
    await assert.rejects(async () => {
      for await (const event of parseSSEStream(stream, controller.signal)) {
        if (event.type === 'stdout') text += event.data;
        if (text.includes('second')) controller.abort();
      }
    }, OperationInterruptedError);
    assert.equal(text, 'first\nsecond\n');
    // The process itself keeps running: a log stream is only a view.
    assert.equal(await proc.getStatus(), 'running');
    await proc.kill();
  });

  test('streamProcessLogs with killOnAbort kills the process in the sandbox', async () => {
    const probe = await sandbox.createSession({ id: 'probe' });
    const proc = await sandbox.startProcess('sleep 3103');
    await waitFor('sleep 3103', async () => (await countProcesses(probe, 'sleep 3103')) === 1);
    const controller = new AbortController();
    const stream = await sandbox.streamProcessLogs(proc.id, {
      signal: controller.signal,
      killOnAbort: true,
    });
    controller.abort();
    await stream.cancel().catch(() => {});
    await waitFor(
      'sleep 3103 killed',
      async () => (await countProcesses(probe, 'sleep 3103')) === 0,
    );
    await waitFor('status killed', async () => (await proc.getStatus()) === 'killed');
  });
});

describe('ports', () => {
  /** GET `url` through the server's preview proxy (the URL's host is routed by Host header). */
  function previewGet(url) {
    const target = new URL(url);
    const server = new URL(process.env.SANDPIT_URL ?? '');
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: server.hostname,
          port: target.port || server.port,
          path: target.pathname,
          headers: { host: target.host },
        },
        (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  test('waitForPort, exposePort(port) without hostname, getExposedPorts, unexposePort', async () => {
    await sandbox.writeFile('/workspace/site/index.html', 'hello from the sandbox');
    const server = await sandbox.startProcess('python3 -m http.server 8080', {
      cwd: '/workspace/site',
    });
    await server.waitForPort(8080, { timeout: 60_000 });
    const exposed = await sandbox.exposePort(8080, { name: 'web' });
    assert.equal(exposed.port, 8080);
    assert.equal(exposed.name, 'web');
    assert.match(exposed.url, /^https?:\/\//);
    const page = await previewGet(exposed.url);
    assert.equal(page.status, 200);
    assert.equal(page.body, 'hello from the sandbox');

    const listed = await sandbox.getExposedPorts();
    assert.deepEqual(
      listed.map((p) => [p.port, p.status]),
      [[8080, 'active']],
    );
    assert.equal(await sandbox.isPortExposed(8080), true);
    assert.equal(await sandbox.validatePortToken(8080, exposed.token ?? ''), true);
    assert.equal(await sandbox.validatePortToken(8080, 'wrong'), false);

    await sandbox.unexposePort(8080);
    await sandbox.unexposePort(8080); // idempotent, as in the seed
    assert.equal(await sandbox.isPortExposed(8080), false);
    assert.equal((await previewGet(exposed.url)).status, 404);
    await server.kill();
  });

  test('waitForPort: a process that exits first, and a timeout', async () => {
    const quitter = await sandbox.startProcess('sleep 0.2');
    await assert.rejects(
      quitter.waitForPort(8090, { timeout: 30_000 }),
      ProcessExitedBeforeReadyError,
    );
    const idle = await sandbox.startProcess('sleep 60');
    await assert.rejects(
      idle.waitForPort(8091, { mode: 'tcp', timeout: 800 }),
      ProcessReadyTimeoutError,
    );
    await idle.kill();
  });

  test('exposePort of a reserved port is InvalidPortError', async () => {
    await assert.rejects(
      sandbox.exposePort(80),
      (/** @type {any} */ err) => err.code === 'INVALID_PORT_NUMBER',
    );
  });
});
