// sandpit's lifecycle extensions through the SDK: labels and the label-filtered list, ttl,
// keepAliveWhileBusy, usage(), stale preview ports, pendingRestart, the OOM `reason` of commands
// and processes, and streams a stop or destroy cuts short (typed OperationInterruptedError with
// its reason).

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import {
  OperationInterruptedError,
  SandboxNotFoundError,
  getSandbox,
  listSandboxes,
  parseSSEStream,
} from '../dist/index.js';
import { freshSandbox, ns, sandboxId, waitFor } from '../testlib/env.mjs';

const team = sandboxId('team');
const labelled = freshSandbox('ts-lab', { labels: { team, tier: 'gold' }, ttl: '1h' });
const other = freshSandbox('ts-lab2', { labels: { team, tier: 'silver' } });
const oomBox = freshSandbox('ts-oom', { limits: { memoryMb: 128 } });
after(() => Promise.all([labelled.destroy(), other.destroy(), oomBox.destroy()]));

/** Whether `err` is the typed interruption a stop/destroy of the sandbox gives. */
function interruptedBy(reason) {
  return (/** @type {any} */ err) => {
    assert.ok(err instanceof OperationInterruptedError, `${err?.name}: ${err?.message}`);
    assert.equal(err.code, 'OPERATION_INTERRUPTED');
    assert.equal(err.reason, reason);
    assert.equal(err.context.reason, reason);
    return true;
  };
}

/** A one-shot signal: `fire()` resolves `fired`. */
function signal() {
  /** @type {() => void} */
  let fire = () => {};
  const fired = new Promise((resolve) => (fire = () => resolve(undefined)));
  return { fire, fired };
}

/** Reads `events` to the end. */
async function drain(/** @type {AsyncGenerator<any>} */ events) {
  for await (const _ of events);
}

describe('labels, ttl, keepAliveWhileBusy', () => {
  test('labels and ttl from the options; listSandboxes filters by labels', async () => {
    await Promise.all([labelled.exec('true'), other.exec('true')]);
    const info = await labelled.info();
    assert.deepEqual(info.labels, { team, tier: 'gold' });
    const expires = Date.parse(info.expiresAt ?? '');
    assert.ok(
      expires > Date.now() + 50 * 60_000 && expires < Date.now() + 70 * 60_000,
      info.expiresAt,
    );
    const both = await listSandboxes(ns, { labels: { team } });
    assert.deepEqual(both.sandboxes.map((s) => s.id).sort(), [labelled.id, other.id].sort());
    const gold = await listSandboxes(ns, { labels: { team, tier: 'gold' } });
    assert.deepEqual(
      gold.sandboxes.map((s) => s.id),
      [labelled.id],
    );
  });

  test('setLabels merges (null removes); setTtl(0) removes the expiry', async () => {
    const merged = await labelled.setLabels({ tier: null, owner: 'ana' });
    assert.deepEqual(merged.labels, { team, owner: 'ana' });
    const gold = await listSandboxes(ns, { labels: { team, tier: 'gold' } });
    assert.deepEqual(gold.sandboxes, []);
    const noTtl = await labelled.setTtl(0);
    assert.equal(noTtl.expiresAt ?? null, null);
  });

  test('a ttl that passes destroys the sandbox', async () => {
    const shortLived = freshSandbox('ts-ttl', { ttl: 2 });
    try {
      await shortLived.exec('true');
      await waitFor('the ttl to destroy the sandbox', async () => {
        try {
          await shortLived.info();
          return false;
        } catch (err) {
          if (err instanceof SandboxNotFoundError) return true;
          throw err;
        }
      });
    } finally {
      await shortLived.destroy();
    }
  });

  test('keepAliveWhileBusy: false lets a sandbox with a running process sleep', async () => {
    const idle = freshSandbox('ts-busy', { keepAliveWhileBusy: false, sleepAfter: 2 });
    try {
      await idle.startProcess('sleep 600');
      assert.equal((await idle.info()).keepAliveWhileBusy, false);
      await waitFor(
        'the busy sandbox to sleep',
        async () => (await idle.info()).state === 'sleeping',
      );
    } finally {
      await idle.destroy();
    }
  });
});

