// The published client's GitClient and WatchClient against a sandpit sandbox: a clone of a
// repository made inside the sandbox (file://), file watch streams and checkChanges.
// Needs SANDPIT_URL and SANDPIT_KEY, like sandbox-client.test.mjs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { parseSSEStream } from '@cloudflare/sandbox';

import { destroySandbox, requireServer, sandboxClient, sandboxId } from '../lib/sandpit.mjs';

const SANDBOX_ID = sandboxId('compat-gw');
const SESSION = 'compat-git-watch';
const ORIGIN = '/tmp/origin-repo';
const WATCHED = '/workspace/watched';

let client;

before(() => {
  requireServer();
  client = sandboxClient(SANDBOX_ID);
});

after(() => destroySandbox(SANDBOX_ID));

async function sh(command) {
  const out = await client.commands.execute(command, SESSION);
  assert.equal(out.exitCode, 0, `${command}: ${out.stderr}`);
  return out.stdout;
}

/**
 * Reads watch events until `done(event)` or `ms` pass; returns them all and closes the stream
 * (through the abort signal: a pending `next()` would make `return()` wait forever).
 */
async function eventsUntil(stream, done, ms = 10_000) {
  const abort = new AbortController();
  const iterator = parseSSEStream(stream, abort.signal)[Symbol.asyncIterator]();
  const events = [];
  const deadline = Date.now() + ms;
  let pending;
  while (Date.now() < deadline) {
    pending = iterator.next();
    const next = await Promise.race([
      pending,
      new Promise((resolve) => setTimeout(() => resolve(null), deadline - Date.now())),
    ]);
    if (!next) break;
    pending = undefined;
    if (next.done) break;
    events.push(next.value);
    if (done(next.value)) break;
  }
  abort.abort();
  await pending?.catch(() => {});
  await iterator.return?.().catch(() => {});
  return events;
}

describe('git and watch through the published client', { concurrency: false }, () => {
  test('git.checkout clones a file:// repository with branch and depth', async () => {
    const git = 'git -c user.name=t -c user.email=t@example.com';
    await sh(
      `rm -rf ${ORIGIN} && mkdir -p ${ORIGIN} && cd ${ORIGIN} && git init -q -b main && ` +
        `echo one > a.txt && git add . && ${git} commit -q -m one && ` +
        `echo two > a.txt && ${git} commit -q -am two && ` +
        `git checkout -q -b feature && echo f > f.txt && git add . && ${git} commit -q -m three && ` +
        `git checkout -q main`,
    );
    const res = await client.git.checkout(`file://${ORIGIN}`, SESSION, { branch: 'feature', depth: 1 });
    assert.equal(res.success, true);
    assert.equal(res.branch, 'feature');
    // The client names the target /workspace/<repo> itself.
    assert.equal(res.targetDir, '/workspace/origin-repo');
    assert.equal((await sh('git -C /workspace/origin-repo rev-list --count HEAD')).trim(), '1');
    assert.equal((await sh('cat /workspace/origin-repo/f.txt')).trim(), 'f');

    const main = await client.git.checkout(ORIGIN, SESSION, { targetDir: '/workspace/main-clone' });
    assert.equal(main.branch, 'main');
  });

  test('git errors arrive as typed codes', async () => {
    await assert.rejects(client.git.checkout('file:///tmp/no-such-repo', SESSION), (err) => {
      assert.equal(err.code, 'GIT_REPOSITORY_NOT_FOUND');
      assert.equal(err.httpStatus, 404);
      return true;
    });
    await assert.rejects(
      client.git.checkout(`file://${ORIGIN}`, SESSION, { branch: 'nope', targetDir: '/workspace/x' }),
      (err) => err.code === 'GIT_BRANCH_NOT_FOUND' && err.httpStatus === 404,
    );
    await assert.rejects(
      client.git.checkout('ftp://user:s3cr3t@example.invalid/x.git', SESSION),
      (err) => {
        assert.equal(err.code, 'INVALID_GIT_URL');
        assert.ok(!JSON.stringify(err.context ?? {}).includes('s3cr3t'));
        assert.ok(!err.message.includes('s3cr3t'));
        return true;
      },
    );
  });

  test('watch resolves once watching and streams changes', async () => {
    await sh(`mkdir -p ${WATCHED}`);
    const stream = await client.watch.watch({ path: WATCHED, sessionId: SESSION });
    const target = `${WATCHED}/hello.txt`;
    const writing = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      await client.files.writeFile(target, 'hi', SESSION, { encoding: 'utf-8' });
    })();
    const events = await eventsUntil(stream, (e) => e.type === 'event' && e.path === target);
    await writing;
    assert.equal(events[0].type, 'watching');
    assert.equal(events[0].path, WATCHED);
    assert.ok(events[0].watchId);
    const written = events.find((e) => e.type === 'event' && e.path === target);
    assert.ok(written, JSON.stringify(events));
    assert.equal(written.isDirectory, false);
    // The file API's write-then-rename shows as a plain change of the file.
    assert.ok(!JSON.stringify(events).includes('.sandpit-write'), JSON.stringify(events));
  });

  test('checkChanges reports unchanged, then changed', async () => {
    const first = await client.watch.checkChanges({ path: WATCHED });
    assert.equal(first.status, 'unchanged');
    const again = await client.watch.checkChanges({ path: WATCHED, since: first.version });
    assert.equal(again.status, 'unchanged');
    await client.files.writeFile(`${WATCHED}/later.txt`, 'x', SESSION, { encoding: 'utf-8' });
    const changed = await client.watch.checkChanges({ path: WATCHED, since: first.version });
    assert.equal(changed.status, 'changed');
    const foreign = await client.watch.checkChanges({ path: WATCHED, since: 'watch-00000000-1:0' });
    assert.equal(foreign.status, 'resync');
    assert.equal(foreign.reason, 'restarted');
  });
});
