// Errors carry the protocol's wire codes, as BlipMQError subclasses; the
// broker's origin check and auth reach the page as errors with codes.
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import { after, before, test } from 'node:test'

import { WebSocket } from 'ws'
import * as web from '@blipmq/web'
import { startBroker } from './broker.mjs'

const { connect, BlipMQError } = web
let broker
let client

before(async () => {
  broker = await startBroker()
  client = await connect(broker.url)
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
    assert.ok(error.cause instanceof Error, 'the wasm error is kept as the cause')
    return true
  })
}

test('an invalid topic is 300 InvalidTopic, for publish and subscribe', async () => {
  await rejectsWith(client.publish('bad topic', 'x'), web.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.publish('a.*', 'x'), web.InvalidTopicError, 300, 'InvalidTopic')
  await rejectsWith(client.subscribe('a..b'), web.InvalidTopicError, 300, 'InvalidTopic')
})

test('a payload over the limit is 400 MessageTooLarge and the client stays usable', async () => {
  const big = new Uint8Array(client.maxMessageSize + 1)
  await rejectsWith(client.publish('big', big), web.MessageTooLargeError, 400, 'MessageTooLarge')
  await client.publish('big', new Uint8Array(client.maxMessageSize))
  await client.flush()
})

test('a bad header key is 304 InvalidHeader', async () => {
  await rejectsWith(client.publish('h', 'x', { headers: { 'bad key': 'v' } }), web.InvalidHeaderError, 304, 'InvalidHeader')
})

test('a malformed queue group name is 301 InvalidArgument', async () => {
  await rejectsWith(client.subscribe('q', { group: 'two words' }), web.InvalidArgumentError, 301, 'InvalidArgument')
})

test('an out-of-range qos is 301 InvalidArgument; a wrong type is a TypeError', async () => {
  await rejectsWith(client.publish('q', 'x', { qos: 7 }), web.InvalidArgumentError, 301, 'InvalidArgument')
  await rejectsWith(client.subscribe('q', { qos: 2 }), web.InvalidArgumentError, 301, 'InvalidArgument')
  await assert.rejects(client.publish('q', 42), TypeError)
  await assert.rejects(client.publish(42, 'x'), TypeError)
  await assert.rejects(client.publish('q', 'x', { headers: [['k']] }), TypeError)
  // A TTL out of range is refused as the broker would (the Node SDK's answer too).
  await assert.rejects(client.publish('q', 'x', { ttlMs: -1 }), { name: 'InvalidArgumentError', code: 301 })
  await assert.rejects(connect(broker.url, { connectTimeoutMs: 'soon' }), TypeError)
  await assert.rejects(connect(broker.url, { WebSocket: 'ws' }), TypeError)
})

test('a wrong or missing API key is 200 AuthFailed', async () => {
  const secured = await startBroker({ env: { BLIPMQ_AUTH_API_KEYS: 's3cret,other' } })
  try {
    await rejectsWith(connect(secured.url, { apiKey: 'wrong', reconnect: false }), web.AuthError, 200, 'AuthFailed')
    await rejectsWith(connect(secured.url), web.AuthError, 200, 'AuthFailed')
    const ok = await connect(secured.url, { apiKey: 's3cret' })
    await ok.close()
  } finally {
    await secured.stop()
  }
})

test('a page from an origin the broker does not allow cannot connect (600)', async () => {
  const guarded = await startBroker({ env: { BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS: 'http://good.test' } })
  // What a browser does: send the page's origin. Also proves the
  // `WebSocket` option (a class used instead of the global one).
  const from = (origin) => class extends WebSocket {
    constructor(url) {
      super(url, { origin })
    }
  }
  try {
    await rejectsWith(connect(guarded.url, { WebSocket: from('http://evil.test') }), web.ConnectError, 600, 'ConnectFailed')
    assert.equal(await guarded.metric('blipmq_websocket_upgrade_failures_total{reason="origin"}'), 1)
    const ok = await connect(guarded.url, { WebSocket: from('http://good.test') })
    await ok.close()
  } finally {
    await guarded.stop()
  }
})

test('nothing listening is 600 ConnectFailed; a non-WebSocket URL is 600 too', async () => {
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  await rejectsWith(connect(`ws://127.0.0.1:${port}`), web.ConnectError, 600, 'ConnectFailed')
  await rejectsWith(connect(`http://127.0.0.1:${port}`), web.ConnectError, 600, 'ConnectFailed')
})

test('no WebSocket class in the host is 600 with a message that says so', async () => {
  // A child process without the `ws` stand-in (Node 20 has no global one).
  const source = `
    import { connect } from '@blipmq/web'
    if (typeof WebSocket !== 'undefined') { console.log('has-global'); process.exit(0) }
    try { await connect(process.argv[1]) } catch (e) { console.log(e.code, e.message) }`
  const child = spawn(process.execPath, ['--input-type=module', '-e', source, broker.url], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  await once(child, 'exit')
  if (out.startsWith('has-global')) return // Node 22+: nothing to prove here
  assert.match(out, /^600 .*no global WebSocket/)
})

test('calls on a closed client are 603 ClientClosed', async () => {
  const other = await connect(broker.url)
  await other.close()
  await rejectsWith(other.publish('t', 'x'), web.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.subscribe('t'), web.ClientClosedError, 603, 'ClientClosed')
  await rejectsWith(other.flush(), web.ClientClosedError, 603, 'ClientClosed')
})

// The classes themselves (constructible, one per wire code) are tested for
// both packages in bindings/js/test/errors.test.mjs.
