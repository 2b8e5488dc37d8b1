// The error classes both packages export from @blipmq/core, one per wire
// code of the protocol's error table; and the errors a live broker and a
// closed client raise, with their codes, in both packages.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { after, before, test } from 'node:test'

import { startBroker } from './broker.mjs'
import { SDK, address, rejectsWith, sdk, zeros } from './sdk.mjs'

const { BlipMQError, connect } = sdk
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

test('BlipMQError can be constructed and subclassed by users', () => {
  const error = new BlipMQError('boom', { code: 500, codeName: 'Internal', cause: 'x' })
  assert.equal(error.name, 'BlipMQError')
  assert.equal(error.code, 500)
  assert.equal(error.cause, 'x')
})

test('every wire code has its own class, named as in every SDK (schema/errors.toml)', () => {
  // Copied beside the package's own tests by the test script.
  const table = JSON.parse(readFileSync(new URL('../error-classes.json', import.meta.url), 'utf8'))
  assert.ok(table.codes.length > 20)
  for (const { code, name, class: stem } of table.codes) {
    const Class = sdk[`${stem}Error`]
    assert.equal(typeof Class, 'function', `${stem}Error is exported`)
    assert.equal(sdk.errorClass(code), Class)
    const error = sdk.codedError(code, name, 'the detail')
    assert.ok(error instanceof Class && error instanceof BlipMQError && error instanceof Error)
    assert.equal(error.name, `${stem}Error`)
    assert.equal(error.code, code)
    assert.equal(error.codeName, name)
    assert.equal(error.message, `${name} (${code}): the detail`)
    // Without a name (as a native error may come): the table's.
    assert.equal(sdk.codedError(code, undefined, 'the detail').codeName, name)
  }
  // A code a newer broker might send: UnknownError, keeping the number.
  const future = sdk.codedError(406, 'Unknown', 'new')
  assert.ok(future instanceof sdk.UnknownError)
  assert.equal(future.code, 406)
})

test('an invalid topic is 300 InvalidTopic, for publish and subscribe', async () => {
  await rejectsWith(client.publish('bad topic', 'x'), sdk.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.publish('a.*', 'x'), sdk.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.subscribe('a..b'), sdk.InvalidTopicError, 300, 'InvalidTopic')
})

test('a payload over the limit is 400 MessageTooLarge and the client stays usable', async () => {
  const big = zeros(client.maxMessageSize + 1)
  await rejectsWith(client.publish('big', big), sdk.MessageTooLargeError, 400, 'MessageTooLarge')
  await client.publish('big', zeros(client.maxMessageSize))
  await client.flush()
})

test('a bad header key is 304 InvalidHeader', async () => {
  await rejectsWith(client.publish('h', 'x', { headers: { 'bad key': 'v' } }), sdk.InvalidHeaderError, 304, 'InvalidHeader')
})

test('a QoS 1 publish resolves with the message id; a malformed group name is 301 InvalidArgument', async () => {
  const id = await client.publish('q', 'x', { qos: 1 })
  assert.equal(typeof id, 'bigint')
  assert.ok(id > 0n)
  await rejectsWith(client.subscribe('q', { group: 'two words' }), sdk.InvalidArgumentError, 301, 'InvalidArgument')
})

test('an out-of-range qos is 301 InvalidArgument; a wrong type is a TypeError', async () => {
  await rejectsWith(client.publish('q', 'x', { qos: 7 }), sdk.InvalidArgumentError, 301, 'InvalidArgument')
  await rejectsWith(client.subscribe('q', { qos: 2 }), sdk.InvalidArgumentError, 301, 'InvalidArgument')
  await assert.rejects(client.publish('q', 42), TypeError)
  await assert.rejects(client.publish(42, 'x'), TypeError)
  await assert.rejects(client.publish('q', 'x', { headers: [['k']] }), TypeError)
  // A TTL out of range is refused as the broker would.
  await assert.rejects(client.publish('q', 'x', { ttlMs: -1 }), { name: 'InvalidArgumentError', code: 301 })
  await assert.rejects(connect(address(broker), { connectTimeoutMs: 'soon' }), TypeError)
  if (SDK === 'web') await assert.rejects(connect(address(broker), { WebSocket: 'ws' }), TypeError)
})

test('a wrong or missing API key is 200 AuthFailed', async () => {
  const secured = await startBroker({ env: { BLIPMQ_AUTH_API_KEYS: 's3cret,other' } })
  try {
    await rejectsWith(connect(address(secured), { apiKey: 'wrong' }), sdk.AuthError, 200, 'AuthFailed')
    await rejectsWith(connect(address(secured), { apiKey: 'wrong', reconnect: false }), sdk.AuthError, 200, 'AuthFailed')
    await rejectsWith(connect(address(secured)), sdk.AuthError, 200, 'AuthFailed')
    const ok = await connect(address(secured), { apiKey: 's3cret' })
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
  const nowhere = SDK === 'node' ? `127.0.0.1:${port}` : `ws://127.0.0.1:${port}`
  await rejectsWith(connect(nowhere), sdk.ConnectError, 600, 'ConnectFailed')
  // A URL that is not a WebSocket one is 600 too.
  if (SDK === 'web') await rejectsWith(connect(`http://127.0.0.1:${port}`), sdk.ConnectError, 600, 'ConnectFailed')
})

test('calls on a closed client are 603 ClientClosed', async () => {
  const other = await connect(address(broker))
  await other.close()
  await rejectsWith(other.publish('t', 'x'), sdk.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.subscribe('t'), sdk.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.flush(), sdk.ClientClosedError, 603, 'ClientClosed')
})
