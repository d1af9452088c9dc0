// The code interpreter: contexts, runCode and its callbacks, rich results, runCodeStream, and
// cancellation that interrupts the run in the sandbox.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { ContextNotFoundError, OperationInterruptedError, parseSSEStream } from '../dist/index.js';
import { freshSandbox } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-code');
after(() => sandbox.destroy());

describe('code interpreter', () => {
  test('createCodeContext + runCode keep state; last expression is a result', async () => {
    const ctx = await sandbox.createCodeContext({ language: 'python' });
    assert.equal(ctx.language, 'python');
    assert.ok(ctx.id);
    await sandbox.runCode('import math; radius = 5', { context: ctx });
    const area = await sandbox.runCode('math.pi * radius ** 2', { context: ctx });
    assert.equal(area.results[0]?.text, '78.53981633974483');
    assert.equal(area.error, undefined);
    assert.equal(area.code, 'math.pi * radius ** 2');
    const listed = await sandbox.listCodeContexts();
    assert.ok(listed.some((c) => c.id === ctx.id));
    await sandbox.deleteCodeContext(ctx.id);
    await assert.rejects(sandbox.runCode('1', { context: ctx }), (err) => {
      assert.ok(err instanceof ContextNotFoundError);
      assert.equal(err.httpStatus, 404);
      return true;
    });
  });

  test('runCode without a context uses a default one per language', async () => {
    await sandbox.runCode('counter = 41');
    const result = await sandbox.runCode('counter + 1');
    assert.equal(result.results[0]?.text, '42');
  });

  test('callbacks: onStdout, onStderr, onResult (with formats()), onError', async () => {
    const out = [];
    const err = [];
    const results = [];
    const errors = [];
    const options = {
      onStdout: (/** @type {any} */ o) => out.push(o.text),
      onStderr: (/** @type {any} */ o) => err.push(o.text),
      onResult: (/** @type {any} */ r) => void results.push(r),
      onError: (/** @type {any} */ e) => errors.push(e),
    };
    const run = await sandbox.runCode(
      'import sys\nprint("to out")\nprint("to err", file=sys.stderr)\n{"a": 1}',
      options,
    );
    assert.equal(out.join(''), 'to out\n');
    assert.equal(err.join(''), 'to err\n');
    assert.deepEqual(run.logs.stdout.join(''), 'to out\n');
    assert.deepEqual(results[0].json, { a: 1 });
    assert.ok(results[0].formats().includes('json'));
    const failed = await sandbox.runCode('1/0', options);
    assert.equal(failed.error?.name, 'ZeroDivisionError');
    assert.ok(failed.error?.traceback.length);
    assert.equal(errors[0].name, 'ZeroDivisionError');
  });

  test('a matplotlib chart comes back as a PNG', async () => {
    const run = await sandbox.runCode(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()',
    );
    const png = run.results.find((r) => r.png)?.png;
    assert.ok(png, JSON.stringify(run).slice(0, 500));
    assert.deepEqual([...Buffer.from(png, 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  });

  test('JavaScript and TypeScript contexts', async () => {
    const js = await sandbox.createCodeContext({ language: 'javascript' });
    await sandbox.runCode('const base = 40', { context: js });
    assert.equal((await sandbox.runCode('base + 2', { context: js })).results[0]?.text, '42');
    const ts = await sandbox.runCode('const n: number = 7; n * 6', { language: 'typescript' });
    assert.equal(ts.results[0]?.text, '42');
  });

  test('runCodeStream + parseSSEStream is live', async () => {
    const stream = await sandbox.runCodeStream(
      'import time\nprint("first", flush=True)\ntime.sleep(3)\nprint("second")',
    );
    const started = Date.now();
    const arrivals = [];
    for await (const event of parseSSEStream(stream)) {
      if (event.type === 'stdout') arrivals.push([event.text, Date.now() - started]);
    }
    assert.equal(arrivals[0][0], 'first\n');
    const last = arrivals.at(-1);
    assert.ok(last[1] - arrivals[0][1] >= 1000, JSON.stringify(arrivals));
  });

  test('an AbortSignal interrupts the run in the sandbox, and the context lives on', async () => {
    const ctx = await sandbox.createCodeContext();
    await sandbox.runCode('state = "kept"', { context: ctx });
    const controller = new AbortController();
    let printed;
    const printedOnce = new Promise((resolve) => (printed = resolve));
    const run = sandbox.runCode(
      'import time\nprint("running", flush=True)\ntime.sleep(300)\nstate = "finished"',
      { context: ctx, signal: controller.signal, onStdout: () => printed() },
    );
    run.catch(() => {});
    await printedOnce;
    controller.abort();
    await assert.rejects(run, (err) => {
      assert.ok(err instanceof OperationInterruptedError);
      assert.equal(err.context.remoteStopped, true);
      return true;
    });
    // Runs in one context are serialised: this one answers only because the sleep was
    // interrupted; `state` shows the cancelled run stopped before its last line.
    const started = Date.now();
    const next = await sandbox.runCode('state', { context: ctx });
    assert.ok(Date.now() - started < 60_000);
    assert.equal(next.results[0]?.text, "'kept'");
  });
});
