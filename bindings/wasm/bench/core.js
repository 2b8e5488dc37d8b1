// One bounded throughput run through the browser SDK, the same code in a
// page and in Node: a publisher and a subscriber client (two WebSocket
// connections), `count` QoS 0 messages of `size` bytes; counts only what
// the subscriber received, timed from the first publish to the last
// delivery.
export async function run(connect, url, { count, size, options = {} }) {
  // The final flush waits behind every message before it.
  options = { requestTimeoutMs: 60_000, ...options }
  const subscriber = await connect(url, options)
  const publisher = await connect(url, options)
  const subscription = await subscriber.subscribe('bench')
  const payload = new Uint8Array(size)
  const started = performance.now()
  const receiving = (async () => {
    let received = 0
    while (received < count) {
      if ((await subscription.next()) === null) break
      received++
    }
    return received
  })()
  for (let i = 0; i < count; i++) {
    const sent = publisher.publish('bench', payload)
    // Wait now and then, so the calls in flight stay bounded.
    if (i % 1000 === 999) await sent
  }
  await publisher.flush()
  const published = (performance.now() - started) / 1000
  const received = await receiving
  const seconds = (performance.now() - started) / 1000
  await publisher.close()
  await subscriber.close()
  return { count, size, received, seconds, published, rate: Math.round(received / seconds) }
}
