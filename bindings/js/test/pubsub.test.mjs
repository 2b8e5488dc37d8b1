// Publishing, subscribing, messages, headers and async iteration against
// the real broker, through the installed package: over TCP in Node, over
// the WebSocket listener in browsers (run here in Node, over `ws`).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { startBroker } from './broker.mjs'
import { SDK, address, bytes, sdk, text } from './sdk.mjs'

const { connect, Client, Headers, Message, Subscription } = sdk
let broker
let client

before(async () => {
  broker = await startBroker({
    env:
      SDK === 'node'
        ? // Room in the broker's queue for every message of the largest
          // burst (10,000 publishes in flight): under the default
          // `drop_oldest` policy, a smaller queue drops whenever this
          // client's reader falls behind its own publishes, and a test that
          // counts messages then hangs.
          { BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY: '16384' }
        : // `block`: the lossless tests publish faster than one JavaScript
          // thread reads, and must lose nothing.
          { BLIPMQ_QUEUES_OVERFLOW_POLICY: 'block' },
  })
  client = await connect(address(broker), { name: `${SDK}-test` })
})

after(async () => {
  await client?.close()
  await broker?.stop()
})

describe('connect', () => {
  test('returns a connected Client that knows the broker limit', async () => {
    assert.ok(client instanceof Client)
    assert.equal(client.status, 'connected')
    assert.equal(client.maxMessageSize, 1048576)
    if (SDK === 'web') {
      assert.equal(await broker.metric('blipmq_transport_connections{transport="websocket"}'), 1)
    }
  })

  test('close ends subscriptions and sets the status', async () => {
    const other = await connect(address(broker))
    const subscription = await other.subscribe('closing.>')
    await other.close()
    assert.equal(other.status, 'closed')
    assert.equal(await subscription.next(), null)
  })
})

