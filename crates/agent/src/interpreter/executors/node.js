// sandpit's JavaScript executor: one persistent `vm` context per process.
//
// Protocol (see the agent's interpreter module): requests arrive on fd 3 and events leave on
// fd 4, one JSON object per line. Requests: {"op":"configure","cwd":..,"env":{..}} and
// {"op":"run","code":..,"async":bool,"sync":n}, where `code` was prepared by the agent
// (TypeScript transpiled, REPL rewrite: its completion value is the cell's last expression,
// or a Promise of it when `async`). Events: ready, stdout, stderr, result, error, and `done` after every
// request (after a run with `sync`, `\0sandpit-sync:n\0` on stdout and stderr first). SIGINT
// interrupts a run.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const vm = require('node:vm');
const { Console } = require('node:console');
const { createRequire, isBuiltin } = require('node:module');
const { pathToFileURL } = require('node:url');
const { Writable } = require('node:stream');
const { AsyncLocalStorage } = require('node:async_hooks');

const REQUESTS_FD = 3;
const EVENTS_FD = 4;

// ---- events (fd 4) ----------------------------------------------------------------------

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

// Synchronous writes keep events in order and live even while user code blocks the event
// loop; should the pipe be non-blocking, a full pipe is retried until the agent reads it.
function writeAll(buffer) {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(EVENTS_FD, buffer, offset, buffer.length - offset);
    } catch (error) {
      if (error.code === 'EAGAIN') {
        Atomics.wait(sleepCell, 0, 0, 1);
      } else if (error.code === 'EPIPE' || error.code === 'EBADF') {
        // The agent is gone: nothing left to serve.
        process.exit(0);
      } else {
        throw error;
      }
    }
  }
}

// Lone UTF-16 surrogates have no UTF-8 form: JSON readers reject their escapes.
const wellFormed = (key, value) => (typeof value === 'string' ? value.toWellFormed() : value);

function emit(event) {
  writeAll(Buffer.from(JSON.stringify(event, wellFormed) + '\n', 'utf8'));
}

function textOf(chunk, encoding) {
  if (typeof chunk === 'string') return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk).toString(Buffer.isEncoding(encoding) ? encoding : 'utf8');
  return String(chunk);
}

function streamTo(type) {
  return new Writable({
    decodeStrings: false,
    write(chunk, encoding, callback) {
      emit({ type, text: textOf(chunk, encoding) });
      callback();
    },
  });
}

// `console.*` of user code, streamed as it is written.
const userConsole = new Console({
  stdout: streamTo('stdout'),
  stderr: streamTo('stderr'),
  colorMode: false,
});

// Direct writes to process.stdout/stderr become events too, in order with console output.
// (Raw writes to fd 1/2 and child processes still reach the agent through the pipes.)
for (const [stream, type] of [[process.stdout, 'stdout'], [process.stderr, 'stderr']]) {
  stream.write = function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    emit({ type, text: textOf(chunk, encoding) });
    if (typeof callback === 'function') process.nextTick(callback);
    return true;
  };
}

// ---- the context ------------------------------------------------------------------------

const REPL_FILE = '<repl>';

const sandbox = {
  console: userConsole,
  process,
  Buffer,
  setTimeout,
  clearTimeout,
  setInterval,
  clearInterval,
  setImmediate,
  clearImmediate,
  queueMicrotask,
  structuredClone,
  URL,
  URLSearchParams,
  TextEncoder,
  TextDecoder,
  AbortController,
  AbortSignal,
  Blob,
  atob,
  btoa,
  performance,
};
// Node's web globals, where this Node version has them.
for (const name of [
  'fetch', 'Headers', 'Request', 'Response', 'FormData', 'WebSocket', 'crypto', 'navigator',
  'EventTarget', 'Event', 'CustomEvent', 'DOMException', 'MessageChannel', 'MessagePort',
  'BroadcastChannel', 'ReadableStream', 'WritableStream', 'TransformStream',
  'CompressionStream', 'DecompressionStream', 'File',
]) {
  if (globalThis[name] !== undefined) sandbox[name] = globalThis[name];
}
const context = vm.createContext(sandbox, { name: 'sandpit' });
vm.runInContext('globalThis.global = globalThis;', context);

