// No discard is silent (QUEUE-6), the browser SDK's part: discards the
// native subscription reports (on a message, or with nothing after them)
// reach the application in line with the messages, through `onDrop` and
// the 'drop' event, or a console warning when nobody listens.
//
// These tests run against a scripted native subscription: in a browser, the WebSocket API
// cannot stop reading the socket, so a stalled page never makes the broker
// drop (the messages wait in the page; see the conformance suite's
// expected-failures/wasm.txt). What the broker reports, and how the client
// core hands it over, is tested in client-rs and by every other SDK. (The
// README loop on the broker's defaults: bindings/js/test/drops.test.mjs.)
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Subscription } from '@blipmq/web'

const plain = (index, droppedBefore) => ({
  topic: 't',
  payload: new Uint8Array([index]),
  headers: [],
  id: BigInt(index),
  timestampMs: 0,
  deliveryCount: 1,
  deliveryId: 0n,
  droppedBefore,
})

/** A native subscription that answers `nextBatch` from `script`, then ends. */
function scripted(script) {
  const answers = [...script]
  return {
    pattern: 'scripted',
    dropped: script.reduce(
      (sum, batch) => sum + batch.droppedAfter + batch.messages.reduce((s, m) => s + m.droppedBefore, 0),
      0,
    ),
    nextBatch: async () => answers.shift() ?? null,
    unsubscribe: async () => {},
    detach: async () => {},
  }
}

const SCRIPT = [
  { messages: [plain(0, 0), plain(3, 2)], droppedAfter: 0 },
  // Early, with nothing after the discards.
  { messages: [], droppedAfter: 4 },
  { messages: [plain(8, 0)], droppedAfter: 1 },
]

test('discards reach onDrop and the drop event in line with the messages', async () => {
  const seen = []
  const events = []
  const subscription = new Subscription(scripted(SCRIPT), { onDrop: (count) => seen.push(`drop ${count}`) })
  subscription.addEventListener('drop', (event) => events.push(event.detail.count))
  for await (const message of subscription) {
    seen.push(`m${message.payload[0]} (${message.droppedBefore} before)`)
  }
  assert.deepEqual(seen, ['m0 (0 before)', 'drop 2', 'm3 (2 before)', 'drop 4', 'm8 (0 before)', 'drop 1'])
  assert.deepEqual(events, [2, 4, 1])
  assert.equal(subscription.dropped, 7)
})

test('with nobody listening, console.warn says so once', async () => {
  const warned = []
  const warn = console.warn
  console.warn = (text) => warned.push(text)
  try {
    const subscription = new Subscription(scripted(SCRIPT))
    let received = 0
    while ((await subscription.next()) !== null) received++
    assert.equal(received, 3)
    assert.equal(warned.length, 1)
    assert.match(warned[0], /discarded 2 messages for subscription 'scripted'/)
  } finally {
    console.warn = warn
  }
})

test('a drop listener added later silences the warning', async () => {
  const warned = []
  const warn = console.warn
  console.warn = (text) => warned.push(text)
  try {
    const subscription = new Subscription(scripted(SCRIPT))
    const counts = []
    subscription.addEventListener('drop', (event) => counts.push(event.detail.count))
    while ((await subscription.next()) !== null);
    assert.deepEqual(counts, [2, 4, 1])
    assert.deepEqual(warned, [])
  } finally {
    console.warn = warn
  }
})
