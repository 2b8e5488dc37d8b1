// What is Node's own in a client's life: CommonJS loading, reconnect
// attempts while the broker stays away, batched publishes once it is gone,
// and `onMessage` callbacks in a script that must exit by itself. What
// both packages share is tested in bindings/js/test/lifecycle.test.mjs
// (test/shared/ here).
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import net from 'node:net'
import { test } from 'node:test'

import { BlipMQError, connect } from 'blipmq'
import { startBroker } from './shared/broker.mjs'
import { runScript } from './shared/sdk.mjs'

const require = createRequire(import.meta.url)

test('require() loads the same API as import', async () => {
  const cjs = require('blipmq')
  const esm = await import('blipmq')
  assert.equal(esm.default, cjs)
  // Every CommonJS export is a named ES export too, the very same object.
  assert.ok(Object.keys(cjs).length >= 16)
  for (const [name, value] of Object.entries(cjs)) assert.equal(esm[name], value, name)
  assert.equal(typeof cjs.Headers, 'function')
})

test("a broker that sends garbage is a 'protocol' disconnect", async () => {
  const broker = await startBroker()
  // A fake broker in front of the real one: it passes the handshake on,
  // then (once the test listens) sends a frame whose body is not an Envelope.
  let sendGarbage
  const listening = new Promise((resolve) => (sendGarbage = resolve))
  const sockets = []
  const fake = net.createServer(async (socket) => {
    const upstream = net.connect(broker.port, '127.0.0.1')
    for (const end of [socket, upstream]) {
      sockets.push(end)
      end.on('error', () => {}) // a reset as the client gives up is expected
    }
    const [fromClient, fromBroker] = [frames(socket), frames(upstream)]
    upstream.write((await fromClient.next()).value) // Hello
    socket.write((await fromBroker.next()).value) // Welcome
    await listening
    socket.write(Buffer.from([8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]))
  })
  fake.listen(0, '127.0.0.1')
  await once(fake, 'listening')
  const client = await connect(`127.0.0.1:${fake.address().port}`, { reconnect: false })
  try {
    const disconnected = once(client, 'disconnect')
    const closed = once(client, 'close')
    sendGarbage()
    const [reason, kind, code, ioKind] = await disconnected
    assert.equal(kind, 'protocol')
    assert.equal(code, 100)
    assert.equal(ioKind, undefined)
    assert.match(reason, /bad frame/)
    await closed
    assert.equal(client.status, 'closed')
  } finally {
    await client.close()
    for (const socket of sockets) socket.destroy()
    fake.close()
    await broker.stop()
  }
})

/** The length-prefixed frames read from `socket`, each with its prefix. */
async function* frames(socket) {
  let buffered = Buffer.alloc(0)
  for await (const chunk of socket) {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32LE(0)) {
      const end = 4 + buffered.readUInt32LE(0)
      yield buffered.subarray(0, end)
      buffered = buffered.subarray(end)
    }
  }
}

test('while the broker stays away, each failed reconnect attempt is an event', async () => {
  const broker = await startBroker()
  const client = await connect(broker.addr)
  try {
    const disconnected = once(client, 'disconnect')
    const failures = []
    const twoFailures = new Promise((resolve) => {
      client.on('reconnectFailed', (attempt, error) => {
        failures.push([attempt, error])
        if (failures.length === 2) resolve()
      })
    })
    await broker.stop()
    // Listening keeps nothing alive (see the test below): a timer holds the
    // event loop open while the client tries, and bounds the wait.
    let timer
    const deadline = new Promise((resolve) => (timer = setTimeout(() => resolve('timed out'), 10_000)))
    try {
      assert.notEqual(await Promise.race([disconnected.then(() => twoFailures), deadline]), 'timed out')
    } finally {
      clearTimeout(timer)
    }
    assert.deepEqual(
      failures.map(([attempt]) => attempt),
      [1, 2],
    )
    for (const [, error] of failures) assert.ok(typeof error === 'string' && error.length > 0)
    assert.equal(client.status, 'reconnecting')
  } finally {
    const closed = once(client, 'close')
    await client.close()
    await closed
  }
})

test('once the broker is gone, publishes to a known topic reject rather than vanish', async () => {
  const broker = await startBroker()
  const client = await connect(broker.addr, { reconnect: false })
  try {
    // Publishes to a topic the client has seen are batched in JavaScript;
    // a failure must still reach the caller.
    await client.publish('gone', 'a')
    await client.publish('gone', 'b')
    await client.flush()
    await broker.stop()
    for (let i = 0; i < 500 && client.status !== 'closed'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    assert.equal(client.status, 'closed')
    await assert.rejects(client.publish('gone', 'c'), (error) => {
      assert.ok(error instanceof BlipMQError, `${error} is a BlipMQError`)
      assert.ok([602, 603].includes(error.code), `code ${error.code}`)
      return true
    })
  } finally {
    await client.close().catch(() => {})
    await broker.stop()
  }
})

/** Runs `source` as in `runScript` with a broker of its own, whose address is `process.argv[1]`. */
async function runScriptWithBroker(source) {
  const broker = await startBroker()
  try {
    return await runScript(source, [broker.addr])
  } finally {
    await broker.stop()
  }
}

test('a script with an onMessage subscription exits by itself once it closes', async () => {
  const code = await runScriptWithBroker(
    `import { connect } from 'blipmq'
     const client = await connect(process.argv[1])
     let got
     const done = new Promise((resolve) => (got = resolve))
     await client.subscribe('exit.cb', { onMessage: got })
     await client.publish('exit.cb', 'bye')
     await done
     await client.close()`,
  )
  assert.equal(code, 0, 'exited 0 on its own, not killed after 10 s')
})

test('without onError, what onMessage throws is an uncaught exception', async () => {
  const code = await runScriptWithBroker(
    `import { connect } from 'blipmq'
     process.on('uncaughtException', (error) => process.exit(error.message === 'from the callback' ? 7 : 8))
     const client = await connect(process.argv[1])
     await client.subscribe('exit.throw', { onMessage: () => { throw new Error('from the callback') } })
     await client.publish('exit.throw', 'x')
     setTimeout(() => process.exit(9), 5000)`,
  )
  assert.equal(code, 7)
})
