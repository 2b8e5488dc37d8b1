// No discard is silent (QUEUE-6): a consumer that fell behind learns
// exactly how many messages the broker discarded for it, where they were
// missing, through `onDrop`, the 'drop' event, `droppedBefore` and
// `dropped`, with `for await` and with `onMessage` alike. (The README loop
// on the broker's defaults: bindings/js/test/drops.test.mjs, test/shared/.)
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { after, before, describe, test } from 'node:test'

import { connect } from 'blipmq'
import { startBroker } from './shared/broker.mjs'

const TOTAL = 1500
// 64 KiB each, 96 MB in all: more than the socket buffers between the
// broker and a consumer that does not read can hold.
const SIZE = 64 * 1024

let broker
before(async () => {
  // drop_new with a queue of 4, one delivery per write: the consumer that
  // stops reading loses the newest messages at the broker.
  broker = await startBroker({
    env: {
      BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY: '4',
      BLIPMQ_QUEUES_OVERFLOW_POLICY: 'drop_new',
      BLIPMQ_DELIVERY_MAX_BATCH: '1',
      BLIPMQ_DELIVERY_MAX_BATCH_BYTES: '1',
    },
  })
})
after(() => broker?.stop())

/** Publish TOTAL indexed messages to `topic` while nobody reads. */
async function flood(topic) {
  const producer = await connect(broker.addr)
  for (let i = 0; i < TOTAL; i++) {
    const payload = Buffer.alloc(SIZE)
    payload.writeUInt32BE(i, 0)
    await producer.publish(topic, payload)
  }
  await producer.flush()
  await producer.close()
}

/**
 * Checks what a consumer saw, as a list of `['message', index,
 * droppedBefore]` and `['drop', count]` in the order the application saw
 * them: every message is received or reported, each report stands where
 * its messages were missing, and the message says so too.
 */
function assertAccountedFor(seen, subscription) {
  let next = 0
  let reported = 0
  let unreportedGap = 0
  for (const entry of seen) {
    if (entry[0] === 'drop') {
      reported += entry[1]
      unreportedGap += entry[1]
      continue
    }
    const [, index, droppedBefore] = entry
    assert.equal(unreportedGap, index - next, `the drops reported just before message ${index}`)
    assert.ok(droppedBefore <= unreportedGap, `message ${index} carries ${droppedBefore}`)
    unreportedGap = 0
    next = index + 1
  }
  assert.equal(unreportedGap, TOTAL - next, 'the newest were lost, and reported with nothing after them')
  const received = seen.filter((entry) => entry[0] === 'message').length
  assert.ok(received < TOTAL, 'the consumer fell behind')
  assert.equal(received + reported, TOTAL, 'every message received or reported')
  assert.equal(subscription.dropped, reported)
}

describe('a consumer that fell behind', () => {
  test('hears of every discard in line through onDrop and the drop event, with for await', async () => {
    const consumer = await connect(broker.addr, { subscriptionCapacity: 1 })
    const seen = []
    const fromEvent = []
    const subscription = await consumer.subscribe('gap.iterate', { onDrop: (count) => seen.push(['drop', count]) })
    subscription.on('drop', (count) => fromEvent.push(count))
    await flood('gap.iterate')
    for (;;) {
      const message = await subscription.next({ timeoutMs: 500 })
      if (message === null) break
      seen.push(['message', message.payload.readUInt32BE(0), message.droppedBefore])
    }
    assertAccountedFor(seen, subscription)
    assert.deepEqual(
      fromEvent,
      seen.filter((entry) => entry[0] === 'drop').map((entry) => entry[1]),
      'the event says what onDrop says',
    )
    await consumer.close()
  })

  test('hears of them with an onMessage callback too', async () => {
    const consumer = await connect(broker.addr, { subscriptionCapacity: 1 })
    const seen = []
    let quiet = null
    const poke = () => {
      clearTimeout(quiet)
      quiet = setTimeout(() => subscription.emit('quiet'), 500)
    }
    const subscription = await consumer.subscribe('gap.callback', {
      onMessage: (message) => {
        seen.push(['message', message.payload.readUInt32BE(0), message.droppedBefore])
        poke()
      },
      onDrop: (count) => {
        seen.push(['drop', count])
        poke()
      },
    })
    await flood('gap.callback')
    poke()
    await once(subscription, 'quiet')
    assertAccountedFor(seen, subscription)
    await consumer.close()
  })

  test('without a listener, gets one process warning', async () => {
    const consumer = await connect(broker.addr, { subscriptionCapacity: 1 })
    const subscription = await consumer.subscribe('gap.unheard')
    const warnings = []
    const onWarning = (warning) => {
      if (warning.name === 'BlipMQDropWarning') warnings.push(warning.message)
    }
    process.on('warning', onWarning)
    try {
      await flood('gap.unheard')
      let received = 0
      while ((await subscription.next({ timeoutMs: 500 })) !== null) received++
      // The warning is emitted on a later tick.
      await new Promise(setImmediate)
      assert.ok(subscription.dropped > 0 && received + subscription.dropped === TOTAL)
      assert.equal(warnings.length, 1, 'once per subscription')
      assert.match(warnings[0], /discarded \d+ messages for subscription 'gap\.unheard'/)
    } finally {
      process.off('warning', onWarning)
      await consumer.close()
    }
  })
})
