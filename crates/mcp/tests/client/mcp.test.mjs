// Drives sandpit's MCP server with the official MCP TypeScript SDK client, over stdio
// (`sandpit mcp`) and over streamable HTTP (`/mcp` on the server), against a real server.
// Run by crates/cli/tests/suite/mcp.rs with SANDPIT_URL, SANDPIT_KEY (admin) and SANDPIT_BIN.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const URL_ = process.env.SANDPIT_URL;
const KEY = process.env.SANDPIT_KEY;
const BIN = process.env.SANDPIT_BIN;
assert.ok(URL_ && KEY && BIN, "SANDPIT_URL, SANDPIT_KEY and SANDPIT_BIN must be set");

const TOOLS = [
  "create_sandbox",
  "destroy_sandbox",
  "edit_file",
  "exec",
  "expose_port",
  "list_files",
  "list_sandboxes",
  "process_logs",
  "read_file",
  "run_code",
  "start_process",
  "write_file",
];

const unique = (prefix) => `${prefix}-${randomBytes(4).toString("hex")}`;

async function connectStdio(key = KEY) {
  const client = new Client({ name: "sandpit-mcp-test", version: "1.0.0" });
  await client.connect(
    new StdioClientTransport({
      command: BIN,
      args: ["mcp"],
      env: { ...process.env, SANDPIT_URL: URL_, SANDPIT_KEY: key },
      stderr: "inherit",
    }),
  );
  return client;
}

function httpTransport(key) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  return new StreamableHTTPClientTransport(new URL(`${URL_}/mcp`), { requestInit: { headers } });
}

async function connectHttp(key = KEY) {
  const client = new Client({ name: "sandpit-mcp-test", version: "1.0.0" });
  await client.connect(httpTransport(key));
  return client;
}

/** A tenant of its own: a fresh API key made with the admin key. */
async function tenantKey(tenant) {
  const response = await fetch(`${URL_}/v1/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ tenant }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()).key;
}

/** A `tools/call` sent by hand, to put another key on an existing session. */
async function rawToolCall(sessionId, key, name, args) {
  const response = await fetch(`${URL_}/mcp`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${key}`,
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      "Mcp-Session-Id": sessionId,
      "MCP-Protocol-Version": "2025-11-25",
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/call", params: { name, arguments: args } }),
  });
  const body = await response.text();
  const message = body
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => {
      try {
        return JSON.parse(line.slice(5));
      } catch {
        return null;
      }
    })
    .find((m) => m?.id === 99);
  return { status: response.status, message, body };
}

const call = (client, name, args, options) =>
  client.callTool({ name, arguments: args }, undefined, { timeout: 120_000, ...options });

const text = (result) =>
  result.content
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("\n");

function ok(result, what) {
  assert.notEqual(result.isError, true, `${what} failed: ${text(result)}`);
  return result;
}

function toolError(result, code, what) {
  assert.equal(result.isError, true, `${what} should fail: ${text(result)}`);
  assert.equal(result.structuredContent?.code, code, `${what}: ${text(result)}`);
  assert.ok(text(result).startsWith(`${code}: `), text(result));
  return text(result);
}

