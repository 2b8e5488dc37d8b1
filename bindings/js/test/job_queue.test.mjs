// Job-queue controls of a QoS 1 message, through the installed package,
// against the real broker (whose own ack timeout is 30 s): nak with and
// without `delayMs`, term to the dead-letter topic, inProgress against the
// subscription's own `ackTimeoutMs`, `maxDeliveries`, and bad values.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { startBroker } from './broker.mjs'
import { address, rejectsWith, sdk, text } from './sdk.mjs'

const { connect, InvalidArgumentError } = sdk
let broker
let client

before(async () => {
  broker = await startBroker()
  client = await connect(address(broker))
})

after(async () => {
  await client?.close()
  await broker?.stop()
})

// Each test its own durable name and topic: they share one broker.
const worker = (name, extra = {}) => ({ qos: 1, durable: name, ...extra })

async function next(subscription) {
  const message = await subscription.next({ timeoutMs: 5000 })
  assert.ok(message !== null, 'a message in time')
  return message
}

async function nothingWithin(subscription, timeoutMs) {
  assert.equal(await subscription.next({ timeoutMs }), null)
}

describe('job-queue controls', () => {
  test('nak redelivers at once, and after delayMs when given', async () => {
    const subscription = await client.subscribe('jq.nak', worker('jq-nak'))
    await client.publish('jq.nak', 'retry me', { qos: 1 })
    const first = await next(subscription)
    assert.equal(first.deliveryCount, 1)
    await first.nak()
    const second = await next(subscription)
    assert.equal(second.deliveryId, first.deliveryId)
    assert.equal(second.deliveryCount, 2)
    const naked = Date.now()
    await second.nak({ delayMs: 300 })
    await nothingWithin(subscription, 150)
    const third = await next(subscription)
    assert.ok(Date.now() - naked >= 300)
    assert.equal(third.deliveryCount, 3)
    await third.ack()
    await nothingWithin(subscription, 200)
    await subscription.unsubscribe()
  })

  test('term moves the message to the dead-letter topic', async () => {
    const dead = await client.subscribe('$dlq.jq-term')
    const subscription = await client.subscribe('jq.term', worker('jq-term'))
    await client.publish('jq.term', 'poison', { qos: 1 })
    const poison = await next(subscription)
    await poison.term()
    const letter = await next(dead)
    assert.equal(text(letter.payload), 'poison')
    assert.equal(letter.id, poison.id)
    assert.equal(letter.headers.get('blipmq-dead-letter-reason'), 'terminated')
    await nothingWithin(subscription, 200)
    await subscription.unsubscribe()
    await dead.unsubscribe()
  })

  test('inProgress holds off the ackTimeoutMs of the subscription', async () => {
    const subscription = await client.subscribe('jq.long', worker('jq-long', { ackTimeoutMs: 200 }))
    await client.publish('jq.long', 'long', { qos: 1 })
    const job = await next(subscription)
    const started = Date.now()
    while (Date.now() - started < 600) {
      await job.inProgress()
      await nothingWithin(subscription, 100)
    }
    await job.ack()
    // Without inProgress, the 200 ms timeout (not the broker's 30 s) applies.
    await client.publish('jq.long', 'stalled', { qos: 1 })
    const stalled = await next(subscription)
    const again = await next(subscription)
    assert.equal(again.deliveryId, stalled.deliveryId)
    assert.equal(again.deliveryCount, 2)
    await again.ack()
    await subscription.unsubscribe()
  })

  test('maxDeliveries dead-letters a message after that many naks', async () => {
    const dead = await client.subscribe('$dlq.jq-flaky')
    const subscription = await client.subscribe('jq.flaky', worker('jq-flaky', { maxDeliveries: 2 }))
    await client.publish('jq.flaky', 'flaky', { qos: 1 })
    for (const count of [1, 2]) {
      const message = await next(subscription)
      assert.equal(message.deliveryCount, count)
      await message.nak()
    }
    const letter = await next(dead)
    assert.equal(letter.headers.get('blipmq-deliveries'), '2')
    assert.equal(letter.headers.get('blipmq-dead-letter-reason'), 'max_deliveries')
    await subscription.unsubscribe()
    await dead.unsubscribe()
  })

  test('bad values are refused with InvalidArgumentError', async () => {
    for (const extra of [{ ackTimeoutMs: 5 }, { ackTimeoutMs: -1 }, { maxDeliveries: 10_001 }]) {
      await rejectsWith(
        client.subscribe('jq.bad', worker('jq-bad', extra)),
        InvalidArgumentError,
        301,
        'InvalidArgument',
      )
    }
    await rejectsWith(client.subscribe('jq.bad', { ackTimeoutMs: 1000 }), InvalidArgumentError, 301, 'InvalidArgument')
    const subscription = await client.subscribe('jq.bad', worker('jq-bad'))
    await client.publish('jq.bad', 'x', { qos: 1 })
    const message = await next(subscription)
    await rejectsWith(message.nak({ delayMs: -5 }), InvalidArgumentError, 301, 'InvalidArgument')
    await assert.rejects(message.nak({ delayMs: 'soon' }), TypeError)
    await message.ack()
    await subscription.unsubscribe()
  })
})
