// BlipMQ from Node: publish and subscribe, then a QoS 1 publish that the
// broker confirms once it is on disk, received and acked.
//
//   npm install blipmq            # the package scripts/test-node.sh packs
//   node examples/node/quickstart.mjs 127.0.0.1:7878
import { connect } from 'blipmq'

const client = await connect(process.argv[2] ?? '127.0.0.1:7878')

// QoS 0: subscribe (resolves once the broker has it), publish, receive.
const orders = await client.subscribe('orders.*')
await client.publish('orders.created', 'order #1')
const order = await orders.next({ timeoutMs: 10_000 })
console.log(`received ${order.topic}: ${order.payload}`)

// QoS 1: the publish resolves once the broker has stored the message; the
// subscriber acks it, or it is delivered again.
const jobs = await client.subscribe('jobs.>', { qos: 1 })
await client.publish('jobs.resize', 'img-1', { qos: 1 })
console.log('confirmed jobs.resize')
const job = await jobs.next({ timeoutMs: 10_000 })
await job.ack()
console.log(`acked ${job.topic}: ${job.payload}`)

await client.close()