describe('publish and subscribe', () => {
  test('a message round trips with its metadata', async () => {
    const subscription = await client.subscribe('orders.*')
    assert.ok(subscription instanceof Subscription)
    assert.equal(subscription.pattern, 'orders.*')
    const before = Date.now()
    assert.equal(await client.publish('orders.created', 'order #1'), undefined)
    const message = await subscription.next({ timeoutMs: 5000 })
    assert.ok(message instanceof Message)
    assert.equal(message.topic, 'orders.created')
    assert.ok(message.payload instanceof Uint8Array)
    assert.equal(text(message.payload), 'order #1')
    if (SDK === 'node') {
      assert.ok(Buffer.isBuffer(message.payload))
      assert.equal(Object.getPrototypeOf(message.payload), Buffer.prototype, 'a plain Buffer')
      assert.ok(Buffer.isBuffer(message.payload.subarray(1)))
      assert.equal(message.payload.toString(), 'order #1')
    } else {
      assert.equal(message.text(), 'order #1')
    }
    assert.equal(typeof message.id, 'bigint')
    assert.ok(message.id > 0n)
    assert.equal(typeof message.timestampMs, 'number')
    assert.ok(Math.abs(message.timestampMs - before) < 60_000)
    assert.equal(message.deliveryCount, 1)
    assert.equal(message.deliveryId, 0n, 'QoS 0 deliveries have no delivery id')
    assert.equal(message.headers.size, 0)
    assert.equal(await message.ack(), undefined, 'a QoS 0 ack resolves at once')
    await subscription.unsubscribe()
  })

  test('payloads: byte views, strings and binary bytes, received as the package bytes', async () => {
    const subscription = await client.subscribe('payloads')
    const backing = new Uint8Array([9, 9, 1, 2, 3, 9])
    const binary = Array.from({ length: 256 }, (_, i) => i)
    // [what is published, the bytes that arrive]
    const cases = [
      [backing.subarray(2, 5), [1, 2, 3]],
      ['text é', [...new TextEncoder().encode('text é')]],
      [bytes(binary), binary],
      ['', []],
    ]
    if (SDK === 'node') cases.unshift([Buffer.from('buf'), [...Buffer.from('buf')]])
    else cases.splice(1, 0, [new Uint16Array([0x0201]), [1, 2]], [new Uint8Array([7, 8]).buffer, [7, 8]])
    for (const [sent] of cases) await client.publish('payloads', sent)
    const got = []
    for (let i = 0; i < cases.length; i++) got.push((await subscription.next({ timeoutMs: 5000 })).payload)
    // Strict: each payload is the package's bytes like any other (a Buffer
    // in Node), not merely equal bytes.
    assert.deepStrictEqual(
      got,
      cases.map(([, expected]) => bytes(expected)),
    )
    await subscription.unsubscribe()
  })

  test('next({ timeoutMs }) resolves null when nothing arrives', async () => {
    const subscription = await client.subscribe('quiet')
    const started = Date.now()
    assert.equal(await subscription.next({ timeoutMs: 100 }), null)
    assert.ok(Date.now() - started >= 90)
    await subscription.unsubscribe()
  })

  test('next({ signal }) rejects with the reason on abort and takes no message', async () => {
    const subscription = await client.subscribe('abort.x')
    // Already aborted: rejected at once, even with a message waiting.
    await client.publish('abort.x', 'first')
    await client.flush()
    const reason = new Error('stop')
    await assert.rejects(subscription.next({ signal: AbortSignal.abort(reason) }), (e) => e === reason)
    assert.equal(text((await subscription.next({ timeoutMs: 5000 })).payload), 'first')

    // Aborted while waiting: that call rejects; a later message goes to the
    // call behind it, in order, and nothing is lost.
    const controller = new AbortController()
    const aborted = subscription.next({ signal: controller.signal })
    const behind = subscription.next({ timeoutMs: 5000 })
    controller.abort()
    await assert.rejects(aborted, (e) => e.name === 'AbortError')
    await client.publish('abort.x', 'second')
    assert.equal(text((await behind).payload), 'second')

    // An abort after the answer changes nothing.
    const late = new AbortController()
    await client.publish('abort.x', 'third')
    assert.equal(text((await subscription.next({ signal: late.signal, timeoutMs: 5000 })).payload), 'third')
    late.abort()
    // A signal times out like timeoutMs, but rejects.
    await assert.rejects(subscription.next({ signal: AbortSignal.timeout(50) }), (e) => e.name === 'TimeoutError')
    await client.publish('abort.x', 'fourth')
    assert.equal(text((await subscription.next({ timeoutMs: 5000 })).payload), 'fourth')
    // Whatever the reason, even null, an abort rejects with it.
    const nullAbort = new AbortController()
    const abortedWithNull = subscription.next({ signal: nullAbort.signal })
    nullAbort.abort(null)
    await assert.rejects(abortedWithNull, (e) => e === null)
    await assert.rejects(subscription.next({ signal: {} }), TypeError)
    await subscription.unsubscribe()
  })

  test('unsubscribe stops delivery, wakes a waiting next and is idempotent', async () => {
    const subscription = await client.subscribe('unsub.x')
    const waiting = subscription.next()
    await subscription.unsubscribe()
    assert.equal(await waiting, null)
    await subscription.unsubscribe()
    const watcher = await client.subscribe('unsub.x')
    await client.publish('unsub.x', 'after')
    assert.equal(text((await watcher.next({ timeoutMs: 5000 })).payload), 'after')
    assert.equal(await subscription.next({ timeoutMs: 50 }), null)
    await watcher.unsubscribe()
  })

  test('concurrent next() calls get the messages in call order, none waits for a later one', async () => {
    const subscription = await client.subscribe('concurrent.x')
    const calls = [subscription.next(), subscription.next(), subscription.next({ timeoutMs: 5000 })]
    // One flush: the messages may arrive in one batch, and every call
    // waiting then is answered from it.
    for (const payload of ['a', 'b', 'c']) client.publish('concurrent.x', payload)
    await client.flush()
    const got = await Promise.race([
      Promise.all(calls),
      new Promise((resolve) => setTimeout(() => resolve('stalled'), 3000)),
    ])
    assert.notEqual(got, 'stalled', 'a call waited for a message of its own')
    assert.deepEqual(
      got.map((message) => text(message.payload)),
      ['a', 'b', 'c'],
    )
    await subscription.unsubscribe()
  })

  test('ttlMs and qos 0 options are accepted', async () => {
    const subscription = await client.subscribe('opts.>', { qos: 0 })
    await client.publish('opts.a', 'x', { ttlMs: 60_000, qos: 0 })
    assert.equal((await subscription.next({ timeoutMs: 5000 })).topic, 'opts.a')
    await subscription.unsubscribe()
  })

  test('members of a queue group share the messages', async () => {
    const first = await client.subscribe('group.jobs', { group: 'workers' })
    const other = await connect(address(broker))
    const second = await other.subscribe('group.jobs', { group: 'workers' })
    for (let i = 0; i < 4; i++) await client.publish('group.jobs', `job${i}`)
    await client.flush()
    const taken = []
    for (const member of [first, second]) {
      for (let i = 0; i < 2; i++) {
        const msg = await member.next({ timeoutMs: 5000 })
        assert.ok(msg, 'each member gets its share')
        taken.push(text(msg.payload))
      }
    }
    assert.deepEqual(taken.sort(), ['job0', 'job1', 'job2', 'job3'])
    await first.unsubscribe()
    await second.unsubscribe()
    await other.close()
  })

  test('publish, flush and close keep call order', async () => {
    const other = await connect(address(broker))
    const subscription = await client.subscribe('order.x')
    other.publish('order.x', 'a')
    other.publish('order.x', 'b')
    const flushed = other.flush()
    other.publish('order.x', 'c')
    const closed = other.close()
    await flushed
    await closed
    const got = []
    for (let i = 0; i < 3; i++) got.push(text((await subscription.next({ timeoutMs: 5000 })).payload))
    assert.deepEqual(got, ['a', 'b', 'c'])
    await subscription.unsubscribe()
  })
})

