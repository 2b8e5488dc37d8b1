// One idiomatic burst in a page (see idiomatic.mjs), through @blipmq/web or
// through nats.ws, each written the way its README shows, nothing tuned:
// - @blipmq/web: `await client.publish(topic, payload)` in a loop on one
//   client, `for await (const msg of sub)` on a second;
// - nats.ws: `nc.publish(subject, payload)` in a loop (it returns nothing),
//   `for await (const m of sub)` on a second connection.
// The subscriber is subscribed (BlipMQ: confirmed by the broker; nats.ws: a
// `flush()` round trip after the SUB) and its loop started before the first
// publish; after the loop the publisher `flush()`es. The run ends at the
// last message, or `quietMs` after publishing ended without a new receipt
// (messages lost), or at `limitMs`.
const TOPIC = 'bench.idiomatic'
const sleep = (ms) => new Promise((done) => setTimeout(done, ms))

export async function run(system, connect, url, { count, size, quietMs = 3000, limitMs = 120_000 }) {
  const tally = { received: 0, last: 0, reported: 0, atPublishEnd: 0 }
  const payload = new Uint8Array(size)
  let subscriber, client, sub
  if (system === 'blipmq') {
    subscriber = await connect(url)
    client = await connect(url)
    sub = await subscriber.subscribe(TOPIC)
  } else {
    subscriber = await connect({ servers: url })
    client = await connect({ servers: url })
    sub = subscriber.subscribe(TOPIC)
    await subscriber.flush()
    ;(async () => {
      for await (const s of subscriber.status()) {
        if (String(s.type).toLowerCase().includes('slow')) tally.reported++
      }
    })().catch(() => {})
  }
  let done = false
  ;(async () => {
    for await (const m of sub) {
      tally.received++
      tally.last = performance.now()
      if (tally.received === count) break
    }
  })().finally(() => { done = true })
  const started = performance.now()
  let published = 0
  if (system === 'blipmq') {
    for (let i = 0; i < count; i++) {
      await client.publish(TOPIC, payload)
      published++
    }
  } else {
    for (let i = 0; i < count; i++) {
      client.publish(TOPIC, payload)
      published++
    }
  }
  await client.flush()
  const publishedAt = performance.now()
  tally.atPublishEnd = tally.received
  while (!done) {
    await sleep(20)
    const now = performance.now()
    if (now - Math.max(tally.last, publishedAt) > quietMs || now - started > limitMs) break
  }
  if (system === 'blipmq') tally.reported = sub.dropped
  await client.close()
  await subscriber.close()
  const end = tally.received ? tally.last : publishedAt
  const seconds = (end - started) / 1000
  return {
    system,
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
  }
}
