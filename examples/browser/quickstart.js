// BlipMQ from a browser page: publish and subscribe, then a QoS 1 publish
// that the broker confirms once it is on disk, received and acked. The page
// prints what the other languages' quickstarts print, then sets
// data-state="done" on #output (or "failed", with the error).
//   quickstart.html?broker=ws://127.0.0.1:7879&key=<api key, if the broker wants one>
import { connect } from './blipmq-web/index.js'

const params = new URLSearchParams(location.search)
const output = document.getElementById('output')
const print = (line) => output.append(`${line}\n`)

try {
  const client = await connect(params.get('broker') ?? 'ws://127.0.0.1:7879', { apiKey: params.get('key') ?? undefined })

  // QoS 0: subscribe (resolves once the broker has it), publish, receive.
  const orders = await client.subscribe('orders.*')
  await client.publish('orders.created', 'order #1')
  const order = await orders.next({ timeoutMs: 10_000 })
  print(`received ${order.topic}: ${order.text()}`)

  // QoS 1: the publish resolves once the broker has stored the message; the
  // subscriber acks it, or it is delivered again.
  const jobs = await client.subscribe('jobs.>', { qos: 1 })
  await client.publish('jobs.resize', 'img-1', { qos: 1 })
  print('confirmed jobs.resize')
  const job = await jobs.next({ timeoutMs: 10_000 })
  await job.ack()
  print(`acked ${job.topic}: ${job.text()}`)

  await client.close()
  output.dataset.state = 'done'
} catch (error) {
  print(`failed: ${error}`)
  output.dataset.state = 'failed'
}
