import net from 'node:net';
import { SandboxClient, parseSSEStream } from '@cloudflare/sandbox';
const sock = process.argv[2];
const server = net.createServer(c => { const u = net.connect(sock); c.pipe(u); u.pipe(c); u.on('error', () => c.destroy()); c.on('error', () => u.destroy()); });
await new Promise(r => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const client = new SandboxClient({ baseUrl: `http://127.0.0.1:${port}`, defaultHeaders: { 'X-Sandbox-Id': 'my-sandbox' } });
const out = {};
const check = (name, cond, detail) => { out[name] = cond ? 'ok' : ('FAIL ' + JSON.stringify(detail)); };
await client.utils.ping();
const cs = await client.utils.createSession({ id: 'sandbox-default', env: { FOO: 'bar' }, cwd: '/tmp' });
check('createSession', cs.success, cs);
try { await client.utils.createSession({ id: 'sandbox-default' }); check('dupSession', false, 'no throw'); }
catch (e) { check('dupSession', e.code === 'SESSION_ALREADY_EXISTS' && e.httpStatus === 409, {name: e.name, code: e.code}); }
const r = await client.commands.execute('echo $FOO $A; pwd', 'sandbox-default', { timeoutMs: 5000, env: { A: '1' }, cwd: '/' });
check('execute', r.stdout === 'bar 1\n/\n' && r.exitCode === 0 && r.success, r);
const evs = [];
for await (const ev of parseSSEStream(await client.commands.executeStream('echo hi; echo e >&2', 'sandbox-default'))) evs.push(ev.type + ':' + (ev.data ?? ev.exitCode ?? ''));
check('stream', JSON.stringify(evs) === JSON.stringify(['start:', 'stdout:hi\n', 'stderr:e\n', 'complete:0']), evs);
await client.files.writeFile('/tmp/cf-a.txt', 'hello', 'sandbox-default', { encoding: 'utf-8' });
const rf = await client.files.readFile('/tmp/cf-a.txt', 'sandbox-default');
check('readFile', rf.content === 'hello' && rf.encoding === 'utf-8', rf);
const lf = await client.files.listFiles('/tmp', 'sandbox-default', { recursive: false });
check('listFiles', lf.files.some(f => f.name === 'cf-a.txt'), lf.count);
const ex = await client.files.exists('/tmp/cf-a.txt', 'sandbox-default');
check('exists', ex.exists === true, ex);
await client.files.mkdir('/tmp/cf-dir/x', 'sandbox-default', { recursive: true });
await client.files.renameFile('/tmp/cf-a.txt', '/tmp/cf-b.txt', 'sandbox-default');
await client.files.moveFile('/tmp/cf-b.txt', '/tmp/cf-dir/x/c.txt', 'sandbox-default');
await client.files.deleteFile('/tmp/cf-dir/x/c.txt', 'sandbox-default');
try { await client.files.readFile('/tmp/nope-nope', 'sandbox-default'); check('notFound', false, 'no throw'); }
catch (e) { check('notFound', e.name === 'FileNotFoundError' && e.code === 'FILE_NOT_FOUND', {name: e.name, code: e.code}); }
try { await client.commands.execute('exit 3', 'sandbox-default'); check('terminated', false, 'no throw'); }
catch (e) { check('terminated', e.code === 'SESSION_TERMINATED', {name: e.name, code: e.code, status: e.httpStatus}); }
try { await client.commands.execute('sleep 2', 'sandbox-default', { timeoutMs: 200 }); check('timeout', false, 'no throw'); }
catch (e) { check('timeout', /timeout/i.test(e.message) && e.httpStatus === 500, {name: e.name, code: e.code, m: e.message}); }
const sl = await client.commands.execute('sleep 2', '__DISABLE_SESSION__', { timeoutMs: 200 });
check('sessionlessTimeout', sl.exitCode === 124, sl);

const del = await client.utils.deleteSession?.('sandbox-default');
check('deleteSession', !del || del.success, del);
const v = await client.utils.getVersion?.();
check('version', v === undefined || typeof v === 'string', v);
console.log(JSON.stringify(out, null, 1));
server.close();
process.exit(0);
