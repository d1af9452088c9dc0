// SSE parsing on its own (no server): events split across chunks at every byte, CRLF framing,
// multi-line data, comments, a last event without its blank line, abort, and the round trip
// through asyncIterableToSSEStream / responseToAsyncIterable.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  OperationInterruptedError,
  asyncIterableToSSEStream,
  parseSSEStream,
  responseToAsyncIterable,
} from '../dist/index.js';

/** A byte stream delivering `text` in pieces of `size` bytes. */
function chunked(text, size) {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}

async function collect(stream, signal) {
  const events = [];
  for await (const event of parseSSEStream(stream, signal)) events.push(event);
  return events;
}

const wire =
  ': a comment line\n' +
  'data: {"type":"start","text":"héllo ✓"}\n\n' +
  'event: output\r\ndata: {"type":"stdout",\r\ndata: "data":"a\\nb"}\r\n\r\n' +
  'data: {"type":"complete","exitCode":0}';

test('events are the same whatever the chunking (UTF-8 split included)', async () => {
  const expected = [
    { type: 'start', text: 'héllo ✓' },
    { type: 'stdout', data: 'a\nb' },
    { type: 'complete', exitCode: 0 },
  ];
  for (const size of [1, 2, 3, 7, 64, 4096]) {
    assert.deepEqual(await collect(chunked(wire, size)), expected, `chunks of ${size}`);
  }
});

test('an aborted parse rejects with OperationInterruptedError and cancels the stream', async () => {
  let cancelled = false;
  const endless = new ReadableStream({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode('data: {"n":1}\n\n'));
      return new Promise((r) => setTimeout(r, 10));
    },
    cancel() {
      cancelled = true;
    },
  });
  const controller = new AbortController();
  let seen = 0;
  await assert.rejects(async () => {
    for await (const _ of parseSSEStream(endless, controller.signal)) {
      if (++seen === 3) controller.abort();
    }
  }, OperationInterruptedError);
  assert.equal(seen, 3);
  assert.equal(cancelled, true);
});

test('an `event: error` envelope ends the parse with its typed error; a data-only error event is yielded', async () => {
  const cut =
    'data: {"type":"error","error":"agent-level"}\n\n' +
    'event: error\r\ndata: {"code":"OPERATION_INTERRUPTED","message":"sandbox demo was stopped",' +
    '"context":{"sandboxId":"demo","reason":"stopped"},"httpStatus":409,"type":"error"}\r\n\r\n';
  for (const size of [1, 5, 4096]) {
    const seen = [];
    await assert.rejects(
      async () => {
        for await (const event of parseSSEStream(chunked(cut, size))) seen.push(event);
      },
      (/** @type {any} */ err) =>
        err instanceof OperationInterruptedError &&
        err.reason === 'stopped' &&
        err.httpStatus === 409 &&
        err.message === 'sandbox demo was stopped',
    );
    assert.deepEqual(seen, [{ type: 'error', error: 'agent-level' }], `chunks of ${size}`);
  }
});

test('asyncIterableToSSEStream → Response → responseToAsyncIterable round trip', async () => {
  async function* events() {
    yield { type: 'a', n: 1 };
    yield { type: 'b', text: 'two\nlines' };
  }
  const response = new Response(asyncIterableToSSEStream(events()));
  const back = [];
  for await (const event of responseToAsyncIterable(response)) back.push(event);
  assert.deepEqual(back, [
    { type: 'a', n: 1 },
    { type: 'b', text: 'two\nlines' },
  ]);
});
