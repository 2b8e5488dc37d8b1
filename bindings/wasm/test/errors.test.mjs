// Errors from what is the browser package's own: the broker's origin
// check reaches the page as a coded error, and a host without a WebSocket
// class gets one that says so. The errors both packages raise:
// bindings/js/test/errors.test.mjs (test/shared/ here).
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { after, before, test } from 'node:test'

import { WebSocket } from 'ws'
import * as web from '@blipmq/web'
import { startBroker } from './shared/broker.mjs'
import { rejectsWith } from './shared/sdk.mjs'

const { connect } = web
let broker

before(async () => {
  broker = await startBroker()
})

after(async () => {
  await broker?.stop()
})

test('a page from an origin the broker does not allow cannot connect (600)', async () => {
  const guarded = await startBroker({ env: { BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS: 'http://good.test' } })
  // What a browser does: send the page's origin. Also proves the
  // `WebSocket` option (a class used instead of the global one).
  const from = (origin) => class extends WebSocket {
    constructor(url) {
      super(url, { origin })
    }
  }
  try {
    await rejectsWith(connect(guarded.url, { WebSocket: from('http://evil.test') }), web.ConnectError, 600, 'ConnectFailed')
    assert.equal(await guarded.metric('blipmq_websocket_upgrade_failures_total{reason="origin"}'), 1)
    const ok = await connect(guarded.url, { WebSocket: from('http://good.test') })
    await ok.close()
  } finally {
    await guarded.stop()
  }
})

test('no WebSocket class in the host is 600 with a message that says so', async () => {
  // A child process without the `ws` stand-in (Node 20 has no global one).
  const source = `
    import { connect } from '@blipmq/web'
    if (typeof WebSocket !== 'undefined') { console.log('has-global'); process.exit(0) }
    try { await connect(process.argv[1]) } catch (e) { console.log(e.code, e.message) }`
  const child = spawn(process.execPath, ['--input-type=module', '-e', source, broker.url], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  await once(child, 'exit')
  if (out.startsWith('has-global')) return // Node 22+: nothing to prove here
  assert.match(out, /^600 .*no global WebSocket/)
})
