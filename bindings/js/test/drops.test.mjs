// No discard is silent (QUEUE-6), the part both packages share: on the
// broker's defaults the README's loop loses nothing, and says so. (A
// consumer that fell behind: bindings/node/test/drops.test.mjs; in a
// browser the page reads its WebSocket whatever the consumer does, see
// bindings/wasm/test/drops.test.mjs.)
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { startBroker } from './broker.mjs'
import { SDK, address, sdk, zeros } from './sdk.mjs'

const { connect } = sdk

// The README's loop loses nothing on the broker's defaults: a burst of
// 16-byte messages, one `await client.publish(...)` each, read with
// `for await` on a second connection in the same process, all arrives in
// order with nothing reported dropped. The broker has no configuration.
// 50,000 rather than 200,000 for the browser package: a page reads its
// WebSocket whatever the consumer does, so the broker's queue never fills
// for it (no burst size makes the broker drop there), and 200,000 would
// take the suite 20 s more.
const BURST = SDK === 'node' ? 200_000 : 50_000

test('the README loop loses nothing on a burst at the broker defaults', async () => {
  const broker = await startBroker()
  try {
    const consumer = await connect(address(broker))
    const producer = await connect(address(broker))
    const drops = []
    const subscription = await consumer.subscribe('burst', { onDrop: (count) => drops.push(count) })
    const reading = (async () => {
      let received = 0
      for await (const message of subscription) {
        const { payload } = message
        assert.equal(new DataView(payload.buffer, payload.byteOffset).getUint32(0), received, 'in order')
        if (++received === BURST) break
      }
      return received
    })()
    const payload = zeros(16)
    for (let i = 0; i < BURST; i++) {
      new DataView(payload.buffer, payload.byteOffset).setUint32(0, i)
      await producer.publish('burst', payload)
    }
    await producer.flush()
    assert.equal(await reading, BURST)
    assert.deepEqual(drops, [])
    assert.equal(subscription.dropped, 0)
    await consumer.close()
    await producer.close()
  } finally {
    await broker.stop()
  }
})
