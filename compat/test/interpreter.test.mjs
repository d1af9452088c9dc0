// The published client's CodeInterpreter (over its InterpreterClient) against a sandpit sandbox:
// createCodeContext, runCode, runCodeStream, listCodeContexts, deleteCodeContext; rich results
// (a matplotlib PNG, a pandas table as HTML), errors, live streaming, JavaScript and TypeScript.
// Needs SANDPIT_URL and SANDPIT_KEY, like sandbox-client.test.mjs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { CodeInterpreter, parseSSEStream } from '@cloudflare/sandbox';

import { destroySandbox, requireServer, sandboxClient, sandboxId } from '../lib/sandpit.mjs';

const SANDBOX_ID = sandboxId('compat-interp');
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let client;
let interpreter;
let python;

before(async () => {
  requireServer();
  client = sandboxClient(SANDBOX_ID);
  interpreter = new CodeInterpreter(client.interpreter);
  python = await interpreter.createCodeContext({
    language: 'python',
    cwd: '/tmp',
    envVars: { COMPAT_GREETING: 'hello' },
  });
});

after(() => destroySandbox(SANDBOX_ID));

/** runCode as plain JSON (what the seed's Sandbox.runCode returns). */
async function run(code, context = python, options = {}) {
  return (await interpreter.runCode(code, { context, ...options })).toJSON();
}

