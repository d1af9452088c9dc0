// Test harness: drives the Node executor over its fd 3 (requests) and fd 4 (events).
// Usage: node harness.js <executor.js>  with a JSON array of steps on stdin:
//   [{"request": {...}, "interruptAfterMs": 200}, ...]
// Prints one JSON object: {"ready": ms, "steps": [[event + {"t": ms since the request}]],
// "stdout": .., "stderr": ..}. Every step ends with the executor's `done` event.
'use strict';

const { spawn } = require('node:child_process');

const executorPath = process.argv[2];
const steps = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const started = Date.now();
// Started the way the agent starts it: the script as `node -e` code.
const executorSource = require('node:fs').readFileSync(executorPath, 'utf8');
const child = spawn(process.execPath, ['-e', executorSource], {
  stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
});
const transcript = { ready: null, steps: [], stdout: '', stderr: '' };
child.stdout.on('data', (d) => { transcript.stdout += d; });
child.stderr.on('data', (d) => { transcript.stderr += d; });

const guard = setTimeout(() => {
  transcript.timedOut = true;
  child.kill('SIGKILL');
  process.stdout.write(JSON.stringify(transcript));
  process.exit(2);
}, Number(process.env.HARNESS_TIMEOUT_MS || 20000));

let waiter = null;
let current = null;
let stepStart = 0;
let buffered = '';
child.stdio[4].setEncoding('utf8');
child.stdio[4].on('data', (chunk) => {
  buffered += chunk;
  let newline;
  while ((newline = buffered.indexOf('\n')) !== -1) {
    const event = JSON.parse(buffered.slice(0, newline));
    buffered = buffered.slice(newline + 1);
    if (event.type === 'ready') {
      transcript.ready = Date.now() - started;
      if (waiter) waiter();
      continue;
    }
    if (current) {
      current.push({ ...event, t: Date.now() - stepStart });
      if (event.type === 'done' && waiter) waiter();
    }
  }
});

function next() {
  return new Promise((resolve) => { waiter = resolve; });
}

(async () => {
  if (transcript.ready === null) await next();
  for (const step of steps) {
    current = [];
    stepStart = Date.now();
    const done = next();
    child.stdio[3].write(JSON.stringify(step.request) + '\n');
    if (step.interruptAfterMs !== undefined) {
      setTimeout(() => child.kill('SIGINT'), step.interruptAfterMs);
    }
    await done;
    transcript.steps.push(current);
  }
  current = null;
  child.stdio[3].end();
  await new Promise((resolve) => child.on('exit', resolve));
  transcript.exit = child.exitCode;
  clearTimeout(guard);
  process.stdout.write(JSON.stringify(transcript));
})();
