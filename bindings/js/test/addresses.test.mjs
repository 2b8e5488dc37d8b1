// Several broker addresses: connect skips a dead one, the error when all
// are dead names each, and a lost broker hands over to the next address.
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { test } from 'node:test'

import { startBroker } from './broker.mjs'
import { SDK, address, nextEvent, rejectsWith, sdk, text } from './sdk.mjs'

const { ConnectError, InvalidArgumentError, connect } = sdk

/** An address nobody listens on (a port the OS handed out and took back), in the package's form. */
async function deadAddress() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return SDK === 'node' ? `127.0.0.1:${port}` : `ws://127.0.0.1:${port}`
}

test('a dead first address is skipped for the next', async () => {
  const broker = await startBroker()
  const dead = await deadAddress()
  try {
    const client = await connect([dead, address(broker)])
    const subscription = await client.subscribe('listed')
    await client.publish('listed', 'via the second')
    assert.equal(text((await subscription.next({ timeoutMs: 5000 })).payload), 'via the second')
    await client.close()
    // One string of addresses separated by commas works too.
    const listed = await connect(`${dead}, ${address(broker)}`)
    assert.equal(listed.status, 'connected')
    await listed.close()
  } finally {
    await broker.stop()
  }
})

test('when every address is dead the error names each, in order', async () => {
  const [first, second] = [await deadAddress(), await deadAddress()]
  const attempt = connect([first, second], { reconnect: false })
  await rejectsWith(attempt, ConnectError, 600, 'ConnectFailed')
  const { message } = await attempt.catch((error) => error)
  const [at, next] = [message.indexOf(`[${first}]`), message.indexOf(`[${second}]`)]
  assert.ok(at >= 0 && next > at, message)
})

test('no address, or one that is not a string, is refused', async () => {
  await rejectsWith(connect([]), InvalidArgumentError, 301, 'InvalidArgument')
  await assert.rejects(connect([42]), TypeError)
  await assert.rejects(connect(7878), TypeError)
})

test('a lost broker hands over to the next address, which the reconnect event names', async () => {
  const [first, second] = [await startBroker(), await startBroker()]
  const client = await connect([address(first), address(second)])
  try {
    const subscription = await client.subscribe('moves')
    const reconnected = nextEvent(client, 'reconnect')
    await first.stop()
    assert.equal((await reconnected).address, address(second))
    await client.flush()
    const other = await connect(address(second))
    await other.publish('moves', 'on the second')
    await other.close()
    assert.equal(text((await subscription.next({ timeoutMs: 5000 })).payload), 'on the second')
  } finally {
    await client.close()
    await second.stop()
  }
})