describe('headers', () => {
  test('an object round trips', async () => {
    const subscription = await client.subscribe('h.object')
    await client.publish('h.object', 'x', { headers: { 'content-type': 'application/json', bin: bytes([0, 255]) } })
    const { headers } = await subscription.next({ timeoutMs: 5000 })
    assert.ok(headers instanceof Headers)
    assert.equal(headers.get('content-type'), 'application/json')
    // Bytes by the package's name for them: getBuffer in Node, getBytes in browsers.
    assert.deepEqual(headers[SDK === 'node' ? 'getBuffer' : 'getBytes']('bin'), bytes([0, 255]))
    assert.equal(headers.get('missing'), undefined)
    await subscription.unsubscribe()
  })

  test('pairs keep their order and repeated keys', async () => {
    const subscription = await client.subscribe('h.pairs')
    const sent = [['a', '1'], ['b', '2'], ['a', '3']]
    await client.publish('h.pairs', 'x', { headers: sent })
    const { headers } = await subscription.next({ timeoutMs: 5000 })
    assert.deepEqual([...headers].map(([k, v]) => [k, text(v)]), sent)
    assert.deepEqual(headers.getAll('a').map(text), ['1', '3'])
    assert.equal(headers.has('b'), true)
    assert.equal(headers.size, 3)
    await subscription.unsubscribe()
  })

  test('a Headers instance is accepted', async () => {
    const subscription = await client.subscribe('h.class')
    await client.publish('h.class', 'x', { headers: new Headers().append('k', 'v') })
    assert.equal((await subscription.next({ timeoutMs: 5000 })).headers.get('k'), 'v')
    await subscription.unsubscribe()
  })
})

describe('async iteration', () => {
  test('for await reads messages in order; break unsubscribes', async () => {
    const subscription = await client.subscribe('iter.*')
    for (let i = 0; i < 5; i++) await client.publish(`iter.${i}`, String(i))
    const seen = []
    for await (const message of subscription) {
      seen.push(text(message.payload))
      if (seen.length === 3) break
    }
    assert.deepEqual(seen, ['0', '1', '2'])
    // The break unsubscribed: the subscription has ended.
    assert.equal(await subscription.next(), null)
    for await (const _ of subscription) assert.fail('an ended subscription yields nothing')
  })

  test('the loop ends when the client closes', async () => {
    const other = await connect(address(broker))
    const subscription = await other.subscribe('iter.close')
    await other.publish('iter.close', 'only')
    await other.flush()
    const seen = []
    for await (const message of subscription) {
      seen.push(text(message.payload))
      await other.close()
    }
    assert.deepEqual(seen, ['only'])
  })

  test('await using detaches and closes', { skip: typeof Symbol.asyncDispose !== 'symbol' }, async () => {
    const other = await connect(address(broker))
    const subscription = await other.subscribe('dispose')
    await subscription[Symbol.asyncDispose]()
    assert.equal(await subscription.next(), null)
    await other[Symbol.asyncDispose]()
    assert.equal(other.status, 'closed')
  })
})

