// File methods: JSON routes, sandpit's raw byte routes (streamed writes, encoding 'none'),
// readFileStream + streamFile/collectFile, watch/checkChanges, and gitCheckout.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';

import {
  FileNotFoundError,
  FileSystemError,
  GitBranchNotFoundError,
  GitRepositoryNotFoundError,
  collectFile,
  parseSSEStream,
  streamFile,
} from '../dist/index.js';
import { freshSandbox } from '../testlib/env.mjs';

const sandbox = freshSandbox('ts-files');
after(() => sandbox.destroy());

/** @param {ReadableStream<Uint8Array>} stream */
async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('text and base64 files', () => {
  test('writeFile / readFile text', async () => {
    const written = await sandbox.writeFile('/workspace/notes/a.txt', 'hello\nworld\n');
    assert.equal(written.success, true);
    assert.equal(written.path, '/workspace/notes/a.txt');
    const read = await sandbox.readFile('/workspace/notes/a.txt');
    assert.equal(read.content, 'hello\nworld\n');
    assert.equal(read.encoding, 'utf-8');
    assert.equal(read.isBinary, false);
  });

  test('relative paths resolve against the session cwd', async () => {
    await sandbox.writeFile('rel.txt', 'relative');
    assert.equal((await sandbox.exec('cat /workspace/rel.txt')).stdout, 'relative');
  });

  test('base64 write and binary read', async () => {
    const bytes = Buffer.from([0, 1, 2, 250, 255, 0x89, 0x50]);
    await sandbox.writeFile('/workspace/bin.dat', bytes.toString('base64'), { encoding: 'base64' });
    const read = await sandbox.readFile('/workspace/bin.dat');
    assert.equal(read.isBinary, true);
    assert.equal(read.encoding, 'base64');
    assert.deepEqual(Buffer.from(read.content, 'base64'), bytes);
  });
});

describe('raw bytes (what the seed supports only over RPC)', () => {
  test('writeFile(Uint8Array) and readFile(path, { encoding: "none" }) are byte-exact', async () => {
    const bytes = randomBytes(300_000);
    const written = await sandbox.writeFile('/workspace/raw/blob.bin', bytes);
    assert.equal(written.success, true);
    assert.equal(written.size, bytes.length);
    const read = await sandbox.readFile('/workspace/raw/blob.bin', { encoding: 'none' });
    assert.equal(read.size, bytes.length);
    assert.deepEqual(await readAll(read.content), bytes);
  });

  test('writeFile(ReadableStream) streams 40 MiB (above the JSON API cap of 32 MiB)', async () => {
    const piece = randomBytes(1 << 20);
    const pieces = 40;
    let sent = 0;
    const hash = createHash('sha256');
    const stream = new ReadableStream({
      pull(controller) {
        if (sent === pieces) return controller.close();
        sent++;
        hash.update(piece);
        controller.enqueue(new Uint8Array(piece));
      },
    });
    const written = await sandbox.writeFile('/workspace/raw/big.bin', stream);
    assert.equal(written.size, pieces << 20);
    const sum = await sandbox.exec('sha256sum /workspace/raw/big.bin');
    assert.equal(sum.stdout.split(' ')[0], hash.digest('hex'));
    // And back, as a stream, with the same digest.
    const read = await sandbox.readFile('/workspace/raw/big.bin', { encoding: 'none' });
    const back = createHash('sha256');
    for await (const chunk of read.content) back.update(chunk);
    assert.equal(back.digest('hex'), sum.stdout.split(' ')[0]);
  });

  test('a missing file over the raw route is FileNotFoundError', async () => {
    await assert.rejects(
      sandbox.readFile('/workspace/raw/missing', { encoding: 'none' }),
      FileNotFoundError,
    );
  });
});

describe('readFileStream', () => {
  test('collectFile and streamFile decode text and binary files', async () => {
    const text = 'line\n'.repeat(30_000); // several 64 KiB chunks
    await sandbox.writeFile('/workspace/stream.txt', text);
    const collected = await collectFile(await sandbox.readFileStream('/workspace/stream.txt'));
    assert.equal(collected.content, text);
    assert.equal(collected.metadata.isBinary, false);

    const bytes = randomBytes(200_000);
    await sandbox.writeFile('/workspace/stream.bin', bytes);
    const chunks = [];
    const iterator = streamFile(await sandbox.readFileStream('/workspace/stream.bin'));
    let next;
    while (!(next = await iterator.next()).done)
      chunks.push(/** @type {Uint8Array} */ (next.value));
    assert.ok(chunks.length > 1, 'several chunks');
    assert.equal(next.value.isBinary, true);
    assert.deepEqual(Buffer.concat(chunks.map((c) => Buffer.from(c))), bytes);
  });
});

