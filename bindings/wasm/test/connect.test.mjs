// What is the browser package's own in connecting: its addresses (ws:// by
// default). Publishing and subscribing, which both packages share, are
// tested in bindings/js/test/pubsub.test.mjs (test/shared/ here).
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { connect } from '@blipmq/web'
import { startBroker } from './shared/broker.mjs'

test('host:port without a scheme means ws://', async () => {
  const broker = await startBroker()
  try {
    const client = await connect(broker.url.replace('ws://', ''))
    assert.equal(client.status, 'connected')
    await client.close()
  } finally {
    await broker.stop()
  }
})
