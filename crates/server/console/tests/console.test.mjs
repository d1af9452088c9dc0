// The web console end to end in headless Chromium (the Debian package, driven by playwright-core:
// no browser download) against a real server with real sandboxes. Run by
// crates/cli/tests/suite/console.rs with SANDPIT_URL, SANDPIT_KEY, CHROMIUM and SCREENSHOTS set.
// Prints `METRIC name value` lines that the Rust test collects.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import WebSocket, { WebSocketServer } from "ws";

const url = process.env.SANDPIT_URL;
const key = process.env.SANDPIT_KEY;
const shots = process.env.SCREENSHOTS ?? "screenshots";
mkdirSync(shots, { recursive: true });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.95))];

// Shared with crates/cli/tests/suite/browser.rs.
const chromiumFlags = JSON.parse(readFileSync(new URL("./chromium-flags.json", import.meta.url)));

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: chromiumFlags.args,
  });
}

/** Console messages of type error and uncaught exceptions of `page`. */
function watchErrors(page) {
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** Baseline for the terminal echo: median round trip of a one-byte WebSocket message between
 * the same browser and a plain Node echo server on loopback (no sandpit in the path). */
async function browserWebSocketFloor(browser) {
  const http = createServer((_req, res) => res.end("<!doctype html><title>echo</title>"));
  const wss = new WebSocketServer({ server: http });
  wss.on("connection", (ws) => ws.on("message", (data) => ws.send(data)));
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  const { port } = http.address();
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${port}/`);
    return await page.evaluate(
      (port) =>
        new Promise((resolve) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
          ws.binaryType = "arraybuffer";
          const samples = [];
          let t0 = 0;
          const send = () => {
            t0 = performance.now();
            ws.send(new Uint8Array([120]));
          };
          ws.onopen = send;
          ws.onmessage = () => {
            samples.push(performance.now() - t0);
            if (samples.length < 30) setTimeout(send, 20);
            else resolve(samples);
          };
        }),
      port,
    );
  } finally {
    await page.close();
    wss.close();
    http.close();
  }
}

/** The same terminal echo without a browser: a Node WebSocket client on the sandbox's PTY
 * (its own session), one byte per round trip. What sandpit itself costs. */
async function nodePtyEcho(sandbox) {
  const ws = new WebSocket(
    `${url.replace("http", "ws")}/v1/sandboxes/${sandbox}/ws/pty?sessionId=echo-probe`,
    {
      headers: { authorization: `Bearer ${key}` },
    },
  );
  const samples = [];
  await new Promise((resolve, reject) => {
    let t0 = 0;
    const go = () => {
      t0 = performance.now();
      ws.send(Buffer.from("z"));
    };
    ws.on("error", reject);
    ws.on("message", (data, binary) => {
      if (!binary) {
        if (JSON.parse(data.toString()).type === "ready") setTimeout(go, 300);
      } else if (t0) {
        samples.push(performance.now() - t0);
        t0 = 0;
        if (samples.length < 30) setTimeout(go, 30);
        else resolve();
      }
    });
  });
  ws.close();
  return samples;
}

async function login(page) {
  await page.goto(`${url}/console/`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
}

/** The text of the terminal's rows, one string per row. */
async function terminalRows(page) {
  return page.locator("#terminal .xterm-rows > div").allTextContents();
}

test("console: log in, sandboxes, terminal, files, processes, preview link", async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
    const page = await context.newPage();
    const errors = watchErrors(page);
    page.on("dialog", (d) => d.accept());
    // Every API call carries the key as a header; no URL ever does (WebSockets use tickets).
    const requests = [];
    page.on("request", (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
    page.on("websocket", (ws) => requests.push({ url: ws.url(), auth: "websocket" }));
    // Test instrumentation: when each WebSocket message reaches the page (the echo's arrival,
    // before xterm.js renders it).
    await page.addInitScript(() => {
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener("message", () => {
            const e = window.__echo;
            if (e?.t0 && e.wire === undefined) e.wire = performance.now() - e.t0;
          });
        }
        send(data) {
          const e = window.__echo;
          if (e?.t0 && e.sent === undefined) e.sent = performance.now() - e.t0;
          return super.send(data);
        }
      };
    });

    // A wrong key is refused with a message and nothing is stored (no API call succeeds).
    await page.goto(`${url}/console/`);
    await page.screenshot({ path: `${shots}/01-login.png` });
    await page.getByLabel("API key").fill("sp_not_a_key");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.locator("#status.error").filter({ hasText: "UNAUTHORIZED" }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("sandpit.key")), null);
    // That 401 is the one console error we caused on purpose.
    assert.ok(
      errors.every((e) => e.includes("401")),
      errors.join("\n"),
    );
    errors.length = 0;

    await login(page);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("sandpit.key")), key);

    // Create: the row appears and turns running.
    await page.getByLabel("Sandbox ID").fill("console1");
    await page.getByRole("button", { name: "Create sandbox" }).click();
    const row = page.locator('tr[data-id="console1"]');
    await row.locator('[data-state="running"]').waitFor({ timeout: 60_000 });

    // A change made elsewhere (another API client) shows up through GET /v1/events.
    const stop = await fetch(`${url}/v1/sandboxes/console1/stop`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(stop.status, 200);
    await row.locator('[data-state="sleeping"]').waitFor({ timeout: 10_000 });
    await page.screenshot({ path: `${shots}/02-sandboxes.png` });

    // First paint of the sandbox list after a load (the key is in session storage).
    const paints = [];
    for (let i = 0; i < 7; i++) {
      await page.reload();
      await page.locator('tr[data-id="console1"]').waitFor();
      const mark = await page.waitForFunction(
        () => performance.getEntriesByName("sandpit:sandbox-list")[0]?.startTime,
      );
      paints.push(await mark.jsonValue());
    }
    console.log(`METRIC console_first_paint_ms_p50 ${median(paints).toFixed(1)}`);
    console.log(`METRIC console_first_paint_ms_max ${Math.max(...paints).toFixed(1)}`);

    // The sandbox page: the terminal attaches (waking the sandbox).
    await page.getByRole("link", { name: "console1" }).click();
    await page.locator("#terminal-state", { hasText: /^connected$/ }).waitFor({ timeout: 60_000 });
    await page.locator("#terminal .xterm-screen").click();
    await page.keyboard.type("echo hello\n");
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("#terminal .xterm-rows > div")].some(
          (r) => r.textContent.trim() === "hello",
        ),
      null,
      { timeout: 20_000 },
    );

    // Keystroke echo: from the keydown in the page to the echoed character painted in the DOM.
    await page.evaluate(() => {
      const rows = document.querySelector("#terminal .xterm-rows");
      window.__echo = { samples: [], wires: [], sends: [], t0: 0 };
      // Capture on window: before xterm.js's own handler on its textarea sends the key.
      window.addEventListener(
        "keydown",
        () =>
          Object.assign(window.__echo, { t0: performance.now(), wire: undefined, sent: undefined }),
        true,
      );
      // Only a mutation that shows one more `x` is the echo (not the cursor blinking).
      const xs = () => (rows.textContent.match(/x/g) ?? []).length;
      let shown = xs();
      new MutationObserver(() => {
        const e = window.__echo;
        const now = xs();
        if (now <= shown) return;
        shown = now;
        if (e.t0 && e.wire !== undefined) {
          e.samples.push(performance.now() - e.t0);
          e.wires.push(e.wire);
          e.sends.push(e.sent ?? NaN);
          e.t0 = 0;
        }
      }).observe(rows, { childList: true, subtree: true, characterData: true });
    });
    // Keys 100 ms apart, nothing polling the page meanwhile (waitForFunction polls on every
    // animation frame, which would compete with the page for its main thread).
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press("x");
      await new Promise((r) => setTimeout(r, 100));
    }
    const { samples: echo, wires, sends } = await page.evaluate(() => window.__echo);
    assert.ok(echo.length >= 25, `keys echoed: ${echo.length} of 30`);
    await page.keyboard.press("Control+U");
    // Keydown to the echo painted (what a person sees), and to the echo's WebSocket message.
    console.log(`METRIC terminal_echo_ms_p50 ${median(echo).toFixed(1)}`);
    console.log(`METRIC terminal_echo_ms_p95 ${p95(echo).toFixed(1)}`);
    console.log(`METRIC terminal_echo_wire_ms_p50 ${median(wires).toFixed(1)}`);
    console.log(`METRIC terminal_echo_wire_ms_p95 ${p95(wires).toFixed(1)}`);
    // Of which: keydown until xterm.js hands the key to the WebSocket.
    console.log(`METRIC terminal_key_to_send_ms_p50 ${median(sends).toFixed(1)}`);
    const direct = await nodePtyEcho("console1");
    console.log(`METRIC terminal_echo_node_client_ms_p50 ${median(direct).toFixed(2)}`);
    const floor = await browserWebSocketFloor(browser);
    console.log(`METRIC browser_ws_echo_baseline_ms_p50 ${median(floor).toFixed(1)}`);

    // Reconnect with replay: a reload re-attaches and the earlier output is replayed.
    await page.reload();
    await page.locator("#terminal-state", { hasText: /^connected$/ }).waitFor({ timeout: 30_000 });
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("#terminal .xterm-rows > div")].some(
          (r) => r.textContent.trim() === "hello",
        ),
      null,
      { timeout: 10_000 },
    );

    // Upload a file; it is listed and can be viewed.
    await page.getByLabel("Upload files").setInputFiles({
      name: "hello.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("hello from the console\n"),
    });
    await page.getByRole("button", { name: "Upload", exact: true }).click();
    await page.locator('tr[data-name="hello.txt"]').waitFor();
    await page.getByRole("button", { name: "View hello.txt" }).click();
    await page.locator("#file-view pre", { hasText: "hello from the console" }).waitFor();
    // Download gives the same bytes.
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("button", { name: "Download hello.txt" }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "hello.txt");
    assert.equal(readFileSync(await download.path(), "utf8"), "hello from the console\n");
    // An image is shown as one; deleting removes it from the list.
    await page.getByLabel("Upload files").setInputFiles({
      name: "shot.png",
      mimeType: "image/png",
      buffer: await page.screenshot({ clip: { x: 0, y: 0, width: 64, height: 32 } }),
    });
    await page.getByRole("button", { name: "Upload", exact: true }).click();
    await page.getByRole("button", { name: "View shot.png" }).click();
    const img = page.locator('#file-view img[alt="shot.png"]');
    await img.waitFor();
    await page.waitForFunction(() => document.querySelector("#file-view img")?.naturalWidth === 64);
    await page.getByRole("button", { name: "Delete shot.png" }).click();
    await page.locator('tr[data-name="shot.png"]').waitFor({ state: "detached" });

    // Resizing the window resizes the terminal: the shell sees the new size.
    const sttySize = async (n) => {
      await page.locator("#terminal .xterm-screen").click();
      await page.keyboard.type(`echo "size${n} $(stty size)"\n`);
      const row = await page.waitForFunction(
        (n) =>
          [...document.querySelectorAll("#terminal .xterm-rows > div")]
            .map((r) => r.textContent.trim())
            .find((t) => new RegExp(`^size${n} \\d+ \\d+$`).test(t)),
        n,
      );
      return (await row.jsonValue()).split(" ").slice(1).join(" ");
    };
    const before = await sttySize(1);
    await page.setViewportSize({ width: 1000, height: 700 });
    await page.waitForTimeout(300);
    const after = await sttySize(2);
    assert.notEqual(after, before, `stty size stayed ${before}`);
    await page.setViewportSize({ width: 1366, height: 800 });

    // The network policy is edited in place.
    await page.getByLabel("Mode").selectOption("allowlist");
    await page.getByLabel("Allow (comma-separated)").fill("example.com, *.example.org");
    await page.getByRole("button", { name: "Save policy" }).click();
    await page.locator("#status", { hasText: "Network policy saved" }).waitFor();
    const info = await (
      await fetch(`${url}/v1/sandboxes/console1`, { headers: { authorization: `Bearer ${key}` } })
    ).json();
    assert.deepEqual(info.network, { mode: "allowlist", allow: ["example.com", "*.example.org"] });

    // Stop from the sandbox page: the terminal says the sandbox sleeps and does not wake it.
    await page.getByRole("button", { name: "Stop", exact: true }).click();
    await page.locator("#terminal-state", { hasText: "asleep" }).waitFor({ timeout: 10_000 });
    await page.waitForTimeout(2500);
    const slept = await fetch(`${url}/v1/sandboxes/console1`, {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal((await slept.json()).state, "sleeping");
    // Reconnecting wakes it.
    await page.getByRole("button", { name: "Reconnect" }).click();
    await page.locator("#terminal-state", { hasText: /^connected$/ }).waitFor({ timeout: 30_000 });

    // A process serving the workspace, its logs, and a preview link to it.
    await page.getByLabel("Command").fill("python3 -u -m http.server 8080");
    await page.getByRole("button", { name: "Start process" }).click();
    await page.locator("#process-logs", { hasText: "Serving HTTP" }).waitFor({ timeout: 30_000 });
    await page.getByLabel("Port", { exact: true }).fill("8080");
    await page.getByLabel("Name", { exact: true }).fill("web");
    await page.getByRole("button", { name: "Expose port" }).click();
    const link = page.locator('tr[data-port="8080"] a.preview');
    await link.waitFor();
    assert.match(
      await link.getAttribute("href"),
      /^http:\/\/8080-console1-[0-9a-f]{12}-[a-z0-9_]+\.localhost:\d+\/$/,
    );
    await page.screenshot({ path: `${shots}/03-sandbox.png`, fullPage: true });
    const [preview] = await Promise.all([context.waitForEvent("page"), link.click()]);
    await preview.waitForLoadState();
    await preview.getByText("hello.txt").waitFor({ timeout: 10_000 });
    await preview.screenshot({ path: `${shots}/04-preview.png` });
    await preview.close();
    // The server's access log reached the process logs through the live stream.
    await page.locator("#process-logs", { hasText: "GET / HTTP" }).waitFor({ timeout: 10_000 });

    // Stop and destroy from the list.
    await page.getByRole("link", { name: "← All sandboxes" }).click();
    await page.getByRole("button", { name: "Stop console1" }).click();
    await page.locator('tr[data-id="console1"] [data-state="sleeping"]').waitFor();
    await page.getByRole("button", { name: "Destroy console1" }).click();
    await page.locator('tr[data-id="console1"]').waitFor({ state: "detached" });

    assert.deepEqual(errors, [], "no console errors");
    const api = requests.filter((r) => new URL(r.url).pathname.startsWith("/v1/"));
    assert.ok(api.length > 20, `only ${api.length} API requests seen`);
    assert.ok(api.some((r) => r.auth === "websocket" && r.url.includes("ticket=wst_")));
    for (const r of requests) assert.ok(!r.url.includes(key), `key in a URL: ${r.url}`);
    for (const r of api.filter((r) => r.auth !== "websocket")) {
      // The one refused login attempt used the wrong key on purpose.
      assert.ok(r.auth === `Bearer ${key}` || r.auth === "Bearer sp_not_a_key", r.url);
    }
  } finally {
    await browser.close();
  }
});

test("console: the key stays in the tab; logging out forgets it", async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = watchErrors(page);
    await login(page);
    // Not in localStorage or cookies: only this tab's session storage.
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(await context.cookies(), []);
    // Another tab has its own session storage: it must log in.
    const other = await context.newPage();
    await other.goto(`${url}/console/`);
    await other.getByLabel("API key").waitFor();
    // Keyboard only: tab to the create form and submit with Enter.
    await page.getByLabel("Sandbox ID").focus();
    await page.keyboard.type("console2");
    await page.keyboard.press("Enter");
    await page
      .locator('tr[data-id="console2"] [data-state="running"]')
      .waitFor({ timeout: 60_000 });
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByLabel("API key").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("sandpit.key")), null);
    const gone = await fetch(`${url}/v1/sandboxes/console2`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(gone.status, 204);
    assert.deepEqual(errors, [], "no console errors");
  } finally {
    await browser.close();
  }
});