// `require` (and __dirname/__filename) resolve from the context's working directory.
function setDirectory(cwd) {
  const filename = path.join(cwd, REPL_FILE);
  sandbox.require = createRequire(filename);
  sandbox.__dirname = cwd;
  sandbox.__filename = filename;
  sandbox.module = { exports: {}, filename, id: '.', path: cwd, require: sandbox.require };
  sandbox.exports = sandbox.module.exports;
}
setDirectory(process.cwd());

// `import(x)` of a cell (rewritten to this call: a vm script has no loader of its own).
// Paths and packages resolve from the working directory; packages with only an ESM entry
// fall back to Node's resolution from this file.
function importFromCwd(specifier, options) {
  const name = String(specifier);
  let target = name;
  if (name.startsWith('./') || name.startsWith('../') || name.startsWith('/')) {
    target = pathToFileURL(path.resolve(process.cwd(), name)).href;
  } else if (!isBuiltin(name) && !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(name)) {
    try {
      target = pathToFileURL(sandbox.require.resolve(name)).href;
    } catch {
      // Left to Node.
    }
  }
  return options === undefined ? import(target) : import(target, options);
}
Object.defineProperty(sandbox, '__sandpit_import__', { value: importFromCwd, enumerable: false });

// Helpers that transpiled TypeScript calls (oxc, helpers "external"): TypeScript's
// `experimentalDecorators` semantics, as in tslib.
const babelHelpers = {
  decorate(decorators, target, key, descriptor) {
    const count = arguments.length;
    let result = count < 3 ? target
      : descriptor === null ? (descriptor = Object.getOwnPropertyDescriptor(target, key)) : descriptor;
    for (let i = decorators.length - 1; i >= 0; i--) {
      const decorator = decorators[i];
      if (decorator) {
        result = (count < 3 ? decorator(result) : count > 3 ? decorator(target, key, result) : decorator(target, key)) || result;
      }
    }
    if (count > 3 && result) Object.defineProperty(target, key, result);
    return result;
  },
  decorateParam(index, decorator) {
    return (target, key) => decorator(target, key, index);
  },
  decorateMetadata(key, value) {
    if (typeof Reflect === 'object' && typeof Reflect.metadata === 'function') return Reflect.metadata(key, value);
    return undefined;
  },
};
Object.defineProperty(sandbox, 'babelHelpers', { value: babelHelpers, enumerable: false, writable: true });

// ---- results and errors -----------------------------------------------------------------

function isPlainData(value) {
  if (Array.isArray(value)) return true;
  const proto = Object.getPrototypeOf(value);
  // Plain objects of any realm (the context has its own Object.prototype).
  return proto === null || (Object.getPrototypeOf(proto) === null &&
    typeof proto.constructor === 'function' && proto.constructor.name === 'Object');
}

function resultEvent(value) {
  const data = { 'text/plain': util.inspect(value, { depth: 6, maxArrayLength: 1000, maxStringLength: 1e7 }) };
  if (value !== null && typeof value === 'object' && isPlainData(value)) {
    try {
      const json = JSON.stringify(value);
      // Values JSON cannot represent (functions only, say) stay text-only.
      if (json !== undefined) data['application/json'] = JSON.parse(json);
    } catch {
      // Cycles and BigInts: text/plain only.
    }
  }
  return { type: 'result', data, metadata: {} };
}

function isErrorLike(value) {
  return value !== null && typeof value === 'object' && typeof value.stack === 'string';
}

// Prepared code may end with `//# sandpitLines={"r":MAP,"t":MAP}`: where its positions come
// from in the user's cell (the REPL rewrite, then TypeScript). A MAP is
// {"LINE": [SOURCE_LINE, COL, SHIFT, COL, SHIFT, ...]}: from 0-based column COL on, a position
// of that line comes from SOURCE_LINE, SHIFT columns to the left; unlisted lines are unchanged.
// Kept per cell, as functions of old cells can throw later.
const LINES_MARKER = '//# sandpitLines=';
const KEPT_LINE_MAPS = 1000;
const lineMaps = new Map();

function rememberLineMap(cell, code) {
  const at = code.lastIndexOf('\n' + LINES_MARKER);
  if (at === -1) return;
  try {
    lineMaps.set(cell, JSON.parse(code.slice(at + 1 + LINES_MARKER.length)));
    lineMaps.delete(cell - KEPT_LINE_MAPS);
  } catch {
    // A malformed map only costs exact positions.
  }
}

