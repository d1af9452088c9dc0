// The rest of the seed's §1.3 surface: stdin fed while a command runs (`stdinStream`, over the
// sandbox's WebSocket control transport), the DO setters, and the calls sandpit does not serve
// (typed NotSupportedError).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  NotSupportedError,
  OperationInterruptedError,
  ValidationFailedError,
  parseSSEStream,
  proxyToSandbox,
} from '../dist/index.js';
import { countProcesses, freshSandbox, waitFor } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-stdin');
/** @type {import('../dist/index.js').ExecutionSession} */
let probe;

before(async () => {
  probe = await sandbox.createSession({ id: 'probe' });
});
after(() => sandbox.destroy());

/** A stdin source the test feeds by hand: `push(chunk)`, `end()`. */
function feeder() {
  /** @type {(string | Uint8Array | null)[]} */
  const queue = [];
  /** @type {((value?: unknown) => void) | undefined} */
  let wake;
  return {
    push(chunk) {
      queue.push(chunk);
      wake?.();
    },
    end() {
      queue.push(null);
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length === 0) await new Promise((r) => (wake = r));
        const chunk = queue.shift();
        if (chunk === null) return;
        yield chunk;
      }
    },
  };
}

describe('stdinStream', () => {
  test('each line is answered before the next one is sent (input while it runs)', async () => {
    const input = feeder();
    const stream = await sandbox.execStream(
      'while read -r line; do echo "got $line"; done; echo bye',
      { stdinStream: input },
    );
    const events = parseSSEStream(stream)[Symbol.asyncIterator]();
    let stdout = '';
    /** Reads events until stdout contains `text`. */
    async function until(text) {
      while (!stdout.includes(text)) {
        const { value, done } = await events.next();
        assert.ok(!done, `stream ended before ${JSON.stringify(text)}; stdout ${stdout}`);
        if (value.type === 'stdout') stdout += value.data;
      }
    }
    input.push('one\n');
    await until('got one\n');
    // The second line is sent only now: the command answered the first one live.
    input.push('two\n');
    await until('got two\n');
    input.end();
    await until('bye\n');
    let complete;
    for (;;) {
      const { value, done } = await events.next();
      if (done) break;
      if (value.type === 'complete') complete = value;
    }
    assert.equal(complete?.exitCode, 0);
  });

  test('bytes arrive exactly (binary chunks, text chunks, a ReadableStream)', async () => {
    const bytes = new Uint8Array(300_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) % 256;
    const source = new ReadableStream({
      start(controller) {
        controller.enqueue(bytes.subarray(0, 100_000));
        controller.enqueue('é\n');
        controller.enqueue(bytes.subarray(100_000));
        controller.close();
      },
    });
    const result = await sandbox.exec('sha256sum | cut -d" " -f1', { stdinStream: source });
    const expected = createHash('sha256')
      .update(bytes.subarray(0, 100_000))
      .update('é\n')
      .update(bytes.subarray(100_000))
      .digest('hex');
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout.trim(), expected);
  });

  test('exec folds the events into an ExecResult; sessions and env apply', async () => {
    const session = await sandbox.createSession({ id: 'stdin-session', cwd: '/tmp' });
    const result = await session.exec('cat; echo " $(pwd) $X"', {
      stdinStream: ['a', 'b'],
      env: { X: 'x' },
    });
    assert.equal(result.stdout, 'ab /tmp x\n');
    assert.equal(result.exitCode, 0);
  });

  test('stdin and stdinStream together are refused', async () => {
    await assert.rejects(
      sandbox.exec('cat', { stdin: 'x', stdinStream: ['y'] }),
      ValidationFailedError,
    );
  });

  test('aborting stops the remote command', async () => {
    const controller = new AbortController();
    const input = feeder();
    const args = 'sleep 3011';
    const pending = sandbox.exec(`cat >/dev/null & ${args}`, {
      stdinStream: input,
      signal: controller.signal,
    });
    pending.catch(() => {});
    await waitFor(`${args} to run`, async () => (await countProcesses(probe, args)) === 1);
    input.push('some input\n');
    controller.abort(new Error('user gave up'));
    await assert.rejects(pending, (err) => {
      assert.ok(err instanceof OperationInterruptedError, String(err));
      assert.equal(err.reason, 'cancelled');
      return true;
    });
    await waitFor(`${args} to be killed`, async () => (await countProcesses(probe, args)) === 0);
  });
});

describe('calls sandpit does not serve', () => {
  /** @type {[string, () => Promise<unknown>][]} */
  const unserved = [
    ['mountBucket', () => sandbox.mountBucket('b', '/mnt/b', { localBucket: true })],
    ['tunnels.get', () => sandbox.tunnels.get(8080)],
    ['tunnels.list', () => sandbox.tunnels.list()],
    ['tunnels.destroy', () => sandbox.tunnels.destroy(8080)],
    ['wsConnect', () => sandbox.wsConnect(new Request('http://x/'), 8080)],
  ];
  for (const [method, call] of unserved) {
    test(`${method} rejects with NotSupportedError`, async () => {
      await assert.rejects(call(), (err) => {
        assert.ok(err instanceof NotSupportedError, String(err));
        assert.equal(err.code, 'NOT_SUPPORTED');
        assert.equal(err.httpStatus, 0);
        assert.equal(err.context.method, method);
        assert.match(err.message, new RegExp(`^${method.replace('.', '\\.')} is not supported`));
        return true;
      });
    });
  }

  test('an R2-binding mount (no endpoint) is refused before any request, on sessions too', async () => {
    const session = await sandbox.getSession('probe');
    await assert.rejects(session.mountBucket('b', '/mnt/b', {}), NotSupportedError);
  });

  test('proxyToSandbox leaves every request to the caller; no placement id', async () => {
    assert.equal(await proxyToSandbox(new Request('http://8080-x-tok.example.com/'), {}), null);
    assert.equal(await sandbox.getContainerPlacementId(), null);
  });
});

describe("the seed's setters and stubs", () => {
  test('setKeepAlive and setSleepAfter change the sandbox', async () => {
    await sandbox.setSleepAfter('2m');
    await sandbox.setKeepAlive(true);
    const info = await sandbox.info();
    assert.equal(info.sleepAfterSecs, 120);
    assert.equal(info.keepAlive, true);
    await sandbox.setKeepAlive(false);
    assert.equal((await sandbox.info()).keepAlive, false);
  });

  test('cleanupCompletedProcesses removes nothing (ended processes keep their logs)', async () => {
    const process = await sandbox.startProcess('echo kept');
    assert.equal((await process.waitForExit(60_000)).exitCode, 0);
    assert.equal(await sandbox.cleanupCompletedProcesses(), 0);
    assert.equal((await sandbox.getProcessLogs(process.id)).stdout, 'kept\n');
  });
});
