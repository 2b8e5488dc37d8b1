// Confirmed QoS 1 publishes per second from the Node SDK, two ways:
// - awaited: `await client.publish(topic, payload, { qos: 1 })` in a loop,
//   as the README writes it (one confirm at a time, whatever the SDK does);
// - burst: the same calls not awaited one by one, `--window` of them in
//   flight, then `await Promise.all(...)` (what pipelining can do).
// Each counts only publishes whose Promise resolved with a message id.
//
//   node bindings/node/bench/qos1-bench.mjs --addr 127.0.0.1:PORT [--count 20000] [--window 1000]
//
// NAPI_RS_NATIVE_LIBRARY_PATH=/path/to/addon.node picks the addon to
// measure (an A/B of two builds). Bounded by --count and a 120 s limit.
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const require = createRequire(import.meta.url)
const { connect } = require('../index.js')

const { values } = parseArgs({
  options: {
    addr: { type: 'string' },
    count: { type: 'string', default: '20000' },
    window: { type: 'string', default: '1000' },
    size: { type: 'string', default: '16' },
  },
})
const count = Number(values.count)
const window = Number(values.window)
const payload = Buffer.alloc(Number(values.size), 7)
const deadline = Date.now() + 120_000

const client = await connect(values.addr, { name: 'qos1-bench' })
const results = {}

let confirmed = 0
let started = process.hrtime.bigint()
for (let i = 0; i < count && Date.now() < deadline; i++) {
  if ((await client.publish('bench.qos1', payload, { qos: 1 })) != null) confirmed++
}
results.awaited = Number(confirmed) / (Number(process.hrtime.bigint() - started) / 1e9)

confirmed = 0
started = process.hrtime.bigint()
for (let sent = 0; sent < count && Date.now() < deadline; sent += window) {
  const pending = []
  for (let i = 0; i < window && sent + i < count; i++) {
    pending.push(client.publish('bench.qos1', payload, { qos: 1 }))
  }
  for (const id of await Promise.all(pending)) if (id != null) confirmed++
}
results.burst = Number(confirmed) / (Number(process.hrtime.bigint() - started) / 1e9)

await client.close()
console.log(
  JSON.stringify({ count, window, size: payload.length, awaited: Math.round(results.awaited), burst: Math.round(results.burst) }),
)
