// sandpit web console: a client of the public API only (the same bearer keys as every SDK).
// The key lives in sessionStorage (gone when the tab closes); every call sends it as
// `Authorization: Bearer`, WebSockets use single-use tickets (never the key in a URL).
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";

const KEY = "sandpit.key";
const app = document.getElementById("app") as HTMLElement;
const statusEl = document.getElementById("status") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;

// ---- small helpers --------------------------------------------------------------------------

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | EventListener | undefined>;

function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

/** A table with column headers over `body`. */
function table(label: string, headers: string[], body: HTMLElement): HTMLElement {
  return h(
    "table",
    { "aria-label": label },
    h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
}

/** A titled section of the sandbox page. */
function section(id: string, title: Child | Child[], ...children: Child[]): HTMLElement {
  const heading = h("h2", { id: `${id}-h` }, ...(Array.isArray(title) ? title : [title]));
  return h("section", { "aria-labelledby": `${id}-h` }, heading, ...children);
}

/** A one-line form; `submit` runs with the default action prevented. */
function inlineForm(label: string, submit: () => unknown, ...children: Child[]): HTMLElement {
  const onsubmit = ((e: Event) => {
    e.preventDefault();
    void submit();
  }) as EventListener;
  return h("form", { class: "inline", "aria-label": label, onsubmit }, ...children);
}

function say(message: string, error = false): void {
  statusEl.textContent = message;
  statusEl.className = error ? "error" : "";
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function key(): string | null {
  return sessionStorage.getItem(KEY);
}

async function call(
  method: string,
  path: string,
  body?: unknown,
  raw?: BodyInit,
): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${key() ?? ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body !== undefined ? JSON.stringify(body) : raw,
  });
  if (!response.ok) {
    let code = `HTTP_${response.status}`;
    let message = response.statusText;
    try {
      const e = await response.json();
      code = e.code ?? code;
      message = e.message ?? message;
    } catch {
      // not a JSON error body
    }
    if (response.status === 401) logout(`${code}: ${message}`);
    throw new ApiError(response.status, code, message);
  }
  return response;
}

async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await call(method, path, body);
  return (await response.json()) as T;
}

/** Runs `f`, reporting an error in the status line instead of throwing. */
async function attempt<T>(what: string, f: () => Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    const m = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
    say(`${what} failed: ${m}`, true);
    return undefined;
  }
}

/** Reads a server-sent event stream from `response`; calls `on(event, data)` per event. */
async function readSse(
  response: Response,
  on: (event: string, data: string) => void,
): Promise<void> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (data.length) on(event, data.join("\n"));
        event = "message";
        data = [];
      } else if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
  }
}

const sandboxPath = (id: string) => `/v1/sandboxes/${encodeURIComponent(id)}`;

