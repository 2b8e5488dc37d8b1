// Reconnect after a broker restart, the connection's events, and that a
// closed (or dropped) client leaves nothing holding Node's event loop open.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'

import { startBroker } from './broker.mjs'
import { SCRIPT_IMPORT, SCRIPT_OPTIONS, SDK, address, listen, nextEvent, runScript, sdk } from './sdk.mjs'

const { BlipMQError, connect } = sdk
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

test('the client reconnects and resubscribes after a broker restart, and says so in events (a broker_closed disconnect)', async () => {
  const broker = await startBroker()
  const client = await connect(address(broker))
  const events = []
  for (const type of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    listen(client, type, (detail) => events.push([type, detail]))
  }
  try {
    const subscription = await client.subscribe('restart.>')
    await client.publish('restart.before', 'one')
    assert.equal((await subscription.next({ timeoutMs: 5000 })).topic, 'restart.before')

    const reconnected = nextEvent(client, 'reconnect')
    await broker.restart()
    const { connectionId } = await reconnected
    assert.equal(typeof connectionId, 'bigint')
    // A broker stopping gracefully says so first (an error frame that
    // answers no call), then the connection ends.
    const [[shutdownType, shutdown], [disconnectType, disconnect]] = events
    assert.equal(shutdownType, 'serverError')
    assert.ok(shutdown.error instanceof BlipMQError)
    assert.equal(shutdown.error.codeName, 'ShuttingDown')
    assert.match(shutdown.error.message, /^ShuttingDown \(\d+\): /)
    assert.equal(disconnectType, 'disconnect')
    assert.equal(typeof disconnect.reason, 'string')
    assert.ok(disconnect.reason.length > 0, 'a disconnect says why')
    // ... and why as a type: the broker closed the connection.
    assert.equal(disconnect.kind, 'broker_closed')
    assert.equal(disconnect.code, 602)
    assert.equal(disconnect.ioKind, undefined)
    // Publish until the resubscribed subscription sees one: QoS 0 messages
    // sent while the client is still reconnecting may be lost.
    let message = null
    for (let attempt = 0; attempt < 100 && message === null; attempt++) {
      await client.publish('restart.after', 'two').catch(() => {})
      message = await subscription.next({ timeoutMs: 100 })
    }
    assert.ok(message, 'a message after the restart')
    assert.equal(message.topic, 'restart.after')
    assert.equal(client.status, 'connected')
    await subscription.unsubscribe()
    const closed = nextEvent(client, 'close')
    await client.close()
    await closed
    assert.deepEqual(
      events.map(([type]) => type).filter((type) => type !== 'reconnectFailed'),
      ['serverError', 'disconnect', 'reconnect', 'close'],
    )
    for (const [type, { attempt, error }] of events.filter(([type]) => type === 'reconnectFailed')) {
      assert.ok(Number.isInteger(attempt) && attempt >= 1, `${type} attempt`)
      assert.equal(typeof error, 'string')
    }
  } finally {
    await client.close()
    await broker.stop()
  }
})

test("'close' comes once, last, and before close() resolves", async () => {
  const broker = await startBroker()
  const client = await connect(address(broker))
  const events = []
  for (const type of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    listen(client, type, () => events.push(type))
  }
  try {
    await client.close()
    assert.deepEqual(events, ['close'], 'heard before close() resolved')
    await client.close()
    await broker.stop()
    // Whatever the native side still had queued comes to nothing now.
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(events, ['close'])
  } finally {
    await broker.stop()
  }
})

test('a client dropped without close() can still be collected: its events hold it weakly', async () => {
  const broker = await startBroker()
  try {
    let client = await connect(address(broker))
    listen(client, 'close', () => {})
    const dropped = new WeakRef(client)
    client = null
    for (let i = 0; i < 50 && dropped.deref() !== undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      gc()
    }
    assert.equal(dropped.deref(), undefined, 'the client was collected')
  } finally {
    await broker.stop()
  }
})

test('a script that connects, publishes and closes exits by itself', async () => {
  const broker = await startBroker()
  try {
    const code = await runScript(
      `${SCRIPT_IMPORT}
       const client = await connect(process.argv[1], ${SCRIPT_OPTIONS})
       const subscription = await client.subscribe('exit.>')
       await client.publish('exit.now', 'bye', { headers: { a: 'b' } })
       await subscription.next({ timeoutMs: 5000 })
       await client.close()`,
      [address(broker)],
    )
    assert.equal(code, 0, 'exited 0 on its own, not killed after 10 s')
  } finally {
    await broker.stop()
  }
})

test('a failed connect leaves nothing holding the process', async () => {
  // Port 1: nothing listens there.
  const nowhere = SDK === 'node' ? '127.0.0.1:1' : 'ws://127.0.0.1:1'
  const code = await runScript(
    `${SCRIPT_IMPORT}
     await connect('${nowhere}', ${SCRIPT_OPTIONS}).catch((e) => { if (e.code !== 600) process.exit(3) })`,
  )
  assert.equal(code, 0)
})
