// What is Node's own in publishing and subscribing: Buffers, the
// JavaScript publish batches and their buffers, the native batches
// `next()` reads, `onMessage` callbacks on Node's event loop, and
// backpressure from a blocked broker. What both packages share is tested
// in bindings/js/test/pubsub.test.mjs (test/shared/ here).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { connect, InvalidArgumentError, Message, Subscription } from 'blipmq'
import { startBroker } from './shared/broker.mjs'

let broker
let client

before(async () => {
  // Room in the broker's queue for every message of the largest burst
  // below (3,000 publishes in flight): under the default `drop_oldest`
  // policy, a smaller queue drops whenever this client's reader falls
  // behind its own publishes, and a test that counts messages then hangs.
  broker = await startBroker({ env: { BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY: '16384' } })
  client = await connect(broker.addr, { name: 'node-test' })
})

after(async () => {
  await client?.close()
  await broker?.stop()
})

describe('connect', () => {
  test('a client holds publish buffers only once it has batched a publish', async () => {
    // The batch buffers (64 KiB of payloads, 24 KiB of columns) are
    // ArrayBuffers: a client that only subscribes makes none.
    const clients = []
    const before = process.memoryUsage().arrayBuffers
    for (let i = 0; i < 8; i++) clients.push(await connect(broker.addr))
    await Promise.all(clients.map((c) => c.subscribe('idle.>')))
    const subscribed = process.memoryUsage().arrayBuffers
    assert.ok(subscribed - before < 8 * 16 * 1024, `${subscribed - before} bytes for 8 clients`)
    // The first publish to a topic goes alone; the next goes through the batch.
    for (const c of clients) {
      await c.publish('busy.a', 'x')
      await c.publish('busy.a', 'y')
    }
    const published = process.memoryUsage().arrayBuffers
    assert.ok(published - subscribed >= 8 * 64 * 1024, `${published - subscribed} bytes for 8 batches`)
    await Promise.all(clients.map((c) => c.close()))
  })
})

describe('publish and subscribe', () => {
  test('messages of one batch keep their own topic, payload and id', async () => {
    const subscription = await client.subscribe('batch.*')
    // Published before reading, so they cross into JavaScript as one batch.
    for (let i = 0; i < 300; i++) await client.publish(`batch.${i % 3}`, `m${i}`)
    await client.flush()
    const got = []
    for (let i = 0; i < 300; i++) got.push(await subscription.next({ timeoutMs: 5000 }))
    assert.deepEqual(got.map((m) => m.topic), Array.from({ length: 300 }, (_, i) => `batch.${i % 3}`))
    // Payloads stay right after later messages arrived and were read.
    assert.deepEqual(got.map((m) => m.payload.toString()), Array.from({ length: 300 }, (_, i) => `m${i}`))
    const ids = got.map((m) => m.id)
    assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]), 'ids increase')
    assert.ok(got.every((m) => m.headers.size === 0 && m.deliveryCount === 1))
    await subscription.unsubscribe()
  })

  test('concurrent next() calls get distinct messages, in order', async () => {
    const subscription = await client.subscribe('race')
    const waiting = [subscription.next(), subscription.next(), subscription.next()]
    for (const text of ['a', 'b', 'c', 'd']) await client.publish('race', text)
    const first = (await Promise.all(waiting)).map((m) => m.payload.toString())
    assert.deepEqual(first, ['a', 'b', 'c'])
    assert.equal((await subscription.next({ timeoutMs: 5000 })).payload.toString(), 'd')
    await subscription.unsubscribe()
  })

  test('durable and group reach the broker, which takes them or refuses with 301', async () => {
    for (const options of [{ durable: 'node-test' }, { group: 'workers' }]) {
      try {
        const subscription = await client.subscribe('opts.>', options)
        await subscription.unsubscribe()
      } catch (error) {
        assert.ok(error instanceof InvalidArgumentError, String(error))
        assert.equal(error.code, 301)
      }
    }
  })
})