function when(iso: string | undefined): string {
  if (!iso) return "";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

// ---- login ----------------------------------------------------------------------------------

function logout(reason?: string): void {
  sessionStorage.removeItem(KEY);
  events.stop();
  // No hashchange event (its handler would clear the reason shown below).
  history.replaceState(null, "", "#/");
  render();
  if (reason) say(`Logged out: ${reason}`, true);
}

function loginView(): void {
  nav.replaceChildren();
  const input = h("input", {
    id: "key",
    type: "password",
    name: "key",
    autocomplete: "off",
    required: true,
  }) as HTMLInputElement;
  const form = h(
    "form",
    {
      onsubmit: (async (e: Event) => {
        e.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        const ok = await attempt("Log in", () => api("GET", "/v1/quota"));
        if (ok) {
          say("");
          render();
        } else sessionStorage.removeItem(KEY);
      }) as EventListener,
    },
    h("label", { for: "key" }, "API key"),
    input,
    h("button", { type: "submit" }, "Log in"),
  );
  app.replaceChildren(
    h(
      "section",
      { class: "login" },
      h("h1", {}, "Log in"),
      h("p", { class: "muted" }, "The key is kept in this tab's session storage only."),
      form,
    ),
  );
  input.focus();
}

// ---- the event stream (GET /v1/events) ------------------------------------------------------

type SandboxEvent = { seq: number; sandboxId: string; kind: string; state: string; at: string };

const events = {
  controller: null as AbortController | null,
  listeners: new Set<(e: SandboxEvent | null) => void>(),
  start(): void {
    if (this.controller) return;
    const controller = new AbortController();
    this.controller = controller;
    const loop = async () => {
      while (!controller.signal.aborted) {
        try {
          const response = await fetch("/v1/events", {
            headers: { authorization: `Bearer ${key() ?? ""}` },
            signal: controller.signal,
          });
          if (response.status === 401) return logout("the key was refused");
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          await readSse(response, (event, data) => {
            // `lagged` (or a reconnect) means missed changes: listeners reload (null).
            if (event === "sandbox") this.emit(JSON.parse(data));
            else if (event === "lagged" || event === "ready") this.emit(null);
          });
        } catch {
          if (controller.signal.aborted) return;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    void loop();
  },
  stop(): void {
    this.controller?.abort();
    this.controller = null;
  },
  emit(e: SandboxEvent | null): void {
    for (const l of this.listeners) l(e);
  },
};

/** Listens to events while the current view is shown. */
let viewCleanup: (() => void)[] = [];
function onEvent(f: (e: SandboxEvent | null) => void): void {
  events.listeners.add(f);
  viewCleanup.push(() => events.listeners.delete(f));
}

// ---- sandbox list ---------------------------------------------------------------------------

type Sandbox = {
  id: string;
  image: string;
  state: string;
  lastActiveAt: string;
  createdAt: string;
  limits: { cpuMillis?: number; memoryMb?: number; diskMb?: number; pids?: number };
  network: { mode: string; allow: string[] };
  labels: Record<string, string>;
  keepAlive: boolean;
  sleepAfterSecs: number;
  isolation: string;
};

function stateBadge(state: string): HTMLElement {
  return h("span", { class: `state state-${state}`, "data-state": state }, state);
}

function limitsText(l: Sandbox["limits"]): string {
  const parts: string[] = [];
  if (l.cpuMillis) parts.push(`${l.cpuMillis / 1000} CPU`);
  if (l.memoryMb) parts.push(`${l.memoryMb} MiB`);
  if (l.diskMb) parts.push(`disk ${l.diskMb} MiB`);
  if (l.pids) parts.push(`${l.pids} pids`);
  return parts.join(", ");
}

async function stopSandbox(id: string): Promise<void> {
  if (await attempt("Stop", () => api("POST", `${sandboxPath(id)}/stop`))) say(`${id} stopped`);
}

async function destroySandbox(id: string): Promise<boolean> {
  if (!confirm(`Destroy sandbox ${id}? Its files are lost.`)) return false;
  const done = await attempt("Destroy", () => call("DELETE", sandboxPath(id)));
  if (done) say(`${id} destroyed`);
  return !!done;
}

function listView(): void {
  const body = h("tbody");
  const list = table(
    "sandboxes",
    ["ID", "State", "Image", "Last activity", "Limits", "Actions"],
    body,
  );
  const idInput = h("input", {
    id: "new-id",
    name: "id",
    placeholder: "optional",
    pattern: "[A-Za-z0-9\\-]{1,63}",
  }) as HTMLInputElement;
  const imageInput = h("input", {
    id: "new-image",
    name: "image",
    placeholder: "default",
  }) as HTMLInputElement;
  const create = inlineForm(
    "create a sandbox",
    async () => {
      const req: Record<string, string> = {};
      if (idInput.value.trim()) req.id = idInput.value.trim();
      if (imageInput.value.trim()) req.image = imageInput.value.trim();
      say("Creating…");
      const made = await attempt("Create", () => api<Sandbox>("POST", "/v1/sandboxes", req));
      if (made) {
        say(`${made.id} created`);
        idInput.value = "";
        await load();
      }
    },
    h("label", { for: "new-id" }, "Sandbox ID", idInput),
    h("label", { for: "new-image" }, "Image", imageInput),
    h("button", { type: "submit" }, "Create sandbox"),
  );
  const empty = h("p", { class: "muted", hidden: true }, "No sandboxes yet.");
  app.replaceChildren(h("h1", {}, "Sandboxes"), create, list, empty);

  let first = true;
  async function load(): Promise<void> {
    const list = await attempt("Listing sandboxes", () =>
      api<{ sandboxes: Sandbox[] }>("GET", "/v1/sandboxes?limit=500"),
    );
    if (!list) return;
    body.replaceChildren(
      ...list.sandboxes.map((s) =>
        h(
          "tr",
          { "data-id": s.id },
          h("td", {}, h("a", { href: `#/sandboxes/${encodeURIComponent(s.id)}` }, s.id)),
          h("td", { class: "state-cell" }, stateBadge(s.state)),
          h("td", {}, s.image),
          h("td", { class: "last-active" }, when(s.lastActiveAt)),
          h("td", {}, limitsText(s.limits)),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              {
                type: "button",
                "aria-label": `Stop ${s.id}`,
                onclick: () => void stopSandbox(s.id),
              },
              "Stop",
            ),
            h(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-label": `Destroy ${s.id}`,
                onclick: async () => {
                  if (await destroySandbox(s.id)) await load();
                },
              },
              "Destroy",
            ),
          ),
        ),
      ),
    );
    empty.hidden = list.sandboxes.length > 0;
    if (first) {
      first = false;
      // The console's first paint of the list, for the performance test (User Timing).
      requestAnimationFrame(() => performance.mark("sandpit:sandbox-list"));
    }
  }
  let reload: number | undefined;
  onEvent((e) => {
    const row = e && body.querySelector<HTMLElement>(`tr[data-id="${CSS.escape(e.sandboxId)}"]`);
    if (e && row && (e.kind === "started" || e.kind === "stopped")) {
      row.querySelector(".state-cell")!.replaceChildren(stateBadge(e.state));
      row.querySelector(".last-active")!.textContent = when(e.at);
      return;
    }
    clearTimeout(reload);
    reload = window.setTimeout(() => void load(), 100);
  });
  void load();
}

// ---- one sandbox ----------------------------------------------------------------------------

function sandboxView(id: string): void {
  const stateEl = h("span", {}, "…");
  const info = h("dl", { "aria-label": "details" });
  const header = h(
    "div",
    {},
    h("h1", {}, `Sandbox ${id} `, stateEl),
    h(
      "div",
      { class: "actions" },
      h("a", { href: "#/" }, "← All sandboxes"),
      h("button", { type: "button", onclick: () => void stopSandbox(id) }, "Stop"),
      h(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: async () => {
            if (await destroySandbox(id)) location.hash = "#/";
          },
        },
        "Destroy",
      ),
    ),
  );
  const terminal = terminalSection(id);
  const files = filesSection(id);
  const processes = processesSection(id);
  const ports = portsSection(id);
  const network = section("network", "Network policy", h("div", { id: "network" }));
  app.replaceChildren(
    header,
    h(
      "div",
      { class: "grid" },
      h("div", {}, terminal, files),
      h("div", {}, h("section", {}, h("h2", {}, "Details"), info), processes, ports, network),
    ),
  );

  async function loadInfo(): Promise<void> {
    const s = await attempt("Loading the sandbox", () => api<Sandbox>("GET", sandboxPath(id)));
    if (!s) return;
    stateEl.replaceChildren(stateBadge(s.state));
    const rows: [string, string][] = [
      ["Image", s.image],
      ["Isolation", s.isolation],
      ["Limits", limitsText(s.limits)],
      ["Sleeps after", s.keepAlive ? "never (keepAlive)" : `${s.sleepAfterSecs} s idle`],
      ["Created", when(s.createdAt)],
      ["Last activity", when(s.lastActiveAt)],
      [
        "Labels",
        Object.entries(s.labels ?? {})
          .map(([k, v]) => `${k}=${v}`)
          .join(", ") || "none",
      ],
    ];
    info.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    networkForm(id, s.network, document.getElementById("network")!);
  }
  onEvent((e) => {
    if (e && e.sandboxId !== id) return;
    if (e?.kind === "destroyed") {
      say(`${id} was destroyed`);
      stateEl.replaceChildren(stateBadge("destroyed"));
      return;
    }
    if (e && (e.kind === "started" || e.kind === "stopped"))
      stateEl.replaceChildren(stateBadge(e.state));
    else void loadInfo();
  });
  void loadInfo();
}

