// Porting: a program written for the seed's `getSandbox(env.Sandbox, id)` runs on sandpit with
// only its import and the getSandbox namespace argument changed.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { sandboxId } from '../testlib/env.mjs';

const seedUrl = new URL('../testlib/porting/seed-worker.mjs', import.meta.url);
const portedUrl = new URL('../testlib/porting/sandpit-worker.mjs', import.meta.url);

test('the ported program differs in exactly the import and the getSandbox line', () => {
  const seed = readFileSync(seedUrl, 'utf8').split('\n');
  const ported = readFileSync(portedUrl, 'utf8').split('\n');
  assert.equal(seed.length, ported.length);
  const changed = seed.flatMap((line, i) => (line === ported[i] ? [] : [[line, ported[i]]]));
  assert.deepEqual(changed, [
    [
      "import { getSandbox, FileNotFoundError } from '@cloudflare/sandbox';",
      "import { getSandbox, FileNotFoundError, connect } from '@sandpit/sdk';",
    ],
    [
      "    const sandbox = getSandbox(env.Sandbox, userId, { sleepAfter: '5m' });",
      "    const sandbox = getSandbox(connect(), userId, { sleepAfter: '5m' });",
    ],
  ]);
});

test('the ported program runs against sandpit', async () => {
  // `connect()` reads SANDPIT_URL / SANDPIT_KEY, as a deployed app would.
  const { default: worker } = await import(portedUrl.href);
  const user = sandboxId('user');
  const response = await worker.fetch(new Request(`http://app.example/run?user=${user}`), {});
  const report = await response.json();
  assert.equal(report.sum, '45');
  assert.equal(report.streamed, 'line 1\nline 2\nline 3\n');
  assert.equal(report.file, 'print(sum(range(10)))\n');
  assert.deepEqual(report.files, ['main.py']);
  assert.equal(report.served, true);
  assert.match(report.previewUrl, /^https?:\/\/8000-/);
  assert.equal(report.area, '78.53981633974483');
  assert.equal(report.missing, 'FILE_NOT_FOUND');
});
