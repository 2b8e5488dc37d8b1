// What is the browser package's own in a client's life: without reconnect,
// a broker that goes away ends the client and its subscriptions. What both
// packages share is tested in bindings/js/test/lifecycle.test.mjs
// (test/shared/ here).
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { connect } from '@blipmq/web'
import { startBroker } from './shared/broker.mjs'

test('without reconnect, a broker shutdown ends the client and its subscriptions', async () => {
  const broker = await startBroker()
  const client = await connect(broker.url, { reconnect: false })
  const subscription = await client.subscribe('bye')
  await broker.stop()
  assert.equal(await subscription.next({ timeoutMs: 5000 }), null)
  assert.equal(client.status, 'closed')
})
