// The TypeScript example (examples/typescript/agent-loop.mjs) runs against the server, installed
// the way users install the SDK (`npm ci` there links ./sdks/typescript).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { promisify } from 'node:util';

const examples = fileURLToPath(new URL('../../../examples/typescript/', import.meta.url));

test('examples/typescript/agent-loop.mjs: write, test, read results, fix, pass', async () => {
  assert.ok(
    existsSync(`${examples}node_modules/@sandpit/sdk`),
    `run \`npm ci\` in ${examples} first (scripts/test.sh does)`,
  );
  const { stdout } = await promisify(execFile)(process.execPath, ['agent-loop.mjs'], {
    cwd: examples,
    env: process.env,
    timeout: 120_000,
  });
  assert.match(stdout, /round 1: exit \d+, 2 tests, 1 failing/);
  assert.match(stdout, /model: fixing 1 failure/);
  assert.match(stdout, /PASS after 2 round\(s\)/);
});
