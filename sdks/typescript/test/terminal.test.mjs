// terminal(): a WebSocket PTY — keystrokes in, terminal bytes out, resize, exit code.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, test } from 'node:test';

import { freshSandbox, waitFor } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-pty');
after(() => sandbox.destroy());

test('a PTY: a real tty, resize, output, and the exit code', async () => {
  const session = await sandbox.createSession({ id: 'term', cwd: '/tmp', env: { IN_PTY: 'yes' } });
  const terminal = await session.terminal({ cols: 100, rows: 30 });
  let output = '';
  const decoder = new TextDecoder();
  terminal.onData((bytes) => (output += decoder.decode(bytes, { stream: true })));
  await terminal.ready;

  terminal.write('tty; stty size; echo "env=$IN_PTY cwd=$(pwd)"\r');
  await waitFor('the first answers', async () => /env=yes cwd=\/tmp/.test(output));
  assert.match(output, /\/dev\/pts\/\d+/);
  assert.match(output, /30 100/);

  terminal.resize(120, 40);
  terminal.write('stty size\r');
  await waitFor('the new size', async () => /40 120/.test(output));

  terminal.write('exit 3\r');
  assert.equal(await terminal.exited, 3);
});

test('terminalUrl gives a browser a single-use ticket URL', async () => {
  const url = await sandbox.terminalUrl();
  assert.match(url, /^wss?:\/\/.*\/ws\/pty\?.*ticket=/);
  assert.doesNotMatch(url, /access_token|sp_/);
});

test('without a global WebSocket (Node 20, no flag) terminal() falls back to the `ws` package', async (t) => {
  const script = `
    if (typeof WebSocket !== 'undefined') { console.log('HAS-GLOBAL'); process.exit(0); }
    const { connect, getSandbox } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)});
    const sandbox = getSandbox(connect(), ${JSON.stringify(sandbox.id)});
    const term = await sandbox.terminal();
    let out = '';
    term.onData((b) => (out += Buffer.from(b).toString()));
    await term.ready;
    term.write('echo via-ws-$((6*7))\\r');
    const deadline = Date.now() + 30000;
    while (!out.includes('via-ws-42') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    term.close();
    console.log(out.includes('via-ws-42') ? 'FALLBACK-OK' : 'NO-OUTPUT ' + JSON.stringify(out));
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--input-type=module', '-e', script],
    {
      env: process.env,
      timeout: 60_000,
    },
  );
  if (stdout.includes('HAS-GLOBAL')) return t.skip('this Node has a global WebSocket');
  assert.match(stdout, /FALLBACK-OK/);
});
