// TLS: `tls://` addresses and the `tls` option ({ ca, cert, key,
// serverName }), against brokers with certificates made at test time.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import * as blipmq from 'blipmq'
import { makeTestPki, startBroker, startTlsBroker } from './shared/broker.mjs'

const { connect, ConnectError } = blipmq
let pki
const brokers = []

before(() => {
  pki = makeTestPki()
})

after(async () => {
  for (const broker of brokers) await broker.stop()
  pki?.remove()
})

async function tlsBroker(options) {
  const broker = await startTlsBroker(pki, options)
  brokers.push(broker)
  return broker
}

// The test certificate is for localhost, 127.0.0.1 and ::1.
const tlsUrl = (broker) => `tls://localhost:${broker.port}`

/** Connecting rejects with ConnectError (600) whose message matches `reason`. */
async function refused(addr, tls, reason) {
  await assert.rejects(connect(addr, { tls, reconnect: false, connectTimeoutMs: 5000 }), (error) => {
    assert.ok(error instanceof ConnectError, `${error} is a ConnectError`)
    assert.equal(error.code, 600)
    assert.equal(error.codeName, 'ConnectFailed')
    assert.match(error.message, reason)
    return true
  })
}

test('a round trip over TLS with the CA, as a string, a Buffer or an array', async () => {
  const broker = await tlsBroker()
  const client = await connect(tlsUrl(broker), { tls: { ca: pki.read('ca.pem') } })
  const subscription = await client.subscribe('secure.>')
  assert.equal(typeof (await client.publish('secure.greeting', 'over TLS', { qos: 1 })), 'bigint')
  const message = await subscription.next({ timeoutMs: 5000 })
  assert.equal(message.topic, 'secure.greeting')
  assert.equal(message.payload.toString(), 'over TLS')
  await client.close()
  // The tls option makes the connection TLS without a tls:// address (and
  // the IP is in the certificate).
  for (const ca of [pki.read('ca.pem').toString(), [pki.read('other-ca.pem'), pki.read('ca.pem')]]) {
    const again = await connect(broker.addr, { tls: { ca } })
    await again.flush()
    await again.close()
  }
})

test('a wrong CA, a wrong name or an expired certificate is refused with the reason', async () => {
  const url = tlsUrl(await tlsBroker())
  await refused(url, { ca: pki.read('other-ca.pem') }, /UnknownIssuer/)
  // The name is checked: the certificate is not for this one.
  await refused(url, { ca: pki.read('ca.pem'), serverName: 'blipmq.invalid' }, /not valid for name/)
  // tls: true trusts only the system's roots, which do not know the test CA.
  await refused(url, true, /./)
  const expired = await tlsBroker({ cert: 'expired' })
  await refused(tlsUrl(expired), { ca: pki.read('ca.pem') }, /expired/)
})

test('plaintext and TLS that do not match say so', async () => {
  const secure = await tlsBroker()
  await refused(secure.addr, undefined, /speaks TLS/)
  const plain = await startBroker()
  brokers.push(plain)
  await refused(tlsUrl(plain), { ca: pki.read('ca.pem') }, /does not speak TLS/)
})

test('mutual TLS works with the client certificate and fails without it', async () => {
  const url = tlsUrl(await tlsBroker({ clientCa: true }))
  const ca = pki.read('ca.pem')
  const client = await connect(url, { tls: { ca, cert: pki.read('client.pem'), key: pki.read('client.key').toString() } })
  await client.flush()
  await client.close()
  await refused(url, { ca }, /CertificateRequired/)
  await refused(url, { ca, cert: pki.read('stranger.pem'), key: pki.read('stranger.key') }, /fatal alert/)
  await refused(url, { ca, cert: pki.read('client.pem') }, /go together/)
})

test('TLS options this client does not have are refused, not ignored', async () => {
  const url = tlsUrl(await tlsBroker())
  await assert.rejects(connect(url, { tls: { ca: 'x', rejectUnauthorized: false } }), {
    name: 'TypeError',
    message: /tls.rejectUnauthorized is not an option here/,
  })
  await assert.rejects(connect(url, { tls: { servername: 'broker' } }), {
    name: 'TypeError',
    message: /did you mean serverName/,
  })
  await assert.rejects(connect(url, { tls: { ca: 42 } }), { name: 'TypeError', message: /tls.ca must be PEM/ })
  await assert.rejects(connect(url, { tls: 'yes' }), { name: 'TypeError' })
  await refused(url, { ca: 'not PEM' }, /PEM/)
})