function throughMap(map, line, column) {
  const entry = map?.[line];
  if (!Array.isArray(entry) || entry.length < 3) return [line, column];
  let shift = entry[2];
  for (let i = 1; i + 1 < entry.length && entry[i] <= column; i += 2) shift = entry[i + 1];
  return [entry[0], Math.max(0, column - shift)];
}

function userPositions(text) {
  return text.replace(/<cell-(\d+)>:(\d+)(?::(\d+))?/g, (whole, cell, line, column) => {
    const maps = lineMaps.get(Number(cell));
    if (!maps) return whole;
    let position = [Number(line), column === undefined ? 0 : Number(column) - 1];
    position = throughMap(maps.r, ...position);
    position = throughMap(maps.t, ...position);
    if (column === undefined) return `<cell-${cell}>:${position[0]}`;
    return `<cell-${cell}>:${position[0]}:${position[1] + 1}`;
  });
}

// Stack frames of this executor and of Node's internals say nothing about the user's code.
function userTraceback(stack) {
  return stack.split('\n').filter((line) => !(
    /^\s+at /.test(line) && (line.includes(__filename) || /\(node:|at node:/.test(line))
  )).map(userPositions);
}

function errorEvent(error) {
  if (isErrorLike(error)) {
    const name = typeof error.name === 'string' ? error.name : 'Error';
    const message = typeof error.message === 'string' ? error.message : String(error.message);
    return { type: 'error', ename: name, evalue: message, traceback: userTraceback(error.stack) };
  }
  const text = util.inspect(error);
  return { type: 'error', ename: 'Error', evalue: `Uncaught ${text}`, traceback: [`Uncaught ${text}`] };
}

// `display(value)` shows a value the way a cell's last expression is shown, at once;
// `display(bundle, { raw: true })` sends a MIME bundle as it is (`{ 'text/html': ... }`), and
// `display.html(..)`, `.markdown`, `.svg`, `.latex`, `.javascript`, `.json`, `.png`, `.jpeg`
// send one kind (images as base64 text or bytes).
function bundleValue(mime, value) {
  if (mime.startsWith('image/') && mime !== 'image/svg+xml' && value instanceof Uint8Array) {
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  }
  if (mime === 'application/json') return value;
  return typeof value === 'string' ? value : String(value);
}

function display(value, options) {
  if (options && options.raw) {
    const data = {};
    for (const [mime, content] of Object.entries(value ?? {})) data[mime] = bundleValue(mime, content);
    emit({ type: 'result', data, metadata: options.metadata ?? {} });
  } else {
    emit(resultEvent(value));
  }
}
for (const [name, mime] of Object.entries({
  html: 'text/html', markdown: 'text/markdown', svg: 'image/svg+xml', latex: 'text/latex',
  javascript: 'application/javascript', png: 'image/png', jpeg: 'image/jpeg',
})) {
  display[name] = (content) => display({ [mime]: content }, { raw: true });
}
display.json = (value) => display({ 'application/json': value, 'text/plain': util.inspect(value) }, { raw: true });
sandbox.display = display;

// ---- runs -------------------------------------------------------------------------------

let executionCount = 0;
// Which cell a callback comes from: the cell's async work inherits the run's store.
const cells = new AsyncLocalStorage();
// Ends the awaited part of the current run with an error (an interrupt, or a callback of
// the run that threw); the synchronous part is stopped by V8 (`breakOnSigint`), which also
// keeps the SIGINT listener away while it runs.
let failRun = null;

process.on('SIGINT', () => {
  if (failRun) failRun(interruption());
});

// Errors of callbacks must not kill the context: one of the running cell's own callbacks
// ends its run; the others (from earlier cells) are reported on stderr.
process.on('uncaughtException', (error) => {
  if (failRun && cells.getStore() === executionCount) {
    failRun(error);
    return;
  }
  emit({ type: 'stderr', text: `Uncaught ${isErrorLike(error) ? userTraceback(error.stack).join('\n') : util.inspect(error)}\n` });
});
process.on('unhandledRejection', (reason) => {
  emit({ type: 'stderr', text: `Unhandled rejection: ${isErrorLike(reason) ? userTraceback(reason.stack).join('\n') : util.inspect(reason)}\n` });
});

function interruption() {
  const error = new Error('Script execution was interrupted by `SIGINT`');
  error.code = 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
  return error;
}

async function run(request) {
  executionCount += 1;
  const code = String(request.code ?? '');
  rememberLineMap(executionCount, code);
  try {
    const script = new vm.Script(code, { filename: `<cell-${executionCount}>` });
    let value = cells.run(executionCount, () =>
      script.runInContext(context, { breakOnSigint: true, displayErrors: false }));
    if (request.async) {
      value = await new Promise((resolve, reject) => {
        failRun = reject;
        Promise.resolve(value).then(resolve, reject);
      });
    }
    if (value !== undefined) emit(resultEvent(value));
  } catch (error) {
    emit(errorEvent(error));
  } finally {
    failRun = null;
  }
}

function configure(request) {
  try {
    if (request.env && typeof request.env === 'object') {
      for (const [key, value] of Object.entries(request.env)) {
        if (value === null) delete process.env[key];
        else process.env[key] = String(value);
      }
    }
    if (typeof request.cwd === 'string' && request.cwd !== '') {
      process.chdir(request.cwd);
      setDirectory(process.cwd());
    }
  } catch (error) {
    emit(errorEvent(error));
  }
}

// Sync markers go through the executor's own stdout/stderr pipes, opened anew at start (the
// code may close or replace fd 1/2): the agent ends a run once both came through, so output
// that a child process or a raw fd write made just before the end is not overtaken by `done`.
function pipeFor(fd) {
  try {
    return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY);
  } catch {
    return fd;
  }
}
const SYNC_FDS = [pipeFor(1), pipeFor(2)];

