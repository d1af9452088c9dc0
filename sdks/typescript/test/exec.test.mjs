// exec, execStream, sessions, environment, and cancellation that stops the remote command.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  OperationInterruptedError,
  SessionAlreadyExistsError,
  SessionTerminatedError,
  getSandbox,
  isExecResult,
  parseSSEStream,
} from '../dist/index.js';
import { countProcesses, freshSandbox, ns, sandboxId, waitFor } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-exec');
/** @type {import('../dist/index.js').ExecutionSession} */
let probe;

before(async () => {
  probe = await sandbox.createSession({ id: 'probe' });
});
after(() => sandbox.destroy());

describe('exec', () => {
  test('returns the seed result shape', async () => {
    const result = await sandbox.exec('echo hello; echo oops >&2; (exit 3)');
    assert.ok(isExecResult(result));
    assert.equal(result.stdout, 'hello\n');
    assert.equal(result.stderr, 'oops\n');
    assert.equal(result.exitCode, 3);
    assert.equal(result.success, false);
    assert.equal(typeof result.timestamp, 'string');
    assert.equal((await sandbox.exec('true')).success, true);
  });

  test('per-command env and cwd do not leak into the session', async () => {
    const result = await sandbox.exec('echo "$GREETING $(pwd)"', {
      env: { GREETING: 'hi' },
      cwd: '/tmp',
    });
    assert.equal(result.stdout, 'hi /tmp\n');
    const later = await sandbox.exec('echo "[$GREETING] $(pwd)"');
    assert.equal(later.stdout, '[] /workspace\n');
  });

  test('the default session keeps state between calls', async () => {
    await sandbox.exec('cd /tmp && export KEPT=yes');
    assert.equal((await sandbox.exec('echo "$KEPT $(pwd)"')).stdout, 'yes /tmp\n');
    await sandbox.exec('cd /workspace');
  });

  test("encoding: 'base64' gives byte-exact output (sandpit extension)", async () => {
    const result = await sandbox.exec("printf '\\377\\000A'", { encoding: 'base64' });
    assert.deepEqual([...Buffer.from(result.stdout, 'base64')], [0xff, 0x00, 0x41]);
  });

  test('stdin (sandpit extension)', async () => {
    const result = await sandbox.exec('tr a-z A-Z', { stdin: 'shout\n' });
    assert.equal(result.stdout, 'SHOUT\n');
  });

  test('stream: onOutput, onStdout/onStderr and onComplete see the output live', async () => {
    /** @type {Array<[string, string]>} */
    const seen = [];
    const stdout = [];
    const stderr = [];
    let completed;
    const result = await sandbox.exec('echo one; echo two >&2; echo three', {
      stream: true,
      onOutput: (stream, data) => seen.push([stream, data]),
      onStdout: (data) => stdout.push(data),
      onStderr: (data) => stderr.push(data),
      onComplete: (r) => (completed = r),
    });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, 'one\nthree\n');
    assert.equal(result.stderr, 'two\n');
    assert.deepEqual(stdout.join(''), 'one\nthree\n');
    assert.deepEqual(stderr.join(''), 'two\n');
    assert.ok(seen.some(([s]) => s === 'stderr'));
    assert.equal(completed, result);
  });

  test('onStdout alone streams: the first line arrives before the command ends', async () => {
    const started = Date.now();
    let firstAt = 0;
    await sandbox.exec('echo early; sleep 3; echo late', {
      onStdout: () => (firstAt ||= Date.now()),
    });
    const total = Date.now() - started;
    assert.ok(
      firstAt > 0 && total - (firstAt - started) >= 1000,
      `first ${firstAt - started} of ${total} ms`,
    );
  });

  test('timeout kills the command: exit 124 and timedOut', async () => {
    const result = await sandbox.exec('sleep 30', { timeout: 500 });
    assert.equal(result.exitCode, 124);
    assert.equal(result.timedOut, true);
    assert.match(result.stderr, /timed out/);
    // The session survives and answers at once.
    assert.equal((await sandbox.exec('echo alive')).stdout, 'alive\n');
  });

  test('execStream + parseSSEStream: start, output, complete', async () => {
    const stream = await sandbox.execStream('echo a; echo b >&2; (exit 2)');
    const types = [];
    let exitCode;
    for await (const event of parseSSEStream(stream)) {
      types.push(event.type);
      if (event.type === 'complete') exitCode = event.exitCode;
    }
    assert.equal(types[0], 'start');
    assert.equal(types.at(-1), 'complete');
    assert.ok(types.includes('stdout') && types.includes('stderr'));
    assert.equal(exitCode, 2);
  });

  test('exit in a session is SessionTerminatedError, and the next call gets a new shell', async () => {
    const session = await sandbox.createSession({ id: 'dies' });
    await assert.rejects(session.exec('exit 7'), (err) => {
      assert.ok(err instanceof SessionTerminatedError);
      assert.equal(err.code, 'SESSION_TERMINATED');
      assert.equal(err.httpStatus, 410);
      return true;
    });
    assert.equal((await session.exec('echo again')).stdout, 'again\n');
  });
});

