// The conformance testee for both JavaScript SDKs: `--package node` drives
// the Node SDK (the npm package `blipmq`) over TCP, `--package web` the
// browser SDK (`@blipmq/web`: the wasm client in Node, over a WebSocket, the
// `ws` package's, as Node 20 has none of its own, to the broker's WebSocket
// listener, whose address the runner passes as `websocket_addr`).
//
// Speaks the testee contract of conformance-tests/README.md: one JSON
// request per stdin line, one reply per request on stdout, in order; logs on
// stderr. It never judges anything. It imports the package as a user would,
// so it runs from the project scripts/test-node.sh or scripts/test-web.sh
// installs the packed tarballs into (`{target}/node-test-project/testee.mjs`,
// `{target}/web-test-project/testee.mjs`).
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

// What differs between the two packages: where they connect, and how their
// events are heard (EventEmitter arguments, or a CustomEvent's detail, in
// the same order).
const PACKAGES = {
  node: {
    module: 'blipmq',
    sdk: 'node',
    title: 'Node SDK',
    // A list of addresses to try in order, or the one broker.
    address: (args) => strList(args, 'addresses') ?? str(args, 'addr'),
    // The runner's TLS mode: a tls:// address and the test CA's PEM file.
    connectOptions: async (args) => {
      const ca = str(args, 'tls_ca', true)
      return ca === undefined ? {} : { tls: { ca: (await import('node:fs')).readFileSync(ca) } }
    },
    capabilities: ['tls'],
    on: (target, type, handler) => target.on(type, handler),
  },
  web: {
    module: '@blipmq/web',
    sdk: 'wasm',
    title: 'browser SDK',
    // The WebSocket listener; `addr` (TCP) only when the runner gives none.
    address: (args) =>
      strList(args, 'websocket_addresses') ?? str(args, 'websocket_addr', true) ?? str(args, 'addr'),
    connectOptions: async () => ({ WebSocket: (await import('ws')).WebSocket }),
    capabilities: [],
    on: (target, type, handler) =>
      target.addEventListener(type, (event) => handler(...Object.values(event.detail ?? {}))),
  },
}

const { values: cli } = parseArgs({ options: { package: { type: 'string', default: 'node' } } })
const PACKAGE = PACKAGES[cli.package]
if (PACKAGE === undefined) throw new Error(`--package must be node or web, not ${cli.package}`)
const { BlipMQError, connect } = await import(PACKAGE.module)

const INVALID_ARGUMENT = 301
const CLIENT_CLOSED = 603

class Failure extends Error {
  constructor(code, message) {
    super(message)
    this.code = code
  }
}

const invalid = (message) => new Failure(INVALID_ARGUMENT, message)

/**
 * actor name -> { client, subscriptions: Map<sub name, Subscription>,
 * unacked: Map<sub name, Map<delivery id, Message>> }
 */
const actors = new Map()

/** An optional list of strings (`connect`'s `addresses`). */
function strList(args, name) {
  const value = args[name]
  if (value == null) return undefined
  if (!Array.isArray(value) || value.some((one) => typeof one !== 'string')) {
    throw invalid(`\`${name}\` must be a list of strings`)
  }
  return value
}

function str(args, name, optional = false) {
  const value = args[name]
  if (value == null && optional) return undefined
  if (typeof value !== 'string') throw invalid(`\`${name}\` must be a string`)
  return value
}

function uint(args, name, optional = false) {
  const value = args[name]
  if (value == null && optional) return undefined
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`\`${name}\` must be a non-negative integer`)
  return value
}

function bytes(value, name) {
  if (typeof value !== 'string') throw invalid(`\`${name}\` must be base64`)
  return new Uint8Array(Buffer.from(value, 'base64'))
}

const base64 = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

function flag(args, name) {
  const value = args[name]
  if (value == null) return false
  if (typeof value !== 'boolean') throw invalid(`\`${name}\` must be true or false`)
  return value
}

/** The client's events from now on, for `events` (failed reconnect attempts left out). */
function eventLog(client) {
  const log = { events: [], wake: null }
  const push = (event) => {
    log.events.push(event)
    log.wake?.()
  }
  PACKAGE.on(client, 'serverError', (error) => push({ kind: 'server_error', code: error.code }))
  PACKAGE.on(client, 'disconnect', () => push({ kind: 'disconnected' }))
  PACKAGE.on(client, 'reconnect', () => push({ kind: 'reconnected' }))
  PACKAGE.on(client, 'close', () => push({ kind: 'closed' }))
  return log
}

