// Errors from what is Node's own: publishes to a known topic go through
// the JavaScript batch, and must be judged as at once as any other. The
// errors both packages raise: bindings/js/test/errors.test.mjs
// (test/shared/ here).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import * as blipmq from 'blipmq'
import { startBroker } from './shared/broker.mjs'
import { rejectsWith } from './shared/sdk.mjs'

const { connect } = blipmq
let broker
let client

before(async () => {
  broker = await startBroker()
  client = await connect(broker.addr)
})

after(async () => {
  await client?.close()
  await broker?.stop()
})

test('errors stay immediate once a topic is known (publishes to it are batched)', async () => {
  await client.publish('known', 'x')
  await client.publish('known', 'y')
  const big = Buffer.alloc(client.maxMessageSize + 1)
  await rejectsWith(client.publish('known', big), blipmq.MessageTooLargeError, 400, 'MessageTooLarge')
  // A string of n UTF-16 units may be up to 3n bytes of UTF-8.
  const bigText = 'é'.repeat(client.maxMessageSize / 2 + 1)
  await rejectsWith(client.publish('known', bigText), blipmq.MessageTooLargeError, 400, 'MessageTooLarge')
  for (const ttlMs of [-1, 1.5, 2 ** 32]) {
    await assert.rejects(client.publish('known', 'x', { ttlMs }), { name: 'InvalidArgumentError', code: 301 })
  }
  await rejectsWith(client.publish('known', 'x', { qos: 2 }), blipmq.InvalidArgumentError, 301, 'InvalidArgument')
  // Batched or not, an option is judged the same way.
  await assert.rejects(client.publish('known', 'x', { qos: false }), TypeError)
  await assert.rejects(client.publish('unknown.yet', 'x', { qos: false }), TypeError)
  await client.publish('known', 'x', { ttlMs: null })
  await client.publish('unknown.too', 'x', { ttlMs: null })
  await client.flush()
})
