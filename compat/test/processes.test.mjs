// The published client's ProcessClient and PortClient against a sandpit sandbox: background
// processes (start, list, get, logs, log streams, kill, kill-all) and port readiness.
// Needs SANDPIT_URL and SANDPIT_KEY, like sandbox-client.test.mjs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { parseSSEStream } from '@cloudflare/sandbox';

import { destroySandbox, requireServer, sandboxClient, sandboxId } from '../lib/sandpit.mjs';

const SANDBOX_ID = sandboxId('compat-proc');
const SESSION = 'compat-processes';
const PORT = 8000 + Math.floor(Math.random() * 1000);

let client;

before(() => {
  requireServer();
  client = sandboxClient(SANDBOX_ID);
});

after(() => destroySandbox(SANDBOX_ID));

async function drain(stream) {
  const events = [];
  for await (const event of parseSSEStream(stream)) events.push(event);
  return events;
}

async function waitFinished(id, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const { process } = await client.processes.getProcess(id);
    if (process.status !== 'running') return process;
    assert.ok(Date.now() < deadline, `${id} still running`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('ProcessClient and PortClient against sandpit', { concurrency: false }, () => {
  test('startProcess, getProcess, listProcesses and getProcessLogs', async () => {
    await client.utils.createSession({ id: SESSION, env: { GREETING: 'hello' }, cwd: '/tmp' });
    const started = await client.processes.startProcess(
      'echo "$GREETING from $(pwd)"; echo oops >&2; exit 2',
      SESSION,
      { processId: 'compat-fast' },
    );
    assert.equal(started.success, true);
    assert.equal(started.processId, 'compat-fast');
    assert.ok(started.pid > 0);
    const done = await waitFinished('compat-fast');
    assert.equal(done.status, 'failed');
    assert.equal(done.exitCode, 2);
    const logs = await client.processes.getProcessLogs('compat-fast');
    assert.equal(logs.stdout, 'hello from /tmp\n');
    assert.equal(logs.stderr, 'oops\n');
    const list = await client.processes.listProcesses();
    assert.ok(list.processes.some((p) => p.id === 'compat-fast' && p.status === 'failed'));
    await assert.rejects(client.processes.getProcess('nope'), (err) => {
      assert.equal(err.code, 'PROCESS_NOT_FOUND');
      assert.equal(err.httpStatus, 404);
      return true;
    });
  });

  test('streamProcessLogs replays, follows and ends with exit', async () => {
    const { processId } = await client.processes.startProcess(
      'echo one; sleep 1; echo two',
      SESSION,
    );
    assert.match(processId, /^proc_\d+_[a-z0-9]{6}$/);
    const events = await drain(await client.processes.streamProcessLogs(processId));
    assert.equal(events[0].type, 'process_info');
    const out = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    assert.equal(out, 'one\ntwo\n');
    const last = events.at(-1);
    assert.equal(last.type, 'exit');
    assert.equal(last.exitCode, 0);
  });

  test('killProcess and killAllProcesses end running processes', async () => {
    const { processId } = await client.processes.startProcess('sleep 100 & sleep 100 & wait', SESSION);
    const killed = await client.processes.killProcess(processId);
    assert.equal(killed.success, true);
    const record = await waitFinished(processId);
    assert.equal(record.status, 'killed');
    for (let i = 0; i < 2; i++) await client.processes.startProcess('sleep 100', SESSION);
    const all = await client.processes.killAllProcesses();
    assert.equal(all.cleanedCount, 2);
    const running = (await client.processes.listProcesses()).processes.filter(
      (p) => p.status === 'running',
    );
    assert.deepEqual(running, []);
  });

  test('watchPort reports ready for a server started as a process', async () => {
    const { processId } = await client.processes.startProcess(
      `exec python3 -m http.server ${PORT} --bind 127.0.0.1`,
      SESSION,
    );
    const events = await drain(
      await client.ports.watchPort({ port: PORT, mode: 'http', path: '/', processId, interval: 100 }),
    );
    assert.deepEqual(
      events.map((e) => e.type),
      ['watching', 'ready'],
    );
    assert.equal(events[1].statusCode, 200);
    await client.processes.killProcess(processId);
  });

  test('watchPort reports a process that exits before the port is ready', async () => {
    const { processId } = await client.processes.startProcess('sleep 0.3; exit 5', SESSION);
    const events = await drain(
      await client.ports.watchPort({ port: PORT + 1, mode: 'tcp', processId, interval: 100 }),
    );
    assert.deepEqual(
      events.map((e) => e.type),
      ['watching', 'process_exited'],
    );
    assert.equal(events[1].exitCode, 5);
  });

  test('deleteSession kills the processes started from it', async () => {
    const { processId } = await client.processes.startProcess('sleep 100', SESSION);
    await client.utils.deleteSession(SESSION);
    const { process } = await client.processes.getProcess(processId);
    assert.equal(process.status, 'killed');
  });
});
