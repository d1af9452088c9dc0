// SDK overhead (issue 12 target: warm exec('true') through the SDK within 0.3 ms p50 of the
// same call made with a bare HTTP client in the same run). Both clients use Node's fetch (one
// keep-alive pool) against the same warm sandbox; calls alternate SDK / bare so load on the
// machine hits both alike.
//
//   SANDPIT_URL=... SANDPIT_KEY=... node bench/exec-overhead.mjs [iterations]
//   node bench/exec-overhead.mjs [iterations] --stub
//   ... --json: one JSON line `{"sdk": [ms...], "bare": [ms...]}` instead of the table (what
//   sandpit-bench reads for its SDK rows)
//
// `--stub` runs both clients against an in-process HTTP server that answers every call with a
// canned result at once: no sandbox, so what remains is the clients' own cost, free of the
// command's run time and its noise.

import { connect, getSandbox } from '../dist/index.js';

import http from 'node:http';

const stub = process.argv.includes('--stub');
const asJson = process.argv.includes('--json');
const iterations = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 500);
const stubServer = stub ? await startStub() : undefined;
const url = stubServer ? stubServer.url : process.env.SANDPIT_URL;
const key = stubServer ? 'stub' : process.env.SANDPIT_KEY;
if (!url || !key) throw new Error('set SANDPIT_URL and SANDPIT_KEY (or pass --stub)');

/** A server answering create-or-get, exec and destroy at once with canned bodies. */
async function startStub() {
  const result = JSON.stringify({
    success: true,
    exitCode: 0,
    stdout: '',
    stderr: '',
    command: 'true',
    duration: 0,
    timestamp: new Date().toISOString(),
  });
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method === 'DELETE') return res.writeHead(204).end();
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(req.url === '/v1/sandboxes' ? '{}' : result);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${port}`, close: () => server.close() };
}

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
  if (asJson) {
    console.log(JSON.stringify(times));
  } else {
    const row = (label, name) =>
      `| ${label} | ${[0.5, 0.9, 0.99].map((q) => quantile(times[name], q).toFixed(3)).join(' | ')} |`;
    const delta = quantile(times.sdk, 0.5) - quantile(times.bare, 0.5);
    console.log(
      `warm exec('true') ${stub ? 'against an in-process stub server' : `against ${url}`}, ${iterations} calls each, Node ${process.version}`,
    );
    console.log('| client | p50 ms | p90 ms | p99 ms |');
    console.log('|---|---|---|---|');
    console.log(row('bare fetch', 'bare'));
    console.log(row('@sandpit/sdk', 'sdk'));
    console.log(
      `SDK p50 - bare p50 = ${delta.toFixed(3)} ms (target <= 0.3 ms): ${delta <= 0.3 ? 'met' : 'NOT met'}`,
    );
  }
} finally {
  await sandbox.destroy();
  stubServer?.close();
  // Node's fetch keeps idle connections open for a while; don't wait for them.
  setTimeout(() => process.exit(0), 100).unref();
}
