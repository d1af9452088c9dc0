// Backups, snapshots, forks and bucket mounts through the SDK (docs/persistence.md), against the
// real server: archives go to its object store, forks are real sandboxes, mounts are s3fs over
// the loopback S3 server the Rust driver starts (`SANDPIT_TEST_S3`).

import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import {
  BackupNotFoundError,
  InvalidBackupConfigError,
  InvalidMountConfigError,
  MissingCredentialsError,
  SandboxConflictError,
  SnapshotExportNotFoundError,
  SnapshotInUseError,
  SnapshotNotFoundError,
  ValidationFailedError,
  createFromSnapshot,
  deleteBackup,
  deleteSnapshot,
  exportSnapshot,
  getBackup,
  getSandbox,
  getSnapshot,
  importSnapshot,
  listBackups,
  listSnapshots,
} from '../dist/index.js';
import { freshSandbox, ns, sandboxId, waitFor } from '../testlib/env.mjs';

/** Sandboxes to destroy at the end. */
const made = [];
after(() => Promise.all(made.map((s) => s.destroy())));

function fresh(prefix) {
  const sandbox = freshSandbox(prefix);
  made.push(sandbox);
  return sandbox;
}

describe('backups', () => {
  test('createBackup → restoreBackup into another sandbox; list, get, delete', async () => {
    const source = fresh('ts-bk-src');
    const script = [
      'mkdir -p /workspace/proj/empty /workspace/proj/logs',
      "printf 'hello\\n' > /workspace/proj/a.txt",
      'chmod 640 /workspace/proj/a.txt',
      'ln -s a.txt /workspace/proj/link',
      "printf 'x' > /workspace/proj/logs/skip.log",
    ].join(' && ');
    assert.equal((await source.exec(script)).exitCode, 0);
    const backup = await source.createBackup({
      dir: '/workspace/proj',
      name: 'ts-backup',
      ttl: 3600,
      excludes: ['*.log'],
      compression: { format: 'zstd', threads: 4 },
      localBucket: false,
      multipart: true,
    });
    assert.match(backup.id, /\S/);
    assert.equal(backup.dir, '/workspace/proj');
    assert.equal(backup.name, 'ts-backup');
    assert.equal(backup.sandboxId, source.id);
    assert.ok(backup.sizeBytes > 0 && backup.rawBytes > backup.sizeBytes, JSON.stringify(backup));
    assert.match(backup.sha256, /^[0-9a-f]{64}$/);

    assert.deepEqual(await getBackup(ns, backup.id), backup);
    assert.ok((await listBackups(ns)).some((b) => b.id === backup.id));

    const target = fresh('ts-bk-dst');
    assert.equal(
      (await target.exec('mkdir -p /workspace/proj && echo old > /workspace/proj/old')).exitCode,
      0,
    );
    // The seed's call: a DirectoryBackup {id, dir} is all it needs.
    const restored = await target.restoreBackup({ id: backup.id, dir: backup.dir });
    assert.equal(restored.success, true);
    assert.equal(restored.id, backup.id);
    assert.equal(restored.dir, '/workspace/proj');
    const tree = await target.exec(
      "cd /workspace/proj && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort && cat a.txt",
    );
    assert.equal(
      tree.stdout,
      '. d 755 \n./a.txt f 640 \n./empty d 755 \n./link l 777 a.txt\n./logs d 755 \nhello\n',
    );
    // Elsewhere in the same sandbox, with sandpit's `dir`.
    const again = await target.restoreBackup(backup, { dir: '/tmp/copy' });
    assert.equal(again.dir, '/tmp/copy');
    assert.equal((await target.exec('cat /tmp/copy/a.txt')).stdout, 'hello\n');

    await deleteBackup(ns, backup.id);
    await assert.rejects(getBackup(ns, backup.id), BackupNotFoundError);
    assert.ok(!(await listBackups(ns)).some((b) => b.id === backup.id));
  });

  test('a missing backup and a bad dir give the seed error classes', async () => {
    const sandbox = fresh('ts-bk-bad');
    await assert.rejects(
      sandbox.restoreBackup({ id: 'no-such-backup', dir: '/workspace' }),
      (err) => {
        assert.ok(err instanceof BackupNotFoundError, String(err));
        assert.equal(err.code, 'BACKUP_NOT_FOUND');
        assert.equal(err.httpStatus, 404);
        return true;
      },
    );
    await assert.rejects(sandbox.createBackup({ dir: '/etc' }), (err) => {
      assert.ok(err instanceof InvalidBackupConfigError, String(err));
      assert.equal(err.code, 'INVALID_BACKUP_CONFIG');
      assert.match(err.message, /\/workspace/);
      return true;
    });
    await assert.rejects(
      sandbox.createBackup({ dir: '/workspace', compression: { format: 'lz4' } }),
      InvalidBackupConfigError,
    );
    await assert.rejects(deleteBackup(ns, 'no-such-backup'), BackupNotFoundError);
  });
});