describe('cancellation stops the remote command', () => {
  // Each test runs a uniquely named sleep, aborts, and checks with `ps` (from another session)
  // that the process is gone in the sandbox, not merely that the local wait ended.
  /**
   * @param {string} args the sleep's command line
   * @param {(signal: AbortSignal) => Promise<unknown>} run
   */
  async function abortAndCheck(args, run) {
    const controller = new AbortController();
    const pending = run(controller.signal);
    pending.catch(() => {});
    await waitFor(`${args} to run`, async () => (await countProcesses(probe, args)) === 1);
    controller.abort(new Error('user gave up'));
    await assert.rejects(pending, (err) => {
      assert.ok(err instanceof OperationInterruptedError, String(err));
      assert.equal(err.code, 'OPERATION_INTERRUPTED');
      assert.equal(err.context.cancelled, true);
      assert.equal(err.context.remoteStopped, true);
      assert.equal(err.reason, 'cancelled');
      return true;
    });
    await waitFor(`${args} to be killed`, async () => (await countProcesses(probe, args)) === 0);
  }

  test('exec', () =>
    abortAndCheck('sleep 3001', (signal) => sandbox.exec('sleep 3001', { signal })));

  test('exec with streaming', () =>
    abortAndCheck('sleep 3002', (signal) =>
      sandbox.exec('echo started; sleep 3002', { signal, onStdout: () => {} }),
    ));

  test('execStream', () =>
    abortAndCheck('sleep 3003', async (signal) => {
      const stream = await sandbox.execStream('sleep 3003', { signal });
      // parseSSEStream rejects with OperationInterruptedError once the signal aborts.
      for await (const _ of parseSSEStream(stream, signal)) {
        // drain
      }
    }));

  test('the session answers right after a cancelled command', async () => {
    assert.equal((await sandbox.exec('echo ok')).stdout, 'ok\n');
  });
});

describe('sessions', () => {
  test('createSession with env and cwd; sessions are isolated', async () => {
    const a = await sandbox.createSession({ id: 'a', env: { WHO: 'a' }, cwd: '/tmp' });
    const b = await sandbox.createSession({ env: { WHO: 'b' } });
    assert.equal((await a.exec('echo "$WHO $(pwd)"')).stdout, 'a /tmp\n');
    assert.equal((await b.exec('echo "$WHO"')).stdout, 'b\n');
    await a.exec('export ONLY_A=1');
    assert.equal((await b.exec('echo "[$ONLY_A]"')).stdout, '[]\n');
    const again = await sandbox.getSession('a');
    assert.equal(again.id, 'a');
    assert.equal((await again.exec('echo "$ONLY_A"')).stdout, '1\n');
    const deleted = await sandbox.deleteSession('a');
    assert.equal(deleted.sessionId, 'a');
    assert.equal(deleted.success, true);
  });

  test('exec({ session }) and exec({ sessionId }) pick a session', async () => {
    await sandbox.createSession({ id: 'picked', env: { P: 'picked' } });
    assert.equal((await sandbox.exec('echo $P', { session: 'picked' })).stdout, 'picked\n');
    assert.equal((await sandbox.exec('echo $P', { sessionId: 'picked' })).stdout, 'picked\n');
  });

  test('setEnvVars sets and unsets for the default session and later sessions', async () => {
    await sandbox.setEnvVars({ SDK_VAR: 'v1' });
    assert.equal((await sandbox.exec('echo $SDK_VAR')).stdout, 'v1\n');
    const later = await sandbox.createSession();
    assert.equal((await later.exec('echo $SDK_VAR')).stdout, 'v1\n');
    await sandbox.setEnvVars({ SDK_VAR: undefined });
    assert.equal((await sandbox.exec('echo "[$SDK_VAR]"')).stdout, '[]\n');
  });

  test('enableDefaultSession: false runs each command sessionless', async () => {
    const id = sandboxId('ts-nosession');
    const sessionless = getSandbox(ns, id, { enableDefaultSession: false });
    try {
      await sessionless.exec('cd /tmp');
      assert.equal((await sessionless.exec('pwd')).stdout, '/workspace\n');
    } finally {
      await sessionless.destroy();
    }
  });

  test('creating a session twice is SessionAlreadyExistsError', async () => {
    await assert.rejects(sandbox.createSession({ id: 'probe' }), (err) => {
      assert.ok(err instanceof SessionAlreadyExistsError);
      assert.equal(err.code, 'SESSION_ALREADY_EXISTS');
      assert.equal(err.httpStatus, 409);
      return true;
    });
  });
});