function networkForm(id: string, policy: Sandbox["network"], where: HTMLElement): void {
  const mode = h(
    "select",
    { id: "net-mode", name: "mode" },
    ...["none", "allowlist", "full"].map((m) =>
      h("option", { value: m, selected: m === policy.mode }, m),
    ),
  ) as HTMLSelectElement;
  const allow = h("input", {
    id: "net-allow",
    name: "allow",
    value: policy.allow.join(", "),
    placeholder: "example.com, 10.1.0.0/16",
  }) as HTMLInputElement;
  where.replaceChildren(
    inlineForm(
      "network policy",
      async () => {
        const network = {
          mode: mode.value,
          allow: allow.value
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean),
        };
        if (await attempt("Network policy", () => api("PATCH", sandboxPath(id), { network })))
          say("Network policy saved");
      },
      h("label", { for: "net-mode" }, "Mode", mode),
      h("label", { for: "net-allow" }, "Allow (comma-separated)", allow),
      h("button", { type: "submit" }, "Save policy"),
    ),
  );
}

// ---- terminal (xterm.js over /ws/pty) -------------------------------------------------------

function terminalSection(id: string): HTMLElement {
  const host = h("div", { class: "terminal", id: "terminal" });
  const state = h("span", { class: "muted", id: "terminal-state" }, "connecting…");
  const reconnect = h(
    "button",
    {
      type: "button",
      hidden: true,
      onclick: () => {
        asleep = false;
        retries = 0;
        void connect();
      },
    },
    "Reconnect",
  );
  const view = section("terminal", ["Terminal ", state, " ", reconnect], host);
  const term = new Terminal({
    cursorBlink: true,
    fontSize: 14,
    scrollback: 5000,
    screenReaderMode: false,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  let ws: WebSocket | null = null;
  let closedByUs = false;
  let retries = 0;
  const encoder = new TextEncoder();

  term.onData((data) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onResize(({ cols, rows }) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });

  let connecting = false;
  async function connect(): Promise<void> {
    if (connecting || ws) return;
    connecting = true;
    reconnect.hidden = true;
    state.textContent = "connecting…";
    const ticket = await attempt("Terminal", () =>
      api<{ ticket: string }>("POST", `${sandboxPath(id)}/ws-ticket`),
    ).finally(() => (connecting = false));
    if (!ticket) {
      state.textContent = "disconnected";
      reconnect.hidden = false;
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({
      sessionId: "console",
      cols: String(term.cols),
      rows: String(term.rows),
      ticket: ticket.ticket,
    });
    const socket = new WebSocket(`${scheme}://${location.host}${sandboxPath(id)}/ws/pty?${q}`);
    socket.binaryType = "arraybuffer";
    ws = socket;
    // The agent replays the terminal's recent output on attach: start from a clean screen.
    term.reset();
    socket.onmessage = (m) => {
      if (m.data instanceof ArrayBuffer) {
        term.write(new Uint8Array(m.data));
        return;
      }
      const msg = JSON.parse(m.data);
      if (msg.type === "ready") {
        retries = 0;
        state.textContent = "connected";
        socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
      } else if (msg.type === "exit") {
        state.textContent = `shell exited (${msg.code})`;
      } else if (msg.type === "error") {
        say(`Terminal: ${msg.message}`, true);
      }
    };
    socket.onclose = () => {
      if (ws !== socket || closedByUs) return;
      ws = null;
      disconnected();
      // A dropped connection is retried a few times, then waits for a click. A sandbox that
      // went to sleep is not woken up by that: only by the button (or by whoever wakes it).
      if (retries++ < 3) setTimeout(() => asleep || ws || void connect(), 1000 * retries);
    };
  }

  function disconnected(): void {
    state.textContent = asleep ? "disconnected: the sandbox is asleep" : "disconnected";
    reconnect.hidden = false;
  }

  let asleep = false;
  onEvent((e) => {
    if (e?.sandboxId !== id) return;
    if (e.kind === "stopped") {
      asleep = true;
      if (!ws) disconnected();
    } else if (e.kind === "started") {
      asleep = false;
      // Woken elsewhere: attach again.
      if (!ws) {
        retries = 0;
        void connect();
      }
    }
  });

  requestAnimationFrame(() => {
    term.open(host);
    fit.fit();
    void connect();
  });
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  viewCleanup.push(() => {
    closedByUs = true;
    window.removeEventListener("resize", onResize);
    ws?.close();
    term.dispose();
  });
  return view;
}

// ---- files ----------------------------------------------------------------------------------

type FileInfo = {
  name: string;
  absolutePath: string;
  type: string;
  size: number;
  modifiedAt: string;
};

function filesSection(id: string): HTMLElement {
  let dir = "/workspace";
  const pathInput = h("input", { id: "files-path", name: "path", value: dir }) as HTMLInputElement;
  const list = h("tbody");
  const preview = h("div", { id: "file-view", "aria-live": "polite" });
  const upload = h("input", {
    id: "upload",
    type: "file",
    name: "upload",
    multiple: true,
  }) as HTMLInputElement;
  const raw = (path: string) => `${sandboxPath(id)}/files/${encodeURIComponent(path)}`;

  async function load(path = pathInput.value): Promise<void> {
    const r = await attempt("Listing files", () =>
      api<{ files: FileInfo[] }>("POST", `${sandboxPath(id)}/api/list-files`, { path }),
    );
    if (!r) return;
    dir = path;
    pathInput.value = path;
    const files = [...r.files].sort((a, b) =>
      a.type === b.type ? a.name.localeCompare(b.name) : a.type === "directory" ? -1 : 1,
    );
    const parent = path.replace(/\/[^/]*\/?$/, "") || "/";
    list.replaceChildren(
      ...(path !== "/"
        ? [
            h(
              "tr",
              {},
              h(
                "td",
                { colspan: "4" },
                h("button", { type: "button", onclick: () => void load(parent) }, "↑ Up"),
              ),
            ),
          ]
        : []),
      ...files.map((f) =>
        h(
          "tr",
          { "data-name": f.name },
          h(
            "td",
            {},
            f.type === "directory"
              ? h(
                  "button",
                  { type: "button", class: "link", onclick: () => void load(f.absolutePath) },
                  `${f.name}/`,
                )
              : f.name,
          ),
          h("td", {}, f.type === "directory" ? "" : bytes(f.size)),
          h("td", {}, when(f.modifiedAt)),
          h(
            "td",
            { class: "actions" },
            f.type === "file" &&
              h(
                "button",
                { type: "button", "aria-label": `View ${f.name}`, onclick: () => void view(f) },
                "View",
              ),
            f.type === "file" &&
              h(
                "button",
                {
                  type: "button",
                  "aria-label": `Download ${f.name}`,
                  onclick: () => void download(f),
                },
                "Download",
              ),
            f.type !== "directory" &&
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Delete ${f.name}`,
                  onclick: async () => {
                    if (!confirm(`Delete ${f.absolutePath}?`)) return;
                    if (
                      await attempt("Delete", () =>
                        api("POST", `${sandboxPath(id)}/api/delete`, { path: f.absolutePath }),
                      )
                    )
                      await load(dir);
                  },
                },
                "Delete",
              ),
          ),
        ),
      ),
    );
  }

  async function blobOf(f: FileInfo): Promise<Blob | undefined> {
    const r = await attempt("Reading the file", () => call("GET", raw(f.absolutePath)));
    return r && (await r.blob());
  }

  async function view(f: FileInfo): Promise<void> {
    if (/\.(png|jpe?g|gif|webp|svg)$/i.test(f.name)) {
      const blob = await blobOf(f);
      if (!blob) return;
      const type = f.name.toLowerCase().endsWith(".svg") ? "image/svg+xml" : "";
      const url = URL.createObjectURL(type ? new Blob([blob], { type }) : blob);
      preview.replaceChildren(
        h("h3", {}, f.absolutePath),
        h("img", { class: "view", src: url, alt: f.name }),
      );
      return;
    }
    const r = await attempt("Reading the file", () =>
      api<{ content: string; isBinary: boolean; mimeType: string }>(
        "POST",
        `${sandboxPath(id)}/api/read`,
        { path: f.absolutePath },
      ),
    );
    if (!r) return;
    preview.replaceChildren(
      h("h3", {}, f.absolutePath),
      r.isBinary
        ? h("p", { class: "muted" }, `Binary file (${r.mimeType}): download it to look inside.`)
        : h("pre", { class: "view" }, r.content),
    );
  }

  async function download(f: FileInfo): Promise<void> {
    const blob = await blobOf(f);
    if (!blob) return;
    const a = h("a", { href: URL.createObjectURL(blob), download: f.name }) as HTMLAnchorElement;
    a.click();
  }

  const form = inlineForm(
    "directory",
    () => {
      void load();
    },
    h("label", { for: "files-path" }, "Directory", pathInput),
    h("button", { type: "submit" }, "List"),
  );
  const uploadForm = inlineForm(
    "upload",
    async () => {
      for (const file of Array.from(upload.files ?? [])) {
        const target = `${dir.replace(/\/$/, "")}/${file.name}`;
        if (
          await attempt(`Upload of ${file.name}`, () => call("PUT", raw(target), undefined, file))
        )
          say(`Uploaded ${target}`);
      }
      upload.value = "";
      await load(dir);
    },
    h("label", { for: "upload" }, "Upload files", upload),
    h("button", { type: "submit" }, "Upload"),
  );
  void load();
  return section(
    "files",
    "Files",
    form,
    table("files", ["Name", "Size", "Modified", "Actions"], list),
    uploadForm,
    preview,
  );
}

// ---- processes ------------------------------------------------------------------------------

type Process = { id: string; command: string; status: string; exitCode?: number };

function processesSection(id: string): HTMLElement {
  const list = h("tbody");
  const logs = h("pre", { class: "logs", id: "process-logs", "aria-live": "off", tabindex: "0" });
  const logsTitle = h("h3", { id: "logs-h" }, "Logs");
  const command = h("input", {
    id: "proc-command",
    name: "command",
    placeholder: "python3 -m http.server 8080",
    required: true,
  }) as HTMLInputElement;
  let streaming: AbortController | null = null;
  viewCleanup.push(() => streaming?.abort());

  async function load(): Promise<void> {
    const r = await attempt("Listing processes", () =>
      api<{ processes: Process[] }>("GET", `${sandboxPath(id)}/api/process/list`),
    );
    if (!r) return;
    list.replaceChildren(
      ...r.processes.map((p) =>
        h(
          "tr",
          { "data-process": p.id },
          h("td", {}, p.id),
          h("td", {}, h("code", {}, p.command)),
          h(
            "td",
            {},
            p.exitCode !== undefined && p.exitCode !== null
              ? `${p.status} (${p.exitCode})`
              : p.status,
          ),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              { type: "button", "aria-label": `Logs of ${p.id}`, onclick: () => void follow(p) },
              "Logs",
            ),
            p.status === "running" &&
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Kill ${p.id}`,
                  onclick: async () => {
                    if (
                      await attempt("Kill", () =>
                        api("DELETE", `${sandboxPath(id)}/api/process/${encodeURIComponent(p.id)}`),
                      )
                    )
                      await load();
                  },
                },
                "Kill",
              ),
          ),
        ),
      ),
    );
  }

  async function follow(p: Process): Promise<void> {
    streaming?.abort();
    const controller = new AbortController();
    streaming = controller;
    logs.textContent = "";
    logsTitle.textContent = `Logs of ${p.id}`;
    try {
      const response = await fetch(
        `${sandboxPath(id)}/api/process/${encodeURIComponent(p.id)}/stream`,
        {
          headers: { authorization: `Bearer ${key() ?? ""}` },
          signal: controller.signal,
        },
      );
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      await readSse(response, (_event, data) => {
        const e = JSON.parse(data);
        if (e.type === "stdout" || e.type === "stderr") logs.append(e.data);
        else if (e.type === "exit") {
          logs.append(`\n[${e.data ?? `exit ${e.exitCode}`}]\n`);
          void load();
        }
        logs.scrollTop = logs.scrollHeight;
      });
    } catch (e) {
      if (!controller.signal.aborted) say(`Logs failed: ${e}`, true);
    }
  }

  const form = inlineForm(
    "start a process",
    async () => {
      const started = await attempt("Start", () =>
        api<{ processId: string }>("POST", `${sandboxPath(id)}/api/process/start`, {
          command: command.value,
        }),
      );
      if (started) {
        say(`Process ${started.processId} started`);
        command.value = "";
        await load();
        void follow({ id: started.processId, command: "", status: "running" });
      }
    },
    h("label", { for: "proc-command" }, "Command", command),
    h("button", { type: "submit" }, "Start process"),
  );
  void load();
  return section(
    "proc",
    ["Processes ", h("button", { type: "button", onclick: () => void load() }, "Refresh")],
    form,
    table("processes", ["ID", "Command", "Status", "Actions"], list),
    logsTitle,
    logs,
  );
}

// ---- ports and preview links ----------------------------------------------------------------

type Port = { port: number; name?: string; url: string; stale: boolean };

function portsSection(id: string): HTMLElement {
  const list = h("tbody");
  const port = h("input", {
    id: "port",
    name: "port",
    type: "number",
    min: "1024",
    max: "65535",
    required: true,
  }) as HTMLInputElement;
  const name = h("input", { id: "port-name", name: "name" }) as HTMLInputElement;

  async function load(): Promise<void> {
    const r = await attempt("Listing ports", () =>
      api<{ ports: Port[] }>("GET", `${sandboxPath(id)}/ports`),
    );
    if (!r) return;
    list.replaceChildren(
      ...r.ports.map((p) =>
        h(
          "tr",
          { "data-port": p.port },
          h("td", {}, String(p.port)),
          h("td", {}, p.name ?? ""),
          h(
            "td",
            {},
            h(
              "a",
              { href: p.url, target: "_blank", rel: "noopener noreferrer", class: "preview" },
              p.url,
            ),
            p.stale ? " (stale)" : "",
          ),
          h(
            "td",
            {},
            h(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-label": `Unexpose ${p.port}`,
                onclick: async () => {
                  if (
                    await attempt("Unexpose", () =>
                      call("DELETE", `${sandboxPath(id)}/ports/${p.port}`),
                    )
                  )
                    await load();
                },
              },
              "Unexpose",
            ),
          ),
        ),
      ),
    );
  }
  const form = inlineForm(
    "expose a port",
    async () => {
      const req: Record<string, unknown> = { port: Number(port.value) };
      if (name.value.trim()) req.name = name.value.trim();
      if (await attempt("Expose", () => api("POST", `${sandboxPath(id)}/ports`, req))) {
        port.value = "";
        name.value = "";
        await load();
      }
    },
    h("label", { for: "port" }, "Port", port),
    h("label", { for: "port-name" }, "Name", name),
    h("button", { type: "submit" }, "Expose port"),
  );
  void load();
  return section(
    "ports",
    "Ports and preview links",
    form,
    table("ports", ["Port", "Name", "Preview link", ""], list),
  );
}

// ---- routing --------------------------------------------------------------------------------

function render(): void {
  for (const f of viewCleanup) f();
  viewCleanup = [];
  if (!key()) return loginView();
  events.start();
  nav.replaceChildren(
    h("a", { href: "#/" }, "Sandboxes"),
    h("button", { type: "button", onclick: () => logout() }, "Log out"),
  );
  const m = location.hash.match(/^#\/sandboxes\/(.+)$/);
  if (m) sandboxView(decodeURIComponent(m[1]));
  else listView();
  app.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => {
  say("");
  render();
});
render();
