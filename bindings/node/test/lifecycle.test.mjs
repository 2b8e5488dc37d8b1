// Reconnect after a broker restart, CommonJS loading, and that a closed
// client leaves nothing holding the event loop open.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'

import { BlipMQError, connect } from 'blipmq'
import { startBroker } from './broker.mjs'

const require = createRequire(import.meta.url)
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

test('require() loads the same API as import', async () => {
  const cjs = require('blipmq')
  const esm = await import('blipmq')
  assert.equal(esm.default, cjs)
  // Every CommonJS export is a named ES export too, the very same object.
  assert.ok(Object.keys(cjs).length >= 16)
  for (const [name, value] of Object.entries(cjs)) assert.equal(esm[name], value, name)
  assert.equal(typeof cjs.Headers, 'function')
})

test('the client reconnects and resubscribes after a broker restart, and says so in events', async () => {
  const broker = await startBroker()
  const client = await connect(broker.addr)
  const events = []
  for (const name of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    client.on(name, (...args) => events.push([name, ...args]))
  }
  try {
    const subscription = await client.subscribe('restart.>')
    await client.publish('restart.before', 'one')
    assert.equal((await subscription.next({ timeoutMs: 5000 })).topic, 'restart.before')

    const reconnected = once(client, 'reconnect')
    await broker.restart()
    const [connectionId] = await reconnected
    assert.equal(typeof connectionId, 'bigint')
    // A broker stopping gracefully says so first (an error frame that
    // answers no call), then the connection ends.
    const [[shutdownEvent, shutdown], [disconnectEvent, reason]] = events
    assert.equal(shutdownEvent, 'serverError')
    assert.ok(shutdown instanceof BlipMQError)
    assert.equal(shutdown.codeName, 'ShuttingDown')
    assert.match(shutdown.message, /^ShuttingDown \(\d+\): /)
    assert.equal(disconnectEvent, 'disconnect')
    assert.equal(typeof reason, 'string')
    assert.ok(reason.length > 0, 'a disconnect says why')
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
    const closed = once(client, 'close')
    await client.close()
    await closed
    assert.deepEqual(
      events.map(([name]) => name).filter((name) => name !== 'reconnectFailed'),
      ['serverError', 'disconnect', 'reconnect', 'close'],
    )
    for (const [name, attempt, error] of events.filter(([name]) => name === 'reconnectFailed')) {
      assert.ok(Number.isInteger(attempt) && attempt >= 1, `${name} attempt`)
      assert.equal(typeof error, 'string')
    }
  } finally {
    await client.close()
    await broker.stop()
  }
})

test("'close' comes once, last, and before close() resolves", async () => {
  const broker = await startBroker()
  const client = await connect(broker.addr)
  const events = []
  for (const name of ['disconnect', 'reconnect', 'reconnectFailed', 'serverError', 'close']) {
    client.on(name, () => events.push(name))
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

test('a client dropped without close() can still be collected: its events hold it weakly', async () => {
  const broker = await startBroker()
  try {
    let client = await connect(broker.addr)
    client.on('close', () => {})
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

/** Runs `source` as in `runScript` with a broker of its own, whose address is `process.argv[1]`. */
async function runScriptWithBroker(source) {
  const broker = await startBroker()
  try {
    return await runScript(source, [broker.addr])
  } finally {
    await broker.stop()
  }
}

test('a script that connects, publishes and closes exits by itself', async () => {
  const code = await runScriptWithBroker(
    `import { BlipMQError, connect } from 'blipmq'
     const client = await connect(process.argv[1])
     const subscription = await client.subscribe('exit.>')
     await client.publish('exit.now', 'bye', { headers: { a: 'b' } })
     await subscription.next({ timeoutMs: 5000 })
     await client.close()`,
  )
  assert.equal(code, 0, 'exited 0 on its own, not killed after 10 s')
})

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

test('a failed connect leaves nothing holding the process', async () => {
  const code = await runScript(
    `import { BlipMQError, connect } from 'blipmq'
     await connect('127.0.0.1:1').catch((e) => { if (e.code !== 600) process.exit(3) })`,
    [],
  )
  assert.equal(code, 0)
})
