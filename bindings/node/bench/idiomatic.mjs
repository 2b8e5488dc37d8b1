// One idiomatic burst through the Node SDK or through the `nats` npm client.
//
// Each side is written the way its README shows, nothing tuned:
// - blipmq: `await client.publish(topic, payload)` in a loop on one
//   connection, `for await (const m of sub)` on a second one;
// - nats: `nc.publish(subject, payload)` in a loop (it returns nothing),
//   `for await (const m of sub)` on a second connection.
// Both in one process. The subscriber is subscribed (BlipMQ: confirmed by
// the broker; nats: a `flush()` round trip after the SUB) and its loop
// started before the first publish; after the loop the publisher
// `flush()`es. The run ends at the last message, or --quiet seconds after
// publishing ended without a new receipt (messages lost), or at --limit
// seconds. Prints one JSON line.
//
//   node idiomatic.mjs blipmq|nats --addr HOST:PORT [--count 200000] [--size 16] [--quiet 3] [--limit 120]
//
// Run by scripts/bench-idiomatic.sh from a scratch project where `blipmq`
// (the packed release build) and `nats` are installed.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

// The installed version of a package of the project this runs in.
const versionOf = (name) =>
  JSON.parse(readFileSync(join(process.cwd(), 'node_modules', name, 'package.json'), 'utf8')).version
const TOPIC = 'bench.idiomatic'
const args = process.argv.slice(2)
const system = args[0]
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? fallback : args[i + 1]
}
const addr = option('addr')
const count = Number(option('count', 200_000))
const size = Number(option('size', 16))
const quietMs = Number(option('quiet', 3)) * 1000
const limitMs = Number(option('limit', 120)) * 1000
if (!['blipmq', 'nats'].includes(system) || !addr) {
  console.error('usage: node idiomatic.mjs blipmq|nats --addr HOST:PORT [--count N] [--size B]')
  process.exit(2)
}

const tally = { received: 0, last: 0, reported: 0, atPublishEnd: 0 }
const sleep = (ms) => new Promise((done) => setTimeout(done, ms))

// Until the consumer is done, or quiet for quietMs after publishing.
async function waitFor(consumer, publishedAt, deadline) {
  let done = false
  consumer.then(() => { done = true }, () => { done = true })
  while (!done) {
    await sleep(20)
    const now = performance.now()
    if (now - Math.max(tally.last, publishedAt) > quietMs || now > deadline) return
  }
}

async function runBlipmq() {
  const { connect } = await import('blipmq')
  const payload = Buffer.alloc(size)
  const subscriber = await connect(addr)
  const client = await connect(addr)
  const sub = await subscriber.subscribe(TOPIC)
  const consumer = (async () => {
    for await (const m of sub) {
      tally.received++
      tally.last = performance.now()
      if (tally.received === count) break
    }
  })()
  const cpu = process.cpuUsage()
  const started = performance.now()
  let published = 0
  for (let i = 0; i < count; i++) {
    await client.publish(TOPIC, payload)
    published++
  }
  await client.flush()
  const publishedAt = performance.now()
  tally.atPublishEnd = tally.received
  await waitFor(consumer, publishedAt, started + limitMs)
  const used = process.cpuUsage(cpu)
  tally.reported = sub.dropped
  await client.close()
  await subscriber.close()
  return finish('blipmq', `blipmq ${versionOf('blipmq')}`, published, started, publishedAt, used)
}

async function runNats() {
  const { connect } = await import('nats')
  const payload = new Uint8Array(size)
  const subscriber = await connect({ servers: addr })
  const nc = await connect({ servers: addr })
  const sub = subscriber.subscribe(TOPIC)
  await subscriber.flush() // the server has the SUB before the first publish
  const consumer = (async () => {
    for await (const m of sub) {
      tally.received++
      tally.last = performance.now()
      if (tally.received === count) break
    }
  })()
  // A slow consumer is reported through the connection's status iterator.
  ;(async () => {
    for await (const s of subscriber.status()) {
      if (String(s.type).toLowerCase().includes('slow')) tally.reported++
    }
  })().catch(() => {})
  const cpu = process.cpuUsage()
  const started = performance.now()
  let published = 0
  for (let i = 0; i < count; i++) {
    nc.publish(TOPIC, payload)
    published++
  }
  await nc.flush()
  const publishedAt = performance.now()
  tally.atPublishEnd = tally.received
  await waitFor(consumer, publishedAt, started + limitMs)
  const used = process.cpuUsage(cpu)
  await nc.close()
  await subscriber.close()
  return finish('nats', `nats ${versionOf('nats')}`, published, started, publishedAt, used)
}

function finish(system, client, published, started, publishedAt, used) {
  const end = tally.received ? tally.last : publishedAt
  const seconds = (end - started) / 1000
  return {
    sdk: 'node',
    system,
    client,
    runtime: `Node.js ${process.versions.node}`,
    count,
    size,
    published,
    received: tally.received,
    lost: published - tally.received,
    reported_drops: tally.reported,
    received_at_publish_end: tally.atPublishEnd,
    seconds: Number(seconds.toFixed(6)),
    publish_seconds: Number(((publishedAt - started) / 1000).toFixed(6)),
    rate: seconds > 0 ? Math.round(tally.received / seconds) : 0,
    cpu_us_per_msg: Number(((used.user + used.system) / Math.max(tally.received, 1)).toFixed(3)),
  }
}

const result = await (system === 'blipmq' ? runBlipmq() : runNats())
console.log(JSON.stringify(result))
process.exit(0)