function actorOf(name) {
  const actor = actors.get(name)
  if (actor === undefined) throw new Failure(CLIENT_CLOSED, `actor \`${name}\` has no client`)
  return actor
}

function subscriptionOf(actor, args) {
  const sub = str(args, 'sub')
  const subscription = actor.subscriptions.get(sub)
  if (subscription === undefined) throw invalid(`no subscription \`${sub}\``)
  return [sub, subscription]
}

/** The message `receive` returned with `delivery_id`; taken from the unacked ones unless `keep`. */
function received(name, args, { keep }) {
  const actor = actorOf(name)
  const sub = str(args, 'sub')
  const deliveryId = str(args, 'delivery_id')
  const message = actor.unacked.get(sub)?.get(deliveryId)
  if (message === undefined) throw invalid(`no unacked delivery ${deliveryId} on \`${sub}\``)
  if (!keep) actor.unacked.get(sub).delete(deliveryId)
  return message
}

async function closeActor(name) {
  const actor = actors.get(name)
  actors.delete(name)
  await actor?.client.close()
}

const operations = {
  hello: async () => ({ sdk: PACKAGE.sdk, version: '0.1.0', capabilities: ['pubsub', 'headers', 'qos1', 'events', 'addresses', 'job_queue', ...PACKAGE.capabilities] }),

  async connect(name, args) {
    const addr = PACKAGE.address(args)
    const options = {
      ...(await PACKAGE.connectOptions(args)),
      apiKey: str(args, 'api_key', true),
      name: str(args, 'name', true),
      reconnect: flag(args, 'reconnect'),
      subscriptionCapacity: uint(args, 'subscription_capacity', true),
    }
    await closeActor(name)
    const client = await connect(addr, options)
    actors.set(name, { client, subscriptions: new Map(), unacked: new Map(), events: eventLog(client) })
    return {}
  },

  async close(name) {
    actorOf(name)
    await closeActor(name)
    return {}
  },

  async publish(name, args) {
    const actor = actorOf(name)
    const headers = args.headers == null ? undefined : args.headers
    if (headers !== undefined && !Array.isArray(headers)) throw invalid('`headers` must be a list of {key, value}')
    const id = await actor.client.publish(str(args, 'topic'), bytes(args.payload, 'payload'), {
      ttlMs: uint(args, 'ttl_ms', true),
      qos: uint(args, 'qos', true),
      headers: headers?.map((h) => [str(h, 'key'), bytes(h.value, 'value')]),
    })
    return id === undefined ? {} : { message_id: id.toString() }
  },

  async subscribe(name, args) {
    const actor = actorOf(name)
    const sub = str(args, 'sub')
    const subscription = await actor.client.subscribe(str(args, 'pattern'), {
      qos: uint(args, 'qos', true),
      durable: str(args, 'durable', true),
      group: str(args, 'group', true),
      ackTimeoutMs: uint(args, 'ack_timeout_ms', true),
      maxDeliveries: uint(args, 'max_deliveries', true),
    })
    // Discards as the SDK reports them to the application (`receive`
    // counts them).
    subscription.heard = { dropped: 0, onDrop: null }
    PACKAGE.on(subscription, 'drop', (count) => {
      subscription.heard.dropped += count
      subscription.heard.onDrop?.()
    })
    // A name used again names the new subscription; the old one ends.
    const previous = actor.subscriptions.get(sub)
    actor.subscriptions.set(sub, subscription)
    await previous?.unsubscribe().catch(() => {})
    return {}
  },

  async unsubscribe(name, args) {
    const actor = actorOf(name)
    const [sub, subscription] = subscriptionOf(actor, args)
    actor.subscriptions.delete(sub)
    await subscription.unsubscribe()
    return {}
  },

  // Up to `count` messages within `timeout_ms` in all; a message is taken
  // only when returned, so later ones stay queued for the next receive.
  // Nothing is acked here: QoS 1 deliveries wait for `ack`. Discards the
  // SDK reports meanwhile (its 'drop' event) are counted, and with
  // `count_dropped` count towards `count`.
  async receive(name, args) {
    const actor = actorOf(name)
    const [sub, subscription] = subscriptionOf(actor, args)
    const count = uint(args, 'count')
    const countDropped = args.count_dropped === true
    const deadline = Date.now() + Math.min(uint(args, 'timeout_ms'), 2 ** 31 - 1)
    const messages = []
    const heard = subscription.heard
    const droppedAtStart = heard.dropped
    const dropped = () => heard.dropped - droppedAtStart
    const done = () => messages.length + (countDropped ? dropped() : 0) >= count
    while (!done()) {
      // A discard reported while next() waits may complete the count.
      const enough = new AbortController()
      heard.onDrop = () => {
        if (done()) enough.abort()
      }
      let message
      try {
        message = await subscription.next({ timeoutMs: Math.max(0, deadline - Date.now()), signal: enough.signal })
      } catch (error) {
        if (enough.signal.aborted) break
        throw error
      } finally {
        heard.onDrop = null
      }
      if (message === null) break
      if (message.deliveryId !== 0n) {
        if (!actor.unacked.has(sub)) actor.unacked.set(sub, new Map())
        actor.unacked.get(sub).set(message.deliveryId.toString(), message)
      }
      messages.push({
        topic: message.topic,
        payload: base64(message.payload),
        id: message.id.toString(),
        timestamp_ms: String(message.timestampMs),
        delivery_count: message.deliveryCount,
        delivery_id: message.deliveryId.toString(),
        headers: [...message.headers].map(([key, value]) => ({ key, value: base64(value) })),
        dropped_before: message.droppedBefore,
      })
    }
    return { messages, dropped: dropped(), dropped_total: subscription.dropped }
  },

  async ack(name, args) {
    await received(name, args, { keep: false }).ack()
    return {}
  },

  // A redelivery after a nak comes back through `receive` as a message of its own.
  async nak(name, args) {
    const delayMs = uint(args, 'delay_ms', true) ?? 0
    await received(name, args, { keep: false }).nak({ delayMs })
    return {}
  },

  async term(name, args) {
    await received(name, args, { keep: false }).term()
    return {}
  },

  async in_progress(name, args) {
    await received(name, args, { keep: true }).inProgress()
    return {}
  },

  async flush(name) {
    await actorOf(name).client.flush()
    return {}
  },

  // The events since the connect or the last `events`, up to the first of
  // kind `until` or until `timeout_ms` passes.
  async events(name, args) {
    const log = actorOf(name).events
    const until = str(args, 'until')
    const deadline = Date.now() + Math.min(uint(args, 'timeout_ms'), 2 ** 31 - 1)
    const taken = []
    for (;;) {
      while (log.events.length > 0) {
        const event = log.events.shift()
        taken.push(event)
        if (event.kind === until) return { events: taken }
      }
      const remaining = deadline - Date.now()
      if (remaining <= 0) return { events: taken }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, remaining)
        log.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      log.wake = null
    }
  },
}

