// A Worker written for the seed system (@cloudflare/sandbox), as its guides write them: one
// sandbox per user, files, commands with streamed output, a background server on a port,
// the code interpreter, and typed errors. test/porting.test.mjs checks that
// sandpit-worker.mjs differs from this file in exactly two lines.
import { getSandbox, FileNotFoundError } from '@cloudflare/sandbox';

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const userId = url.searchParams.get('user') ?? 'user-123';
    const sandbox = getSandbox(env.Sandbox, userId, { sleepAfter: '5m' });
    const report = {};

    await sandbox.mkdir('/workspace/project/src', { recursive: true });
    await sandbox.writeFile('/workspace/project/src/main.py', 'print(sum(range(10)))\n');
    const run = await sandbox.exec('python3 src/main.py', { cwd: '/workspace/project' });
    report.sum = run.stdout.trim();

    let streamed = '';
    await sandbox.exec('for i in 1 2 3; do echo line $i; sleep 0.1; done', {
      stream: true,
      onOutput: (stream, data) => (streamed += stream === 'stdout' ? data : ''),
    });
    report.streamed = streamed;

    const file = await sandbox.readFile('/workspace/project/src/main.py');
    report.file = file.content;
    const listing = await sandbox.listFiles('/workspace/project/src');
    report.files = listing.files.map((f) => f.name);

    const server = await sandbox.startProcess('python3 -m http.server 8000', {
      cwd: '/workspace/project',
    });
    await server.waitForPort(8000, { timeout: 60000 });
    const fetched = await sandbox.exec('curl -s localhost:8000/src/main.py');
    report.served = fetched.stdout === file.content;
    const preview = await sandbox.exposePort(8000, { hostname: url.hostname });
    report.previewUrl = preview.url;
    await server.kill();

    const ctx = await sandbox.createCodeContext({ language: 'python' });
    await sandbox.runCode('import math; radius = 5', { context: ctx });
    const area = await sandbox.runCode('math.pi * radius ** 2', { context: ctx });
    report.area = area.results[0]?.text;

    try {
      await sandbox.readFile('/workspace/missing.txt');
    } catch (error) {
      report.missing = error instanceof FileNotFoundError ? error.code : 'untyped';
    }

    await sandbox.destroy();
    return Response.json(report);
  },
};
