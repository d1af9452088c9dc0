// The published @cloudflare/sandbox SandboxClient driving a sandpit sandbox through the
// server's forwarding route, unmodified. Needs SANDPIT_URL and SANDPIT_KEY (run through
// `npm test`, or the Rust test `serial_compat_node` which starts a server).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { collectFile, parseSSEStream, streamFile } from '@cloudflare/sandbox';

import { KEY, URL_BASE, destroySandbox, requireServer, sandboxClient, sandboxId } from '../lib/sandpit.mjs';

const SANDBOX_ID = sandboxId('compat');
const SESSION = 'compat-session';
const DIR = '/workspace/compat';

function clientWithKey(key) {
  return sandboxClient(SANDBOX_ID, key);
}

async function drain(iterable) {
  const items = [];
  for await (const item of iterable) items.push(item);
  return items;
}

let client;

before(() => {
  requireServer();
  client = clientWithKey(KEY);
});

after(() => destroySandbox(SANDBOX_ID));

describe('SandboxClient against sandpit', { concurrency: false }, () => {
  test('ping creates the sandbox on first use', async () => {
    // UtilityClient.ping() returns the body's `message`, which the protocol leaves undefined:
    // resolving (not throwing) is the assertion.
    await client.utils.ping();
    const res = await fetch(`${URL_BASE}/v1/sandboxes/${SANDBOX_ID}`, {
      headers: { Authorization: `Bearer ${KEY}` },
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).id, SANDBOX_ID);
  });

  test('defaultHeaders carry the API key on every request', async () => {
    const wrong = clientWithKey('not-the-key');
    await assert.rejects(wrong.utils.ping(), (err) => {
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.equal(err.httpStatus, 401);
      return true;
    });
    await assert.rejects(wrong.files.exists('/', SESSION), (err) => err.httpStatus === 401);
  });

  test('session create keeps env and cwd for later commands', async () => {
    const res = await client.utils.createSession({ id: SESSION, env: { FOO: 'bar' }, cwd: '/tmp' });
    assert.equal(res.success, true);
    const out = await client.commands.execute('echo "$FOO"; pwd', SESSION);
    assert.equal(out.success, true);
    assert.equal(out.exitCode, 0);
    assert.equal(out.stdout, 'bar\n/tmp\n');
  });

  test('execute reports exit codes, stderr, per-command env and cwd', async () => {
    const out = await client.commands.execute('echo "$A" >&2; pwd; (exit 3)', SESSION, {
      env: { A: 'one' },
      cwd: '/',
    });
    assert.equal(out.success, false);
    assert.equal(out.exitCode, 3);
    assert.equal(out.stdout, '/\n');
    assert.equal(out.stderr, 'one\n');
    // The env and cwd were for that command only.
    const after = await client.commands.execute('echo "[$A]"; pwd', SESSION);
    assert.equal(after.stdout, '[]\n/tmp\n');
  });

  test('executeStream yields start, output and complete events', async () => {
    const stream = await client.commands.executeStream('echo out; echo err >&2; (exit 7)', SESSION);
    const events = await drain(parseSSEStream(stream));
    assert.equal(events[0].type, 'start');
    const stdout = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    const stderr = events.filter((e) => e.type === 'stderr').map((e) => e.data).join('');
    assert.equal(stdout, 'out\n');
    assert.equal(stderr, 'err\n');
    const last = events.at(-1);
    assert.equal(last.type, 'complete');
    assert.equal(last.exitCode, 7);
  });

  test('mkdir, writeFile and readFile round-trip text', async () => {
    await client.files.mkdir(`${DIR}/sub/deeper`, SESSION, { recursive: true });
    await client.files.writeFile(`${DIR}/a.txt`, 'hello sandpit\n', SESSION, { encoding: 'utf-8' });
    const read = await client.files.readFile(`${DIR}/a.txt`, SESSION);
    assert.equal(read.success, true);
    assert.equal(read.content, 'hello sandpit\n');
    assert.equal(read.encoding, 'utf-8');
    assert.equal(read.isBinary, false);
    assert.equal(read.size, 14);
  });

  test('writeFile and readFile round-trip binary as base64', async () => {
    const bytes = Buffer.from([0, 1, 2, 254, 255, 0, 137, 80, 78, 71]);
    await client.files.writeFile(`${DIR}/b.bin`, bytes.toString('base64'), SESSION, {
      encoding: 'base64',
    });
    const read = await client.files.readFile(`${DIR}/b.bin`, SESSION, { encoding: 'base64' });
    assert.equal(read.encoding, 'base64');
    assert.deepEqual(Buffer.from(read.content, 'base64'), bytes);
    const sum = await client.commands.execute(`od -An -tu1 ${DIR}/b.bin | tr -s ' '`, SESSION);
    assert.equal(sum.stdout.trim(), '0 1 2 254 255 0 137 80 78 71');
  });

  test('readFileStream streams large files (collectFile and streamFile)', async () => {
    const line = 'sandpit streams files in chunks\n';
    const text = line.repeat(8192); // 256 KiB: several 64 KiB chunks
    await client.files.writeFile(`${DIR}/big.txt`, text, SESSION, { encoding: 'utf-8' });
    const { content, metadata } = await collectFile(await client.files.readFileStream(`${DIR}/big.txt`, SESSION));
    assert.equal(metadata.isBinary, false);
    assert.equal(metadata.size, text.length);
    assert.equal(content, text);

    const big = randomBytes(200_000);
    await client.files.writeFile(`${DIR}/big.bin`, big.toString('base64'), SESSION, {
      encoding: 'base64',
    });
    const chunks = await drain(streamFile(await client.files.readFileStream(`${DIR}/big.bin`, SESSION)));
    assert.ok(chunks.length >= 2, `expected several chunks, got ${chunks.length}`);
    assert.ok(chunks.every((c) => c instanceof Uint8Array));
    assert.deepEqual(Buffer.concat(chunks), big);
  });

  test('listFiles and exists', async () => {
    const listed = await client.files.listFiles(DIR, SESSION);
    const names = listed.files.map((f) => f.name).sort();
    assert.deepEqual(names, ['a.txt', 'b.bin', 'big.bin', 'big.txt', 'sub']);
    assert.equal(listed.count, 5);
    const sub = listed.files.find((f) => f.name === 'sub');
    assert.equal(sub.type, 'directory');
    assert.equal(sub.absolutePath, `${DIR}/sub`);

    const recursive = await client.files.listFiles(DIR, SESSION, { recursive: true });
    assert.ok(recursive.files.some((f) => f.relativePath === 'sub/deeper'), JSON.stringify(recursive.files.map((f) => f.relativePath)));

    assert.equal((await client.files.exists(`${DIR}/a.txt`, SESSION)).exists, true);
    assert.equal((await client.files.exists(`${DIR}/nope`, SESSION)).exists, false);
  });

  test('renameFile, moveFile and deleteFile', async () => {
    const renamed = await client.files.renameFile(`${DIR}/a.txt`, `${DIR}/renamed.txt`, SESSION);
    assert.equal(renamed.success, true);
    assert.equal((await client.files.exists(`${DIR}/a.txt`, SESSION)).exists, false);

    await client.files.moveFile(`${DIR}/renamed.txt`, `${DIR}/sub/moved.txt`, SESSION);
    const moved = await client.files.readFile(`${DIR}/sub/moved.txt`, SESSION);
    assert.equal(moved.content, 'hello sandpit\n');

    await client.files.deleteFile(`${DIR}/sub/moved.txt`, SESSION);
    assert.equal((await client.files.exists(`${DIR}/sub/moved.txt`, SESSION)).exists, false);
  });

  test('errors arrive as the SDK typed errors', async () => {
    await assert.rejects(client.files.readFile(`${DIR}/does-not-exist`, SESSION), (err) => {
      assert.ok(err instanceof Error);
      assert.equal(err.name, 'FileNotFoundError');
      assert.equal(err.code, 'FILE_NOT_FOUND');
      assert.equal(err.httpStatus, 404);
      return true;
    });
    await assert.rejects(client.files.deleteFile(`${DIR}/sub`, SESSION), (err) => {
      assert.equal(err.code, 'IS_DIRECTORY');
      assert.equal(err.httpStatus, 400);
      return true;
    });
  });

  test('a bare exit ends the session shell with SessionTerminatedError', async () => {
    await assert.rejects(client.commands.execute('exit 4', 'compat-doomed'), (err) => {
      assert.equal(err.name, 'SessionTerminatedError');
      assert.equal(err.code, 'SESSION_TERMINATED');
      assert.equal(err.httpStatus, 410);
      return true;
    });
    // The next command gets a fresh shell.
    const again = await client.commands.execute('echo back', 'compat-doomed');
    assert.equal(again.stdout, 'back\n');
  });

  test('deleteSession', async () => {
    const res = await client.utils.deleteSession(SESSION);
    assert.equal(res.success, true);
  });
});