describe('onMessage callbacks', () => {
  /** Resolves once `predicate()` holds (checked every 5 ms, 5 s at most). */
  async function until(predicate) {
    for (let i = 0; i < 1000 && !predicate(); i++) await new Promise((resolve) => setTimeout(resolve, 5))
    assert.ok(predicate(), 'in time')
  }

  test('every message reaches the callback in order, with its metadata; unsubscribe stops it', async () => {
    const seen = []
    const subscription = await client.subscribe('cb.*', { onMessage: (message) => seen.push(message) })
    assert.ok(subscription instanceof Subscription)
    for (let i = 0; i < 5; i++) await client.publish(`cb.${i}`, String(i), { headers: { n: String(i) } })
    await until(() => seen.length === 5)
    assert.deepEqual(
      seen.map((m) => [m.topic, m.payload.toString(), m.headers.get('n'), m.deliveryCount]),
      [0, 1, 2, 3, 4].map((i) => [`cb.${i}`, String(i), String(i), 1]),
    )
    assert.ok(seen.every((m) => m instanceof Message && typeof m.id === 'bigint'))
    assert.ok(seen[0].id < seen[4].id)
    await subscription.unsubscribe()
    await client.publish('cb.late', 'after')
    await client.flush()
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(seen.length, 5, 'nothing after unsubscribe')
  })

  test('a callback subscription has no next() and cannot be iterated', async () => {
    const subscription = await client.subscribe('cb.modes', { onMessage: () => {} })
    await assert.rejects(subscription.next(), TypeError)
    assert.throws(() => subscription[Symbol.asyncIterator](), TypeError)
    await subscription.unsubscribe()
    await assert.rejects(client.subscribe('cb.modes', { onMessage: 'no' }), TypeError)
    await assert.rejects(client.subscribe('cb.modes', { onMessage: () => {}, onError: 1 }), TypeError)
  })

  test('the event loop turns between batches while messages stream in', async () => {
    const total = 5000
    let delivered = 0
    let atFirstTurn = null
    const subscription = await client.subscribe('cb.stream', {
      onMessage: () => {
        if (++delivered === 1) setImmediate(() => (atFirstTurn = delivered))
      },
    })
    for (let i = 0; i < total; i++) client.publish('cb.stream', 'x')
    await client.flush()
    await until(() => delivered === total)
    assert.ok(atFirstTurn !== null && atFirstTurn < total, `the loop turned after ${atFirstTurn} of ${total}`)
    await subscription.unsubscribe()
  })

  test('what the callback throws goes to onError, and delivery goes on', async () => {
    const seen = []
    const errors = []
    const subscription = await client.subscribe('cb.throws', {
      onMessage: (message) => {
        seen.push(message.payload.toString())
        if (seen.length === 2) throw new Error('bad message')
      },
      onError: (error) => errors.push(error),
    })
    for (const payload of ['a', 'b', 'c']) await client.publish('cb.throws', payload)
    await until(() => seen.length === 3)
    assert.deepEqual(seen, ['a', 'b', 'c'])
    assert.deepEqual(
      errors.map((e) => e.message),
      ['bad message'],
    )
    await subscription.unsubscribe()
  })

  test('a callback subscription ends when its client closes', async () => {
    const other = await connect(broker.addr)
    const seen = []
    const subscription = await other.subscribe('cb.close', { onMessage: (m) => seen.push(m.payload.toString()) })
    await other.publish('cb.close', 'only')
    await until(() => seen.length === 1)
    await other.close()
    await subscription.unsubscribe()
    assert.deepEqual(seen, ['only'])
  })
})

