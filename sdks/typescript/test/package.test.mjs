// The package as users get it: `npm pack` ships ESM + .d.ts (dist/, built before the suite;
// `--ignore-scripts` so prepack does not rewrite dist/ under the other test files), and the
// packed tarball, installed into an empty project, imports by its name with no dependencies.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const sdk = fileURLToPath(new URL('..', import.meta.url));

test('npm pack → npm install <tarball> → import @sandpit/sdk', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sandpit-sdk-pack-'));
  try {
    const { stdout } = await run(
      'npm',
      ['pack', '--json', '--ignore-scripts', '--pack-destination', dir],
      {
        cwd: sdk,
      },
    );
    const [packed] = JSON.parse(stdout);
    const files = packed.files.map((/** @type {{ path: string }} */ f) => f.path);
    for (const file of ['dist/index.js', 'dist/index.d.ts', 'package.json', 'README.md']) {
      assert.ok(files.includes(file), `${file} in ${files.join(', ')}`);
    }
    assert.ok(
      !files.some((/** @type {string} */ f) => f.startsWith('src/') || f.startsWith('test/')),
    );

    const app = join(dir, 'app');
    await run('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), '{"name":"app","private":true,"type":"module"}');
    await run(
      'npm',
      ['install', '--no-audit', '--no-fund', '--offline', join(dir, packed.filename)],
      {
        cwd: app,
      },
    );
    const installed = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8'));
    assert.deepEqual(Object.keys(installed.packages).sort(), ['', 'node_modules/@sandpit/sdk']);
    const probe = `import * as sdk from '@sandpit/sdk';
      console.log([typeof sdk.getSandbox, typeof sdk.connect, typeof sdk.FileNotFoundError].join())`;
    const imported = await run(process.execPath, ['--input-type=module', '-e', probe], {
      cwd: app,
    });
    assert.equal(imported.stdout.trim(), 'function,function,function');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