describe('snapshots and forks', () => {
  test('createSnapshot, createFromSnapshot, fork: children see the files, write privately', async () => {
    const parent = fresh('ts-snap');
    assert.equal((await parent.exec('echo from-parent > /workspace/f')).exitCode, 0);
    const snap = await parent.createSnapshot({ name: 'ts-one' });
    assert.match(snap.id, /^snap-/);
    assert.equal(snap.name, 'ts-one');
    assert.equal(snap.sandboxId, parent.id);
    assert.deepEqual(await getSnapshot(ns, snap.id), snap);
    assert.ok((await listSnapshots(ns)).some((s) => s.id === snap.id));
    // The parent keeps working after the snapshot (it was stopped and woken).
    assert.equal((await parent.exec('cat /workspace/f')).stdout, 'from-parent\n');

    const copyId = sandboxId('ts-from');
    const copy = await createFromSnapshot(ns, snap.id, copyId);
    made.push(copy);
    assert.equal((await copy.info()).state, 'running');
    assert.equal((await copy.exec('cat /workspace/f')).stdout, 'from-parent\n');
    // The same handle again is fine; the id under another snapshot is a conflict.
    assert.equal((await getSandbox(ns, copyId, { snapshot: snap.id }).exec('true')).exitCode, 0);
    await assert.rejects(
      getSandbox(ns, copyId, { snapshot: 'snap-other' }).exec('true'),
      (err) => err instanceof SnapshotNotFoundError || err instanceof SandboxConflictError,
    );

    await assert.rejects(deleteSnapshot(ns, snap.id), (err) => {
      assert.ok(err instanceof SnapshotInUseError, String(err));
      assert.equal(err.httpStatus, 409);
      return true;
    });

    const ids = [sandboxId('ts-kid'), sandboxId('ts-kid')];
    const forked = await parent.fork(undefined, ids);
    made.push(...forked.children);
    assert.deepEqual(
      forked.sandboxes.map((s) => s.id),
      ids,
    );
    assert.deepEqual(
      forked.children.map((c) => c.id),
      ids,
    );
    const [a, b] = forked.children;
    assert.equal((await a.exec('cat /workspace/f')).stdout, 'from-parent\n');
    assert.equal((await a.exec('echo mine > /workspace/f')).exitCode, 0);
    assert.equal((await b.exec('cat /workspace/f')).stdout, 'from-parent\n');
    assert.equal((await parent.exec('cat /workspace/f')).stdout, 'from-parent\n');
    const counted = await parent.fork(1);
    made.push(...counted.children);
    assert.equal(counted.sandboxes.length, 1);

    await copy.destroy();
    await deleteSnapshot(ns, snap.id);
    await assert.rejects(getSnapshot(ns, snap.id), SnapshotNotFoundError);
  });
});

