// A consumer of the package's types, checked with `tsc --strict` by
// scripts/test-web.sh (never run): it must compile against the installed
// package exactly as a page's code would.
import {
  BlipMQError,
  Headers,
  InvalidTopicError,
  connect,
  load,
  type Client,
  type DisconnectDetail,
  type DisconnectKind,
  type Message,
  type PublishOptions,
  type Subscription,
} from '@blipmq/web'

export async function example(url: string): Promise<void> {
  await load()
  const client: Client = await connect(url, { apiKey: 'key', name: 'typed', WebSocket })
  const options: PublishOptions = { ttlMs: 1000, qos: 0, headers: [['a', 'b'], ['a', new Uint8Array([1])]] }
  const none: bigint | undefined = await client.publish('orders.created', new Uint8Array([1, 2]), options)
  await client.publish('orders.created', 'text', { headers: { k: 'v' }, qos: 1 })
  await client.publish('orders.created', new ArrayBuffer(2), { headers: new Headers().append('k', 'v') })
  void none

  const subscription: Subscription = await client.subscribe('orders.*', { qos: 0, durable: 'd', group: 'g' })
  const first: Message | null = await subscription.next({ timeoutMs: 100 })
  client.addEventListener('reconnect', (event) => console.log(event.detail.connectionId + 1n))
  client.addEventListener('disconnect', (event) => console.log(event.detail.reason.length))
  client.addEventListener('disconnect', (event) => {
    const kind: DisconnectKind = event.detail.kind
    const detail: DisconnectDetail = event.detail
    console.log(kind === 'broker_closed', detail.code + 1, detail.ioKind?.length)
  })
  client.addEventListener('reconnectFailed', (event) => console.log(event.detail.attempt, event.detail.error))
  client.addEventListener('serverError', (event) => console.log(event.detail.error.code))
  client.addEventListener('close', () => console.log('closed'))
  const second: Message | null = await subscription.next({ signal: AbortSignal.timeout(100) })
  void second
  if (first !== null) {
    const topic: string = first.topic
    const payload: Uint8Array = first.payload
    const text: string = first.text()
    const id: bigint = first.id
    const from: string | undefined = first.headers.get('from')
    const count: number = first.deliveryCount
    await first.ack()
    void [topic, payload, text, id, from, count]
  }
  for await (const message of subscription) {
    const bytes: Uint8Array | undefined = message.headers.getBytes('k')
    void bytes
    break
  }
  await subscription.unsubscribe()
  await subscription.detach()
  const status: 'connected' | 'reconnecting' | 'closed' = client.status
  const max: number = client.maxMessageSize
  void [status, max]
  try {
    await client.flush()
  } catch (error) {
    if (error instanceof InvalidTopicError) console.log(error.code, error.codeName)
    if (error instanceof BlipMQError) console.log(error.code)
  }
  await client.close()
}