async function eventually(what, probe, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const last = await probe();
    if (last.done) return last;
    assert.ok(Date.now() < deadline, `${what}: not after ${seconds} s (last: ${last.seen})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function listsTheTools(client) {
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOLS);
  for (const tool of tools) {
    assert.ok(tool.description.length > 40, `${tool.name} has a real description`);
    assert.equal(tool.inputSchema.type, "object");
    if (!["create_sandbox", "list_sandboxes"].includes(tool.name)) {
      assert.ok(tool.inputSchema.required.includes("sandbox_id"), `${tool.name} takes sandbox_id`);
    }
  }
  const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
  assert.ok(byName.exec.inputSchema.required.includes("command"));
  assert.deepEqual(byName.run_code.inputSchema.required.sort(), ["code", "language", "sandbox_id"]);
  assert.ok(byName.write_file.inputSchema.required.includes("content"));
  assert.ok(byName.read_file.inputSchema.required.includes("path"));
}

/** Every tool against the real server, checking what comes back. */
async function everyTool(client, id) {
  const created = ok(await call(client, "create_sandbox", { sandbox_id: id }), "create_sandbox");
  assert.equal(created.structuredContent.id, id);
  const listed = ok(await call(client, "list_sandboxes", {}), "list_sandboxes");
  assert.ok(listed.structuredContent.sandboxes.some((s) => s.id === id), text(listed));
  // A made-up id is an error with a hint, not a new sandbox.
  const typo = `${id}-typo`;
  const noSuch = await call(client, "exec", { sandbox_id: typo, command: "true" });
  assert.match(toolError(noSuch, "SANDBOX_NOT_FOUND", "exec in a missing sandbox"), /create_sandbox/);
  const relisted = ok(await call(client, "list_sandboxes", {}), "list_sandboxes");
  assert.ok(!relisted.structuredContent.sandboxes.some((s) => s.id === typo), text(relisted));

  // Files: write, read, edit (and its clear failures), list.
  const path = "/workspace/hello.py";
  ok(await call(client, "write_file", { sandbox_id: id, path, content: 'print("hi")\n' }), "write");
  assert.equal(text(await call(client, "read_file", { sandbox_id: id, path })), 'print("hi")\n');
  const edit = (old_string, new_string, extra = {}) =>
    call(client, "edit_file", { sandbox_id: id, path, old_string, new_string, ...extra });
  ok(await edit('"hi"', '"hello"'), "edit_file");
  assert.match(toolError(await edit("nowhere", "x"), "VALIDATION_FAILED", "missing"), /not found/);
  ok(await call(client, "write_file", { sandbox_id: id, path: "/workspace/twice.txt", content: "x\nx\n" }), "w");
  const ambiguous = await call(client, "edit_file", {
    sandbox_id: id,
    path: "/workspace/twice.txt",
    old_string: "x",
    new_string: "y",
  });
  assert.match(toolError(ambiguous, "VALIDATION_FAILED", "ambiguous"), /occurs 2 times/);
  const files = ok(await call(client, "list_files", { sandbox_id: id, path: "/workspace" }), "ls");
  assert.match(text(files), /hello\.py/);
  const missing = await call(client, "read_file", { sandbox_id: id, path: "/workspace/nope" });
  toolError(missing, "FILE_NOT_FOUND", "read of a missing file");

  // exec: stdout, stderr, exit code; long output clipped and saved whole in the sandbox.
  const run = ok(
    await call(client, "exec", { sandbox_id: id, command: `python3 ${path}; echo oops >&2; exit 3` }),
    "exec",
  );
  assert.equal(run.structuredContent.exitCode, 3);
  assert.equal(run.structuredContent.stdout, "hello\n");
  assert.equal(run.structuredContent.stderr, "oops\n");
  assert.match(text(run), /exit code: 3/);
  const long = ok(await call(client, "exec", { sandbox_id: id, command: "seq 1 200000" }), "long");
  assert.ok(text(long).length < 40_000, `clipped: ${text(long).length} chars`);
  assert.match(text(long), /stdout truncated/);
  assert.match(long.structuredContent.stdout, /^1\n2\n/);
  assert.match(long.structuredContent.stdout, /200000\n$/);
  const saved = long.structuredContent.stdoutFile;
  assert.ok(saved && text(long).includes(saved), text(long).slice(-600));
  const count = ok(await call(client, "exec", { sandbox_id: id, command: `wc -l < ${saved}` }), "wc");
  assert.equal(count.structuredContent.stdout.trim(), "200000");

  // run_code: persistent state per language, images, errors.
  const py = (code) => call(client, "run_code", { sandbox_id: id, code, language: "python" });
  ok(await py("x = 21"), "python assignment");
  assert.match(text(ok(await py("x * 2"), "python state")), /42/);
  const plot = ok(
    await py("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"),
    "matplotlib",
  );
  const images = plot.content.filter((c) => c.type === "image");
  assert.equal(images.length, 1, JSON.stringify(plot.content).slice(0, 500));
  assert.equal(images[0].mimeType, "image/png");
  const png = Buffer.from(images[0].data, "base64");
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(png.length > 1000, `a real plot: ${png.length} bytes`);
  const html = ok(await py("import pandas as pd\npd.DataFrame({'a': [1, 2]})"), "html");
  assert.match(text(html), /<table/);
  const raised = await py("1 / 0");
  assert.equal(raised.isError, true);
  assert.match(text(raised), /ZeroDivisionError/);
  const js = (code, language = "javascript") =>
    call(client, "run_code", { sandbox_id: id, code, language });
  ok(await js("let y = 5"), "js declaration");
  assert.match(text(ok(await js("y * 3"), "js state")), /15/);
  assert.match(text(ok(await js("const z: number = y + 2; z", "typescript"), "ts")), /7/);

  // Background processes, their logs, and a preview URL for their port.
  const started = ok(
    await call(client, "start_process", {
      sandbox_id: id,
      process_id: "web",
      command: "echo serving; exec python3 -m http.server 8123",
    }),
    "start_process",
  );
  assert.equal(started.structuredContent.processId, "web");
  await eventually("process output", async () => {
    const logs = ok(await call(client, "process_logs", { sandbox_id: id, process_id: "web" }), "logs");
    return { done: /serving/.test(text(logs)) && /running/.test(text(logs)), seen: text(logs) };
  });
  const exposed = ok(await call(client, "expose_port", { sandbox_id: id, port: 8123 }), "expose");
  assert.equal(exposed.structuredContent.port, 8123);
  assert.match(exposed.structuredContent.url, /^https?:\/\/8123-/);
  assert.match(text(exposed), /8123/);
  const badPort = await call(client, "expose_port", { sandbox_id: id, port: 80 });
  toolError(badPort, "INVALID_PORT_NUMBER", "a privileged port");

  ok(await call(client, "destroy_sandbox", { sandbox_id: id }), "destroy_sandbox");
  const after = ok(await call(client, "list_sandboxes", {}), "list after destroy");
  assert.ok(!after.structuredContent.sandboxes.some((s) => s.id === id), text(after));
}

for (const [transport, connect] of [
  ["stdio: sandpit mcp", connectStdio],
  ["http: /mcp", connectHttp],
]) {
  test(`${transport} lists the tools and every tool works`, async () => {
    const client = await connect();
    try {
      await listsTheTools(client);
      await everyTool(client, unique(`mcp-${transport.slice(0, 4)}`));
    } finally {
      await client.close();
    }
  });
}

test("http: /mcp refuses a request without a valid API key", async () => {
  for (const key of [undefined, "sp_not-a-key"]) {
    const client = new Client({ name: "no-key", version: "1.0.0" });
    await assert.rejects(client.connect(httpTransport(key)), /401|nauthorized/);
  }
});

test("long runs report progress, and cancelling one stops the remote command or code", async () => {
  const client = await connectHttp();
  const id = unique("mcp-cancel");
  try {
    ok(await call(client, "create_sandbox", { sandbox_id: id }), "create");
    const progress = [];
    const abort = new AbortController();
    const running = call(
      client,
      "exec",
      { sandbox_id: id, command: "echo $BASHPID > /tmp/victim.pid; exec sleep 300" },
      {
        signal: abort.signal,
        onprogress: (p) => {
          progress.push(p);
          if (progress.length === 2) abort.abort("enough");
        },
      },
    );
    await assert.rejects(running, /enough|abort/i);
    assert.ok(progress.length >= 2, "progress notifications arrived");
    assert.ok(progress[1].progress > progress[0].progress, JSON.stringify(progress));
    // The sleep was the victim's pid (exec): it must be gone, not left running in the sandbox.
    await eventually("the cancelled command to stop", async () => {
      const probe = ok(
        await call(client, "exec", {
          sandbox_id: id,
          command: 'kill -0 "$(cat /tmp/victim.pid)" 2>/dev/null && echo alive || echo gone',
        }),
        "probe",
      );
      return { done: probe.structuredContent.stdout === "gone\n", seen: text(probe) };
    });
    // A cancelled run_code is interrupted: the loop stops ticking, the context lives on.
    const ticking = new AbortController();
    const loop = call(
      client,
      "run_code",
      {
        sandbox_id: id,
        language: "python",
        code: "import time\nn = 0\nwhile True:\n    n += 1\n    open('/tmp/tick', 'w').write(str(n))\n    time.sleep(0.05)",
      },
      { signal: ticking.signal, onprogress: () => ticking.abort("stop the loop") },
    );
    await assert.rejects(loop, /stop the loop|abort/i);
    const tick = async () =>
      ok(await call(client, "exec", { sandbox_id: id, command: "cat /tmp/tick" }), "tick")
        .structuredContent.stdout;
    await eventually("the cancelled loop to stop", async () => {
      const before = await tick();
      await new Promise((r) => setTimeout(r, 500));
      const after = await tick();
      return { done: Number(before) > 0 && before === after, seen: `${before} then ${after}` };
    });
    const kept = ok(await call(client, "run_code", { sandbox_id: id, code: "n > 0", language: "python" }), "n");
    assert.match(text(kept), /True/);
  } finally {
    await call(client, "destroy_sandbox", { sandbox_id: id });
    await client.close();
  }
});

test("a tenant's key cannot see or touch another tenant's sandboxes through MCP", async () => {
  const admin = new Client({ name: "sandpit-mcp-test", version: "1.0.0" });
  const adminTransport = httpTransport(KEY);
  await admin.connect(adminTransport);
  const id = unique("mcp-private");
  const secret = `secret-${randomBytes(8).toString("hex")}`;
  ok(await call(admin, "create_sandbox", { sandbox_id: id }), "create");
  ok(await call(admin, "write_file", { sandbox_id: id, path: "/workspace/s.txt", content: secret }), "w");
  const otherKey = await tenantKey(unique("mcp-tenant"));
  for (const other of [await connectHttp(otherKey), await connectStdio(otherKey)]) {
    try {
      const listed = ok(await call(other, "list_sandboxes", {}), "other's list");
      assert.ok(!listed.structuredContent.sandboxes.some((s) => s.id === id), text(listed));
      assert.ok(!text(listed).includes(id));
      toolError(
        await call(other, "destroy_sandbox", { sandbox_id: id }),
        "SANDBOX_NOT_FOUND",
        "destroying another tenant's sandbox",
      );
      for (const [tool, args] of [
        ["read_file", { path: "/workspace/s.txt" }],
        ["exec", { command: "cat /workspace/s.txt" }],
        ["write_file", { path: "/workspace/s.txt", content: "overwritten" }],
        ["run_code", { code: "open('/workspace/s.txt').read()", language: "python" }],
        ["list_files", { path: "/workspace" }],
        ["process_logs", { process_id: "web" }],
        ["expose_port", { port: 8000 }],
      ]) {
        const result = await call(other, tool, { sandbox_id: id, ...args });
        toolError(result, "SANDBOX_NOT_FOUND", `${tool} on another tenant's sandbox`);
        assert.ok(!JSON.stringify(result).includes(secret), `${tool} leaked the secret`);
      }
      // And nothing was created under that id for the other tenant either.
      const relisted = ok(await call(other, "list_sandboxes", {}), "other's list");
      assert.ok(!relisted.structuredContent.sandboxes.some((s) => s.id === id), text(relisted));
    } finally {
      await other.close();
    }
  }
  // Nor by putting its key on the admin's MCP session.
  assert.ok(adminTransport.sessionId, "the HTTP transport has a session");
  const hijack = await rawToolCall(adminTransport.sessionId, otherKey, "list_sandboxes", {});
  assert.equal(hijack.status, 200, hijack.body);
  assert.equal(hijack.message?.result?.isError, true, hijack.body);
  assert.equal(hijack.message.result.structuredContent.code, "PERMISSION_DENIED", hijack.body);
  assert.ok(!hijack.body.includes(id), hijack.body);
  const mine = ok(await call(admin, "read_file", { sandbox_id: id, path: "/workspace/s.txt" }), "r");
  assert.equal(text(mine), secret);
  ok(await call(admin, "destroy_sandbox", { sandbox_id: id }), "destroy");
  await admin.close();
});