describe('concurrency', () => {
  // A lost message would leave `for await` waiting: fail instead of hang.
  test('concurrent next() calls are served in call order and none is left waiting', { timeout: 60_000 }, async () => {
    // A waiting next() once missed messages that a later call had read
    // past its native wait (about 1 run in 50 hung or swapped two
    // messages); repeat the race enough to catch it.
    for (let round = 0; round < 300; round++) {
      const topic = `race.many.${round}`
      const subscription = await client.subscribe(topic)
      const waiting = [subscription.next(), subscription.next(), subscription.next()]
      for (const text of ['a', 'b', 'c', 'd']) await client.publish(topic, text)
      const got = (await Promise.all(waiting)).map((m) => m.payload.toString())
      assert.deepEqual(got, ['a', 'b', 'c'], `round ${round}`)
      assert.equal((await subscription.next({ timeoutMs: 5000 })).payload.toString(), 'd')
      await subscription.unsubscribe()
    }
  })

  test('batched and unbatched publishes of every kind keep call order', async () => {
    // Plain QoS 0 publishes to a known topic are batched in JavaScript;
    // QoS 1, headers, payloads bigger than a batch and first publishes to a
    // topic go straight through. Call order must hold across all of them.
    const subscription = await client.subscribe('mix.>')
    const expected = []
    const pending = []
    for (let i = 0; i < 3000; i++) {
      const topic = `mix.${i % 3}`
      let payload
      if (i % 997 === 0) payload = Buffer.alloc(100 * 1024, i % 256) // over a batch
      else if (i % 101 === 0) payload = Buffer.alloc(20 * 1024, i % 256) // fills one fast
      else if (i % 3 === 0) payload = `${i} é`
      else if (i % 3 === 1) payload = Buffer.from(`${i}`)
      else payload = new Uint8Array(Buffer.from(`xx${i}`)).subarray(2)
      let options
      if (i % 500 === 0) options = { qos: 1 }
      else if (i % 700 === 0) options = { headers: { n: String(i) } }
      else if (i % 7 === 0) options = { ttlMs: 60_000 }
      pending.push(client.publish(topic, payload, options))
      expected.push([topic, Buffer.from(payload)])
    }
    await Promise.all(pending)
    for (const [topic, payload] of expected) {
      const message = await subscription.next({ timeoutMs: 5000 })
      assert.equal(message.topic, topic)
      assert.ok(message.payload.equals(payload), `payload of message on ${topic}`)
    }
    assert.equal(await subscription.next({ timeoutMs: 50 }), null)
    await subscription.unsubscribe()
  })

  test('a publisher that outruns a blocked broker waits, and loses and reorders nothing', async () => {
    // A subscriber that does not read, a broker that blocks publishers when
    // its queue is full: the publisher's queue fills and publishes must wait.
    const blocking = await startBroker({
      env: { BLIPMQ_QUEUES_OVERFLOW_POLICY: 'block', BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY: '16' },
    })
    try {
      const reader = await connect(blocking.addr, { subscriptionCapacity: 16 })
      const subscription = await reader.subscribe('flood')
      const publisher = await connect(blocking.addr, { outgoingCapacity: 4 })
      const count = 5000 // 80 MB: more than every socket buffer on the way
      const payload = Buffer.alloc(16 * 1024)
      let waited = 0
      const sent = (async () => {
        for (let i = 0; i < count; i++) {
          payload.writeUInt32LE(i)
          const published = publisher.publish('flood', payload)
          if ((await Promise.race([published, 'pending'])) === 'pending') waited++
          await published
        }
        await publisher.flush()
      })()
      for (let i = 0; i < count; i++) {
        const message = await subscription.next({ timeoutMs: 10_000 })
        assert.equal(message.payload.readUInt32LE(), i)
      }
      await sent
      assert.ok(waited > 0, 'no publish ever waited for room')
      await Promise.all([reader.close(), publisher.close()])
    } finally {
      await blocking.stop()
    }
  })

  test('publishes made while the outgoing queue is full keep their order, QoS 0 and 1 mixed', async () => {
    // Nothing awaited in between: QoS 0 publishes made while the queue is
    // full wait in the client's batch, and a QoS 1 publish must go out
    // behind them, not before.
    const blocking = await startBroker({
      env: { BLIPMQ_QUEUES_OVERFLOW_POLICY: 'block', BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY: '16' },
    })
    try {
      const reader = await connect(blocking.addr, { subscriptionCapacity: 16 })
      const subscription = await reader.subscribe('mixed')
      const publisher = await connect(blocking.addr, { outgoingCapacity: 2 })
      const count = 6000 // 24 MB of 4 KiB payloads
      const payload = Buffer.alloc(4 * 1024)
      const published = []
      let pendingAtOnce = 0
      for (let i = 0; i < count; i++) {
        payload.writeUInt32LE(i)
        const qos = i % 500 === 499 ? 1 : 0
        const done = publisher.publish('mixed', payload, { qos })
        if (qos === 0 && (await Promise.race([done, 'pending'])) === 'pending') pendingAtOnce++
        published.push(done)
      }
      for (let i = 0; i < count; i++) {
        const message = await subscription.next({ timeoutMs: 10_000 })
        assert.equal(message.payload.readUInt32LE(), i, 'in publish order')
      }
      const results = await Promise.all(published)
      assert.ok(results.filter((r) => typeof r === 'bigint').length === count / 500, 'every QoS 1 publish confirmed')
      assert.ok(pendingAtOnce > 0, 'the queue was never full')
      assert.equal(await subscription.next({ timeoutMs: 50 }), null)
      await Promise.all([reader.close(), publisher.close()])
    } finally {
      await blocking.stop()
    }
  })
})
