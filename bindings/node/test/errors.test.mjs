// Errors carry the protocol's wire codes, as BlipMQError subclasses.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, test } from 'node:test'

import * as blipmq from 'blipmq'
import { startBroker } from './broker.mjs'

const { connect, BlipMQError } = blipmq
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

/** Asserts that `promise` rejects with class `Class` and wire `code`. */
async function rejectsWith(promise, Class, code, codeName) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof Class, `${error} is a ${Class.name}`)
    assert.ok(error instanceof BlipMQError)
    assert.ok(error instanceof Error)
    assert.equal(error.name, Class.name)
    assert.equal(error.code, code)
    assert.equal(error.codeName, codeName)
    assert.match(error.message, new RegExp(`^${codeName} \\(${code}\\): .+`))
    assert.ok(error.cause instanceof Error, 'the native error is kept as the cause')
    assert.ok(error.stack.includes(Class.name))
    return true
  })
}

test('an invalid topic is 300 InvalidTopic, for publish and subscribe', async () => {
  await rejectsWith(client.publish('bad topic', 'x'), blipmq.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.publish('a.*', 'x'), blipmq.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.subscribe('a..b'), blipmq.InvalidTopicError, 300, 'InvalidTopic')
})

test('a payload over the limit is 400 MessageTooLarge and the client stays usable', async () => {
  const big = Buffer.alloc(client.maxMessageSize + 1)
  await rejectsWith(client.publish('big', big), blipmq.MessageTooLargeError, 400, 'MessageTooLarge')
  await client.publish('big', Buffer.alloc(client.maxMessageSize))
  await client.flush()
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

test('a bad header key is 304 InvalidHeader', async () => {
  await rejectsWith(client.publish('h', 'x', { headers: { 'bad key': 'v' } }), blipmq.InvalidHeaderError, 304, 'InvalidHeader')
})

test('a QoS 1 publish resolves with the message id; a malformed group name is 301 InvalidArgument', async () => {
  const id = await client.publish('q', 'x', { qos: 1 })
  assert.equal(typeof id, 'bigint')
  assert.ok(id > 0n)
  await rejectsWith(client.subscribe('q', { group: 'two words' }), blipmq.InvalidArgumentError, 301, 'InvalidArgument')
})

test('an out-of-range qos is 301 InvalidArgument; a wrong type is a TypeError', async () => {
  await rejectsWith(client.publish('q', 'x', { qos: 7 }), blipmq.InvalidArgumentError, 301, 'InvalidArgument')
  await assert.rejects(client.publish('q', 42), TypeError)
  await assert.rejects(client.publish(42, 'x'), TypeError)
  await assert.rejects(client.publish('q', 'x', { headers: [['k']] }), TypeError)
})

test('a wrong or missing API key is 200 AuthFailed', async () => {
  const secured = await startBroker({ env: { BLIPMQ_AUTH_API_KEYS: 's3cret,other' } })
  try {
    await rejectsWith(connect(secured.addr, { apiKey: 'wrong' }), blipmq.AuthError, 200, 'AuthFailed')
    await rejectsWith(connect(secured.addr), blipmq.AuthError, 200, 'AuthFailed')
    const ok = await connect(secured.addr, { apiKey: 's3cret' })
    await ok.close()
  } finally {
    await secured.stop()
  }
})

test('nothing listening is 600 ConnectFailed', async () => {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  await rejectsWith(connect(`127.0.0.1:${port}`), blipmq.ConnectError, 600, 'ConnectFailed')
})

test('calls on a closed client are 603 ClientClosed', async () => {
  const other = await connect(broker.addr)
  await other.close()
  await rejectsWith(other.publish('t', 'x'), blipmq.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.subscribe('t'), blipmq.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.flush(), blipmq.ClientClosedError, 603, 'ClientClosed')
})

// The classes themselves (constructible, one per wire code) are tested for
// both packages in bindings/js/test/errors.test.mjs.