async function handle(request) {
  const { id, actor, op, args = {} } = request
  if (op === 'send_raw' || op === 'read_frame') {
    return { id, skipped: `\`${op}\` needs raw protocol access, which the ${PACKAGE.title} does not expose` }
  }
  const operation = Object.hasOwn(operations, op) ? operations[op] : undefined
  if (operation === undefined) return { id, skipped: `unknown op \`${op}\`` }
  try {
    if (op !== 'hello' && typeof actor !== 'string') throw invalid(`\`${op}\` needs an \`actor\``)
    return { id, ok: await operation(actor, args ?? {}) }
  } catch (error) {
    const code = error instanceof BlipMQError || error instanceof Failure ? error.code : INVALID_ARGUMENT
    console.error(`${PACKAGE.sdk} testee: ${id} ${op}: ${code} ${error.message}`)
    // The SDK's own errors name their class, which the runner checks.
    const sdkClass = error instanceof BlipMQError ? { class: error.name } : {}
    return { id, err: { code, message: error.message, ...sdkClass } }
  }
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.trim() === '') continue
  let reply
  try {
    const request = JSON.parse(line)
    if (typeof request !== 'object' || request === null || typeof request.id !== 'string' || typeof request.op !== 'string') {
      reply = { id: request?.id ?? null, err: { code: INVALID_ARGUMENT, message: 'a request has a string `id` and `op`' } }
    } else {
      reply = await handle(request)
    }
  } catch (error) {
    reply = { id: null, err: { code: INVALID_ARGUMENT, message: `not JSON: ${error.message}` } }
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`)
}
for (const name of [...actors.keys()]) await closeActor(name)