describe('CodeInterpreter against sandpit', { concurrency: false }, () => {
  test('createCodeContext and listCodeContexts', async () => {
    assert.match(python.id, /\S/);
    assert.equal(python.language, 'python');
    assert.equal(python.cwd, '/tmp');
    assert.ok(python.createdAt instanceof Date && !Number.isNaN(python.createdAt.getTime()));
    const listed = await interpreter.listCodeContexts();
    const mine = listed.find((c) => c.id === python.id);
    assert.ok(mine, JSON.stringify(listed));
    assert.equal(mine.language, 'python');
    assert.equal(mine.cwd, '/tmp');
  });

  test('runCode: the last expression, state across runs, cwd and env', async () => {
    const two = await run('1+1');
    assert.equal(two.error, undefined);
    assert.deepEqual(two.results.map((r) => r.text), ['2']);
    await run('x = 40');
    assert.equal((await run('x + 2')).results[0].text, '42');
    const where = await run('import os\n(os.getcwd(), os.environ["COMPAT_GREETING"])');
    assert.equal(where.results[0].text, "('/tmp', 'hello')");
  });

  test('runCode: stdout and stderr reach the callbacks and the logs', async () => {
    const seen = [];
    const result = await run('import sys\nprint("out")\nprint("err", file=sys.stderr)', python, {
      onStdout: (o) => seen.push(['stdout', o.text]),
      onStderr: (o) => seen.push(['stderr', o.text]),
    });
    assert.equal(result.logs.stdout.join(''), 'out\n');
    assert.equal(result.logs.stderr.join(''), 'err\n');
    assert.deepEqual(
      seen.map(([k, t]) => [k, t]),
      [
        ['stdout', 'out\n'],
        ['stderr', 'err\n'],
      ],
    );
    assert.deepEqual(result.results, []);
  });

  test('a matplotlib figure comes back as a valid PNG', async () => {
    const result = await run(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title("compat")\nplt.show()',
    );
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    const images = result.results.filter((r) => r.png);
    assert.equal(images.length, 1, JSON.stringify(result.results.map((r) => Object.keys(r))));
    const png = Buffer.from(images[0].png, 'base64');
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    // IHDR is the first chunk: width and height as big-endian u32 at bytes 16..24.
    assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
    const width = png.readUInt32BE(16);
    const height = png.readUInt32BE(20);
    assert.ok(width >= 100 && width <= 4000 && height >= 100 && height <= 4000, `${width}x${height}`);
    assert.ok(png.length > 5_000 && png.length < 5_000_000, `${png.length} bytes`);
    assert.equal(png.subarray(-8, -4).toString('latin1'), 'IEND');
  });

  test('a pandas DataFrame comes back as HTML and text', async () => {
    const result = await run('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": ["x", "y"]})');
    assert.equal(result.results.length, 1);
    const [table] = result.results;
    assert.match(table.html, /<table[\s\S]*<th>a<\/th>[\s\S]*<td>x<\/td>/);
    assert.match(table.text, /a\s+b\n0\s+1\s+x\n1\s+2\s+y/);
  });

  test('dicts come back as JSON', async () => {
    const result = await run('{"n": 1, "items": [1, 2]}');
    assert.deepEqual(result.results[0].json, { n: 1, items: [1, 2] });
  });

  test('an exception is an ExecutionError with name, message and traceback', async () => {
    const result = await run('def f():\n    return 1/0\nf()');
    assert.equal(result.error.name, 'ZeroDivisionError');
    assert.match(result.error.message, /division by zero/);
    assert.ok(Array.isArray(result.error.traceback) && result.error.traceback.length > 0);
    assert.match(result.error.traceback.join('\n'), /ZeroDivisionError/);
    // The context survives the error.
    assert.equal((await run('x')).results[0].text, '40');
  });

  test('runCodeStream is live: the first line arrives before the run ends', async () => {
    const started = Date.now();
    const stream = await interpreter.runCodeStream(
      'import time\nprint("first", flush=True)\ntime.sleep(1.5)\nprint("second")\n7',
      { context: python },
    );
    const events = [];
    for await (const event of parseSSEStream(stream)) events.push({ ...event, at: Date.now() });
    const types = events.map((e) => e.type);
    assert.deepEqual(types.filter((t) => t !== 'stdout'), ['result', 'execution_complete']);
    const stdout = events.filter((e) => e.type === 'stdout');
    assert.equal(stdout.map((e) => e.text).join(''), 'first\nsecond\n');
    const first = stdout.find((e) => e.text.includes('first'));
    const end = events.at(-1);
    assert.ok(end.at - first.at >= 1000, `first line ${first.at - started} ms, end ${end.at - started} ms`);
    assert.equal(events.find((e) => e.type === 'result').text, '7');
  });

  test('JavaScript: state, top-level await and errors', async () => {
    const js = await interpreter.createCodeContext({ language: 'javascript' });
    assert.equal(js.language, 'javascript');
    await run('const base = 40;', js);
    const awaited = await run(
      'const v = await new Promise((r) => setTimeout(() => r(base + 2), 10));\nconsole.log("v is", v);\nv',
      js,
    );
    assert.equal(awaited.error, undefined, JSON.stringify(awaited.error));
    assert.equal(awaited.logs.stdout.join(''), 'v is 42\n');
    assert.equal(awaited.results[0].text, '42');
    const failed = await run('null.x', js);
    assert.equal(failed.error.name, 'TypeError');
    await interpreter.deleteCodeContext(js.id);
  });

  test('TypeScript: interfaces, generics and enums', async () => {
    const ts = await interpreter.createCodeContext({ language: 'typescript' });
    const result = await run(
      'interface P { name: string }\nenum Color { Red = 1, Green }\n' +
        'function first<T>(xs: T[]): T { return xs[0]; }\n' +
        'const p: P = { name: "ts" };\n`${p.name}:${first([Color.Green, Color.Red])}`',
      ts,
    );
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    assert.match(result.results[0].text, /ts:2/);
    await interpreter.deleteCodeContext(ts.id);
  });

  test('deleteCodeContext removes the context; using it then fails with CONTEXT_NOT_FOUND', async () => {
    const doomed = await interpreter.createCodeContext({ language: 'python' });
    await interpreter.deleteCodeContext(doomed.id);
    const listed = await interpreter.listCodeContexts();
    assert.ok(!listed.some((c) => c.id === doomed.id));
    await assert.rejects(interpreter.runCode('1', { context: doomed }), (err) => {
      assert.equal(err.code, 'CONTEXT_NOT_FOUND');
      assert.equal(err.httpStatus, 404);
      return true;
    });
  });
});