describe('directories and metadata', () => {
  test('mkdir, listFiles, exists, renameFile, moveFile, deleteFile', async () => {
    const made = await sandbox.mkdir('/workspace/tree/a/b', { recursive: true });
    assert.equal(made.recursive, true);
    await sandbox.writeFile('/workspace/tree/a/one.txt', '1');
    await sandbox.writeFile('/workspace/tree/a/b/two.txt', '22');
    await sandbox.writeFile('/workspace/tree/.hidden', 'h');

    const flat = await sandbox.listFiles('/workspace/tree');
    assert.deepEqual(flat.files.map((f) => f.name).sort(), ['a']);
    const hidden = await sandbox.listFiles('/workspace/tree', { includeHidden: true });
    assert.deepEqual(hidden.files.map((f) => f.name).sort(), ['.hidden', 'a']);
    const deep = await sandbox.listFiles('/workspace/tree', { recursive: true });
    const two = deep.files.find((f) => f.name === 'two.txt');
    assert.equal(two?.type, 'file');
    assert.equal(two?.size, 2);
    assert.equal(two?.absolutePath, '/workspace/tree/a/b/two.txt');
    assert.equal(deep.count, deep.files.length);

    assert.equal((await sandbox.exists('/workspace/tree/a/one.txt')).exists, true);
    const renamed = await sandbox.renameFile(
      '/workspace/tree/a/one.txt',
      '/workspace/tree/a/uno.txt',
    );
    assert.equal(renamed.newPath, '/workspace/tree/a/uno.txt');
    assert.equal((await sandbox.exists('/workspace/tree/a/one.txt')).exists, false);
    await sandbox.moveFile('/workspace/tree/a/uno.txt', '/workspace/tree/uno.txt');
    assert.equal((await sandbox.readFile('/workspace/tree/uno.txt')).content, '1');
    await sandbox.deleteFile('/workspace/tree/uno.txt');
    assert.equal((await sandbox.exists('/workspace/tree/uno.txt')).exists, false);
  });

  test('typed errors: FILE_NOT_FOUND and IS_DIRECTORY', async () => {
    await assert.rejects(sandbox.readFile('/workspace/nope.txt'), (err) => {
      assert.ok(err instanceof FileNotFoundError);
      assert.equal(err.code, 'FILE_NOT_FOUND');
      assert.equal(err.httpStatus, 404);
      assert.equal(typeof err.context, 'object');
      return true;
    });
    await sandbox.mkdir('/workspace/adir');
    await assert.rejects(sandbox.deleteFile('/workspace/adir'), (err) => {
      assert.ok(err instanceof FileSystemError);
      assert.equal(err.code, 'IS_DIRECTORY');
      assert.equal(err.httpStatus, 400);
      return true;
    });
  });
});

describe('watch and checkChanges', () => {
  test('watch resolves once live and reports a write', async () => {
    await sandbox.mkdir('/workspace/watched', { recursive: true });
    const controller = new AbortController();
    const stream = await sandbox.watch('/workspace/watched', { signal: controller.signal });
    await sandbox.writeFile('/workspace/watched/new.txt', 'x');
    let seen;
    try {
      for await (const event of parseSSEStream(stream, controller.signal)) {
        if (event.type === 'event' && event.path.endsWith('new.txt')) {
          seen = event;
          controller.abort();
        }
      }
    } catch (err) {
      assert.equal(/** @type {any} */ (err).code, 'OPERATION_INTERRUPTED');
    }
    assert.ok(seen, 'an event for new.txt');
  });

  test('watch of a missing path is a typed error', async () => {
    await assert.rejects(sandbox.watch('/workspace/no/such/dir'), (/** @type {any} */ err) => {
      assert.ok(['FILE_NOT_FOUND', 'WATCH_START_ERROR'].includes(err.code), err.code);
      return true;
    });
  });

  test('checkChanges: unchanged, then changed', async () => {
    await sandbox.mkdir('/workspace/checked', { recursive: true });
    const first = await sandbox.checkChanges('/workspace/checked');
    const same = await sandbox.checkChanges('/workspace/checked', { since: first.version });
    assert.equal(same.status, 'unchanged');
    await sandbox.writeFile('/workspace/checked/f.txt', 'x');
    const changed = await sandbox.checkChanges('/workspace/checked', { since: same.version });
    assert.equal(changed.status, 'changed');
  });
});

describe('gitCheckout', () => {
  test('clones a branch given as { ref } (the seed guides form) and as { branch }', async () => {
    const made = await sandbox.exec(
      [
        'set -e',
        'git init -q -b main /tmp/origin/repo',
        'cd /tmp/origin/repo',
        'echo v1 > README',
        'git -c user.email=t@t -c user.name=t add README',
        'git -c user.email=t@t -c user.name=t commit -qm one',
        'git checkout -qb feature',
        'echo feature > README',
        'git -c user.email=t@t -c user.name=t commit -qam two',
      ].join('\n'),
    );
    assert.equal(made.exitCode, 0, made.stderr);
    const byRef = await sandbox.gitCheckout('file:///tmp/origin/repo', { ref: 'feature' });
    assert.equal(byRef.targetDir, '/workspace/repo');
    assert.equal((await sandbox.readFile('/workspace/repo/README')).content, 'feature\n');
    const byBranch = await sandbox.gitCheckout('file:///tmp/origin/repo', {
      branch: 'main',
      targetDir: '/workspace/main-copy',
      depth: 1,
    });
    assert.equal(byBranch.branch, 'main');
    assert.equal((await sandbox.readFile('/workspace/main-copy/README')).content, 'v1\n');
  });

  test('typed git errors', async () => {
    await assert.rejects(
      sandbox.gitCheckout('file:///tmp/origin/repo', {
        branch: 'nope',
        targetDir: '/workspace/x1',
      }),
      GitBranchNotFoundError,
    );
    await assert.rejects(
      sandbox.gitCheckout('file:///tmp/origin/missing', { targetDir: '/workspace/x2' }),
      GitRepositoryNotFoundError,
    );
  });
});
