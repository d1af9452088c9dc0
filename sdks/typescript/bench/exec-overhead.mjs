// SDK overhead (issue 12 target: warm exec('true') through the SDK within 0.3 ms p50 of the
// same call made with a bare HTTP client in the same run). Both clients use Node's fetch (one
// keep-alive pool each) against the same warm sandbox; calls alternate SDK / bare so load on the
// machine hits both alike.
//
//   SANDPIT_URL=... SANDPIT_KEY=... node bench/exec-overhead.mjs [iterations]

import { connect, getSandbox } from '../dist/index.js';

const iterations = Number(process.argv[2] ?? 500);
const url = process.env.SANDPIT_URL;
const key = process.env.SANDPIT_KEY;
if (!url || !key) throw new Error('set SANDPIT_URL and SANDPIT_KEY');

const id = `bench-sdk-${Date.now().toString(36)}`;
const sandbox = getSandbox(connect({ url, apiKey: key }), id);

async function bare() {
  const response = await fetch(`${url}/v1/sandboxes/${id}/api/execute`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'true' }),
  });
  const body = await response.json();
  if (body.exitCode !== 0) throw new Error(JSON.stringify(body));
}

async function sdk() {
  const result = await sandbox.exec('true');
  if (result.exitCode !== 0) throw new Error(JSON.stringify(result));
}

/** @param {number[]} xs @param {number} q */
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];

try {
  // Warm: the sandbox exists, its default session runs, both connection pools are open.
  for (let i = 0; i < 20; i++) {
    await sdk();
    await bare();
  }
  const times = { sdk: [], bare: [] };
  for (let i = 0; i < iterations; i++) {
    for (const [name, call] of i % 2
      ? [
          ['sdk', sdk],
          ['bare', bare],
        ]
      : [
          ['bare', bare],
          ['sdk', sdk],
        ]) {
      const t0 = process.hrtime.bigint();
      await call();
      times[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const row = (label, name) =>
    `| ${label} | ${[0.5, 0.9, 0.99].map((q) => quantile(times[name], q).toFixed(3)).join(' | ')} |`;
  const delta = quantile(times.sdk, 0.5) - quantile(times.bare, 0.5);
  console.log(`warm exec('true'), ${iterations} calls each, Node ${process.version}`);
  console.log('| client | p50 ms | p90 ms | p99 ms |');
  console.log('|---|---|---|---|');
  console.log(row('bare fetch', 'bare'));
  console.log(row('@sandpit/sdk', 'sdk'));
  console.log(
    `SDK p50 - bare p50 = ${delta.toFixed(3)} ms (target <= 0.3 ms): ${delta <= 0.3 ? 'met' : 'NOT met'}`,
  );
} finally {
  await sandbox.destroy();
}
