// terminal(): a WebSocket PTY — keystrokes in, terminal bytes out, resize, exit code.

import assert from 'node:assert/strict';
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