describe('concurrency', () => {
  test('10000 publishes in flight arrive complete and in order', { timeout: 30_000 }, async () => {
    const count = 10_000
    const subscription = await client.subscribe('many')
    await Promise.all(Array.from({ length: count }, (_, i) => client.publish('many', String(i))))
    const received = []
    for await (const message of subscription) {
      received.push(Number(text(message.payload)))
      if (received.length === count) break
    }
    assert.deepEqual(received, Array.from({ length: count }, (_, i) => i))
  })

  test('QoS 1 publishes not awaited one by one are in flight together and keep call order', async () => {
    // Each QoS 1 publish waits only for its place in the queue, not for the
    // confirm of the one before: a burst resolves with increasing ids and
    // arrives in order, mixed with QoS 0.
    const subscription = await client.subscribe('pipelined.qos1')
    const count = 2000
    const pending = []
    for (let i = 0; i < count; i++) {
      pending.push(client.publish('pipelined.qos1', `${i}`, i % 5 === 4 ? undefined : { qos: 1 }))
    }
    const ids = (await Promise.all(pending)).filter((id) => id !== undefined && id !== null)
    assert.equal(ids.length, count - count / 5)
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1] < ids[i], `id ${i} in call order`)
    for (let i = 0; i < count; i++) {
      const message = await subscription.next({ timeoutMs: 5000 })
      assert.equal(text(message.payload), `${i}`)
    }
    await subscription.unsubscribe()
  })

  test('publishers on several clients fan out to several subscribers', async () => {
    const subscribers = await Promise.all([0, 1, 2].map(() => client.subscribe('fan.>')))
    const publishers = await Promise.all([0, 1, 2, 3].map(() => connect(address(broker))))
    await Promise.all(publishers.flatMap((p, n) => Array.from({ length: 250 }, (_, i) => p.publish(`fan.${n}`, `${n}:${i}`))))
    await Promise.all(publishers.map((p) => p.flush()))
    for (const subscription of subscribers) {
      const got = []
      while (got.length < 1000) got.push(text((await subscription.next({ timeoutMs: 5000 })).payload))
      assert.equal(new Set(got).size, 1000)
      await subscription.unsubscribe()
    }
    await Promise.all(publishers.map((p) => p.close()))
  })
})

test('a durable subscription survives breaking out of for await; ack, and unsubscribe deletes it', async () => {
  let sub = await client.subscribe('jobs', { qos: 1, durable: `${SDK}-worker` })
  const id = await client.publish('jobs', 'one', { qos: 1 })
  assert.equal(typeof id, 'bigint')
  let firstDeliveryId
  for await (const msg of sub) {
    assert.equal(msg.id, id)
    assert.equal(msg.deliveryCount, 1)
    assert.equal(typeof msg.deliveryId, 'bigint')
    assert.ok(msg.deliveryId > 0n, 'a QoS 1 delivery has an id to ack by')
    firstDeliveryId = msg.deliveryId
    break // not acked: only detaches
  }
  await client.publish('jobs', 'two', { qos: 1 })
  sub = await client.subscribe('jobs', { qos: 1, durable: `${SDK}-worker` })
  const again = await sub.next({ timeoutMs: 5000 })
  assert.equal(text(again.payload), 'one')
  assert.equal(again.deliveryCount, 2)
  assert.equal(again.deliveryId, firstDeliveryId, 'a redelivery keeps its delivery id')
  await again.ack()
  const second = await sub.next({ timeoutMs: 5000 })
  assert.equal(text(second.payload), 'two')
  await second.ack()
  await sub.unsubscribe()
  await client.publish('jobs', 'three', { qos: 1 })
  sub = await client.subscribe('jobs', { qos: 1, durable: `${SDK}-worker` })
  assert.equal(await sub.next({ timeoutMs: 300 }), null)
  await sub.detach()
})