describe('snapshot export and import', () => {
  test('exportSnapshot → importSnapshot: a new snapshot with the same files', async () => {
    const source = fresh('ts-exp');
    assert.equal((await source.exec('echo exported > /workspace/e.txt')).exitCode, 0);
    const snap = await source.createSnapshot({ name: 'ts-exp' });
    const exported = await exportSnapshot(ns, snap.id);
    assert.equal(exported.snapshotId, snap.id);
    assert.match(exported.objectKey, /^snapshot-exports\/.+\.tar\.zst$/);
    assert.match(exported.sha256, /^[0-9a-f]{64}$/);
    assert.ok(exported.sizeBytes > 0 && exported.rawBytes >= exported.sizeBytes);

    const imported = await importSnapshot(ns, {
      objectKey: exported.objectKey,
      sha256: exported.sha256,
      name: 'ts-imported',
    });
    assert.notEqual(imported.id, snap.id);
    assert.equal(imported.name, 'ts-imported');
    assert.deepEqual(await getSnapshot(ns, imported.id), imported);
    // The export outlives the snapshot it was made of.
    await deleteSnapshot(ns, snap.id);
    const copy = await createFromSnapshot(ns, imported.id, sandboxId('ts-imp'));
    made.push(copy);
    assert.equal((await copy.exec('cat /workspace/e.txt')).stdout, 'exported\n');
    await copy.destroy();
    await deleteSnapshot(ns, imported.id);

    // Without sha256 and name: the exported snapshot's name.
    const again = await importSnapshot(ns, { objectKey: exported.objectKey });
    assert.equal(again.name, 'ts-exp');
    await deleteSnapshot(ns, again.id);
  });

  test('a wrong digest, a missing export and a bad key give typed errors', async () => {
    await assert.rejects(exportSnapshot(ns, 'snap-no-such'), SnapshotNotFoundError);
    const source = fresh('ts-exp-bad');
    const snap = await source.createSnapshot();
    const exported = await exportSnapshot(ns, snap.id);
    await assert.rejects(
      importSnapshot(ns, { objectKey: exported.objectKey, sha256: '0'.repeat(64) }),
      (err) => {
        assert.ok(err instanceof ValidationFailedError, String(err));
        assert.match(err.message, /SHA-256/);
        return true;
      },
    );
    await assert.rejects(
      importSnapshot(ns, { objectKey: exported.objectKey.replace(/\.tar\.zst$/, '-x.tar.zst') }),
      (err) => {
        assert.ok(err instanceof SnapshotExportNotFoundError, String(err));
        assert.equal(err.code, 'SNAPSHOT_EXPORT_NOT_FOUND');
        assert.equal(err.httpStatus, 404);
        return true;
      },
    );
    await assert.rejects(importSnapshot(ns, { objectKey: '../etc/passwd' }), ValidationFailedError);
    await deleteSnapshot(ns, snap.id);
  });
});

// The loopback S3 server of the Rust driver: {endpoint, accessKey, secretKey, bucket, root}.
const s3 = process.env.SANDPIT_TEST_S3 ? JSON.parse(process.env.SANDPIT_TEST_S3) : undefined;

describe('bucket mounts', { skip: s3 ? false : 'SANDPIT_TEST_S3 is not set' }, () => {
  test('mountBucket: writes become objects, objects show up, listed without keys', async () => {
    const sandbox = fresh('ts-mnt');
    const credentials = { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey };
    await sandbox.mountBucket(s3.bucket, '/mnt/data', { endpoint: s3.endpoint, credentials });
    assert.equal((await sandbox.exec('echo from-sandbox > /mnt/data/ts-inside.txt')).exitCode, 0);
    const object = join(s3.root, s3.bucket, 'ts-inside.txt');
    await waitFor('the object to appear', async () => existsSync(object));
    assert.equal(readFileSync(object, 'utf8'), 'from-sandbox\n');
    writeFileSync(join(s3.root, s3.bucket, 'ts-outside.txt'), 'from-outside\n');
    await waitFor(
      'the object to be visible inside',
      async () => (await sandbox.exec('cat /mnt/data/ts-outside.txt')).stdout === 'from-outside\n',
    );

    const mounts = await sandbox.getBucketMounts();
    assert.equal(mounts.length, 1);
    assert.equal(mounts[0].mountPath, '/mnt/data');
    assert.equal(mounts[0].mounted, true);
    // Never the keys (that they never enter the sandbox is tested by the server's suite).
    assert.ok(!JSON.stringify(mounts).includes(s3.secretKey));

    await sandbox.mountBucket(s3.bucket, '/mnt/ro', {
      endpoint: s3.endpoint,
      credentials,
      readOnly: true,
    });
    const refused = await sandbox.exec("sh -c 'echo x > /mnt/ro/nope' 2>&1");
    assert.notEqual(refused.exitCode, 0);
    assert.match(refused.stdout, /Read-only file system/);

    await sandbox.unmountBucket('/mnt/ro');
    await sandbox.unmountBucket('/mnt/data');
    assert.deepEqual(await sandbox.getBucketMounts(), []);
    await assert.rejects(sandbox.unmountBucket('/mnt/data'), InvalidMountConfigError);
  });

  test('mountBucket without keys and with a bad path gives typed errors', async () => {
    const sandbox = fresh('ts-mnt-bad');
    await assert.rejects(
      sandbox.mountBucket(s3.bucket, '/mnt/x', { endpoint: s3.endpoint }),
      MissingCredentialsError,
    );
    await assert.rejects(
      sandbox.mountBucket(s3.bucket, 'relative', {
        endpoint: s3.endpoint,
        credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
      }),
      InvalidMountConfigError,
    );
  });
});