function writeSyncMarkers(sync) {
  const marker = Buffer.from(`\0sandpit-sync:${sync}\0`, 'latin1');
  for (const fd of SYNC_FDS) {
    let offset = 0;
    while (offset < marker.length) {
      try {
        offset += fs.writeSync(fd, marker, offset, marker.length - offset);
      } catch (error) {
        if (error.code !== 'EAGAIN') break;
        Atomics.wait(sleepCell, 0, 0, 1);
      }
    }
  }
}

async function handle(line) {
  let sync;
  try {
    let request;
    try {
      request = JSON.parse(line);
    } catch (error) {
      emit({ type: 'error', ename: 'ProtocolError', evalue: `bad request: ${error.message}`, traceback: [] });
      return;
    }
    if (request?.op === 'run') {
      if (Number.isSafeInteger(request.sync)) sync = request.sync;
      await run(request);
    }
    else if (request?.op === 'configure') configure(request);
    else emit({ type: 'error', ename: 'ProtocolError', evalue: `unknown op ${JSON.stringify(request?.op)}`, traceback: [] });
  } catch (error) {
    // Formatting the user's value or error failed (a throwing getter, a hostile Proxy).
    emit({ type: 'error', ename: 'InternalError', evalue: `the executor could not report the outcome: ${String(error?.message ?? 'unknown')}`, traceback: [] });
  } finally {
    if (sync !== undefined) writeSyncMarkers(sync);
    // Always, so the agent never waits for a run that is over.
    emit({ type: 'done', execution_count: executionCount });
  }
}

// ---- requests (fd 3) --------------------------------------------------------------------

// Requests are served one at a time, in order.
let queue = Promise.resolve();
let pending = '';
const requests = fs.createReadStream(null, { fd: REQUESTS_FD, encoding: 'utf8', highWaterMark: 1 << 16 });
requests.on('data', (chunk) => {
  pending += chunk;
  // Several MiB of code arrive in many chunks: only look for the end of line in new text.
  if (!chunk.includes('\n')) return;
  let newline;
  while ((newline = pending.indexOf('\n')) !== -1) {
    const line = pending.slice(0, newline);
    pending = pending.slice(newline + 1);
    if (line.trim() !== '') queue = queue.then(() => handle(line));
  }
});
// The agent closed its end: the context is over.
requests.on('end', () => queue.then(() => process.exit(0)));
requests.on('error', () => process.exit(0));

// The first run of a process pays for compiling the paths above: pay it before `ready`.
resultEvent(new vm.Script('({ warm: [1] })', { filename: '<warm-up>' }).runInContext(context));
errorEvent(new Error('warm-up'));

emit({ type: 'ready' });
