// Reconnect after a broker restart, a broker that closes with a reason,
// and that a closed client leaves nothing holding Node's event loop open.
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'

import { BlipMQError, connect } from '@blipmq/web'
import { startBroker } from './broker.mjs'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

test('the client reconnects and resubscribes after a broker restart, and says so in events', async () => {
  const broker = await startBroker()
  const client = await connect(broker.url)
  const events = []
  for (const type of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    client.addEventListener(type, (event) => events.push([type, event.detail]))
  }
  try {
    const subscription = await client.subscribe('restart.>')
    await client.publish('restart.before', 'one')
    assert.equal((await subscription.next({ timeoutMs: 5000 })).topic, 'restart.before')

    const reconnected = new Promise((resolve) => client.addEventListener('reconnect', resolve, { once: true }))
    await broker.restart()
    const { detail } = await reconnected
    assert.equal(typeof detail.connectionId, 'bigint')
    // A broker stopping gracefully says so first, then the connection ends.
    const [[shutdownType, shutdown], [disconnectType, disconnect]] = events
    assert.equal(shutdownType, 'serverError')
    assert.ok(shutdown.error instanceof BlipMQError)
    assert.equal(shutdown.error.codeName, 'ShuttingDown')
    assert.equal(disconnectType, 'disconnect')
    assert.ok(typeof disconnect.reason === 'string' && disconnect.reason.length > 0)
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
    const closed = new Promise((resolve) => client.addEventListener('close', resolve, { once: true }))
    await client.close()
    await closed
    assert.deepEqual(
      events.map(([type]) => type).filter((type) => type !== 'reconnectFailed'),
      ['serverError', 'disconnect', 'reconnect', 'close'],
    )
  } finally {
    await client.close()
    await broker.stop()
  }
})

test('a client dropped without close() can still be collected: its events hold it weakly', async () => {
  const broker = await startBroker()
  try {
    let client = await connect(broker.url)
    client.addEventListener('close', () => {})
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

test("'close' comes once, last, and before close() resolves", async () => {
  const broker = await startBroker()
  const client = await connect(broker.url)
  const events = []
  for (const name of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    client.addEventListener(name, () => events.push(name))
  }
  try {
    await client.close()
    assert.deepEqual(events, ['close'], 'heard before close() resolved')
    await client.close()
    await broker.stop()
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepEqual(events, ['close'])
  } finally {
    await broker.stop()
  }
})

test('without reconnect, a broker shutdown ends the client and its subscriptions', async () => {
  const broker = await startBroker()
  const client = await connect(broker.url, { reconnect: false })
  const subscription = await client.subscribe('bye')
  await broker.stop()
  assert.equal(await subscription.next({ timeoutMs: 5000 }), null)
  assert.equal(client.status, 'closed')
})

/** Runs `source` as an ES module in a child node; resolves its exit code. */
async function runScript(source, args) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', source, ...args], {
    cwd: process.cwd(),
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const [code, signal] = await once(child, 'exit')
  clearTimeout(timer)
  return signal === null ? code : signal
}

test('a script that connects, publishes and closes exits by itself', async () => {
  const broker = await startBroker()
  try {
    const code = await runScript(
      `import { WebSocket } from 'ws'
       import { connect } from '@blipmq/web'
       const client = await connect(process.argv[1], { WebSocket })
       const subscription = await client.subscribe('exit.>')
       await client.publish('exit.now', 'bye', { headers: { a: 'b' } })
       await subscription.next({ timeoutMs: 5000 })
       await client.close()`,
      [broker.url],
    )
    assert.equal(code, 0, 'exited 0 on its own, not killed after 10 s')
  } finally {
    await broker.stop()
  }
})

test('a failed connect leaves nothing holding the process', async () => {
  const code = await runScript(
    `import { WebSocket } from 'ws'
     import { connect } from '@blipmq/web'
     await connect('ws://127.0.0.1:1', { WebSocket }).catch((e) => { if (e.code !== 600) process.exit(3) })`,
    [],
  )
  assert.equal(code, 0)
})