describe('usage, ports, pendingRestart', () => {
  test('usage() reports the run; a sleeping sandbox reports zeros; ports turn stale', async () => {
    await labelled.writeFile('/workspace/blob.bin', 'x'.repeat(1 << 20));
    await labelled.exec('for i in $(seq 200000); do :; done');
    const running = await labelled.usage();
    assert.equal(running.state, 'running');
    assert.ok(running.cpuUsec > 0, JSON.stringify(running));
    assert.ok(running.memoryBytes > 0 && running.memoryPeakBytes >= running.memoryBytes);
    assert.ok(running.pids >= 1);
    assert.ok(running.diskBytes >= 1 << 20, JSON.stringify(running));
    assert.equal(typeof running.diskComplete, 'boolean');
    assert.equal(running.networkBytesUp, 0);

    const exposed = await labelled.exposePort(8123, { token: 'live' });
    assert.equal(exposed.stale, false);
    await labelled.stop();
    const asleep = await labelled.usage();
    assert.equal(asleep.state, 'sleeping');
    assert.equal(asleep.cpuUsec, 0);
    assert.equal(asleep.pids, 0);
    assert.ok(asleep.diskBytes >= 1 << 20, 'the writable layer is kept across sleep');
    const ports = await labelled.getExposedPorts();
    assert.deepEqual(
      ports.map((p) => [p.port, p.stale]),
      [[8123, true]],
    );
  });

  test('a PATCH answer lists what waits for the next start in pendingRestart', async () => {
    await other.exec('true');
    const envChange = await other.update({ env: { LATER: '1' } });
    assert.deepEqual(envChange.pendingRestart, ['env']);
    const live = await other.setLimits({ pids: 300 });
    assert.equal(live.pendingRestart, undefined);
    assert.equal(live.limits.pids, 300);
  });
});

describe('OOM reason', () => {
  // 512 MiB of touched memory passes the 128 MiB limit.
  const hog = 'python3 -c "b = b\'x\' * (512 << 20)"';

  test('exec (buffered and streamed) reports reason "oom"', async () => {
    const buffered = await oomBox.exec(hog);
    assert.equal(buffered.exitCode, 137);
    assert.equal(buffered.reason, 'oom');
    assert.match(buffered.stderr, /out of memory/);
    const streamed = await oomBox.exec(hog, { stream: true, onOutput: () => {} });
    assert.equal(streamed.exitCode, 137);
    assert.equal(streamed.reason, 'oom');
    const fine = await oomBox.exec('true');
    assert.equal(fine.reason, undefined);
  });

  test('a process killed by the OOM killer: exit event and process info carry reason', async () => {
    const proc = await oomBox.startProcess(hog);
    const stream = await oomBox.streamProcessLogs(proc.id);
    let exit;
    for await (const event of parseSSEStream(stream)) {
      if (event.type === 'exit') {
        exit = event;
        break;
      }
    }
    assert.equal(exit?.reason, 'oom');
    assert.equal(exit?.exitCode, 137);
    const info = await oomBox.getProcess(proc.id);
    assert.equal(info?.status, 'killed');
    assert.equal(info?.reason, 'oom');
    assert.deepEqual(await proc.waitForExit(30_000), { exitCode: 137, reason: 'oom' });
  });
});

describe('streams cut by stop or destroy', () => {
  test('stop: exec stream, process log stream, runCode and watch reject with reason "stopped"', async () => {
    const box = freshSandbox('ts-cut');
    try {
      await box.mkdir('/workspace/w', { recursive: true });
      const execLive = signal();
      const runLive = signal();
      const execDone = box.exec('echo up; sleep 120', { stream: true, onStdout: execLive.fire });
      const runDone = box.runCode('import time\nprint("up", flush=True)\ntime.sleep(120)', {
        onStdout: runLive.fire,
      });
      const proc = await box.startProcess('echo up; sleep 120');
      const logs = parseSSEStream(await box.streamProcessLogs(proc.id));
      for (let next = await logs.next(); next.value?.type !== 'stdout'; next = await logs.next()) {
        assert.ok(!next.done, 'the log stream ended before the output');
      }
      const watched = parseSSEStream(await box.watch('/workspace/w'));
      await Promise.all([execLive.fired, runLive.fired]);

      // Handlers attached before the stop, so no rejection goes unhandled meanwhile.
      const checks = Promise.all([
        assert.rejects(execDone, interruptedBy('stopped')),
        assert.rejects(runDone, interruptedBy('stopped')),
        assert.rejects(drain(logs), interruptedBy('stopped')),
        assert.rejects(drain(watched), interruptedBy('stopped')),
      ]);
      await box.stop();
      await checks;
    } finally {
      await box.destroy();
    }
  });

  test('destroy: a streamed exec rejects with reason "destroyed"', async () => {
    const box = getSandbox(ns, sandboxId('ts-cut2'));
    const live = signal();
    const done = box.exec('echo up; sleep 120', { stream: true, onStdout: live.fire });
    await live.fired;
    const check = assert.rejects(done, interruptedBy('destroyed'));
    await box.destroy();
    await check;
  });
});
