// A consumer of the package's types, checked with `tsc --strict` by
// scripts/test-node.sh (never run): it must compile against the installed
// package exactly as a user's code would.
import {
  BlipMQError,
  Headers,
  InvalidTopicError,
  connect,
  type Client,
  type DisconnectKind,
  type Message,
  type PublishOptions,
  type Subscription,
  type TlsOptions,
} from 'blipmq'
import blipmq from 'blipmq'

export async function example(addr: string): Promise<void> {
  const client: Client = await connect(addr, { apiKey: 'key', name: 'typed' })
  const tls: TlsOptions = { ca: Buffer.from('PEM'), cert: 'PEM', key: new Uint8Array(), serverName: 'broker' }
  await connect('tls://broker:7878', { tls })
  await connect(addr, { tls: true })
  await connect(addr, { tls: { ca: ['PEM', Buffer.from('PEM')] } })
  // @ts-expect-error: an option of tls.connect this client does not have
  await connect(addr, { tls: { rejectUnauthorized: false } })
  const options: PublishOptions = { ttlMs: 1000, qos: 0, headers: [['a', 'b'], ['a', Buffer.from('c')]] }
  const none: bigint | undefined = await client.publish('orders.created', new Uint8Array([1, 2]), options)
  await client.publish('orders.created', 'text', { headers: { k: 'v' }, qos: 1 })
  await client.publish('orders.created', Buffer.from('x'), { headers: new Headers().append('k', 'v') })
  void none
  client.on('reconnect', (connectionId: bigint) => console.log(connectionId))
  client.on('disconnect', (reason: string) => console.log(reason))
  client.on('disconnect', (reason: string, kind: DisconnectKind, code: number, ioKind: string | undefined) => {
    const known: 'broker_closed' | 'io' | 'protocol' = kind
    console.log(reason, known, code + 1, ioKind?.length)
  })
  client.on('reconnectFailed', (attempt: number, error: string) => console.log(attempt, error))
  client.once('serverError', (error: BlipMQError) => console.log(error.code, error.codeName))
  client.on('close', () => console.log('closed'))
  // @ts-expect-error: a connection id is a bigint
  client.on('reconnect', (connectionId: string) => console.log(connectionId))

  const subscription: Subscription = await client.subscribe('orders.*', { qos: 0, durable: 'd', group: 'g' })
  const first: Message | null = await subscription.next({ timeoutMs: 100 })
  const second: Message | null = await subscription.next({ signal: AbortSignal.timeout(100) })
  void second
  if (first !== null) {
    const topic: string = first.topic
    const payload: Buffer = first.payload
    const id: bigint = first.id
    const at: number = first.timestampMs + first.deliveryCount
    const header: string | undefined = first.headers.get('k')
    for (const [key, value] of first.headers) console.log(key, value.length)
    await first.ack()
    console.log(topic, payload, id, at, header)
  }
  for await (const message of subscription) {
    console.log(message.payload.toString())
    break
  }
  try {
    await client.publish('bad topic', 'x')
  } catch (error) {
    if (error instanceof InvalidTopicError) {
      const code: number = error.code
      console.log(code, error.codeName, error.name, error.cause)
    } else if (error instanceof BlipMQError) {
      console.log(error.code)
    }
  }
  await subscription.unsubscribe()
  const callbacks: Subscription = await client.subscribe('orders.>', {
    onMessage: (message: Message) => console.log(message.topic),
    onError: (error: unknown) => console.error(error),
  })
  await callbacks.detach()
  await client.flush()
  const status: 'connected' | 'reconnecting' | 'closed' = client.status
  console.log(status, client.maxMessageSize, typeof blipmq.connect)
  await client.close()
}
