// The package in a real browser: Debian's chromium, headless, driven by
// playwright-core, loads the chat example (examples/browser) from a page
// served on 127.0.0.1 next to the real broker. The page connects with an
// API key, subscribes, renders what arrives and publishes what is typed;
// a Node client (the same package) talks to it through the broker. A page
// from an origin the broker does not allow is refused.
//
// The same over wss: a second broker speaks TLS with a certificate for
// localhost from the test PKI (blipmq-test-pki, made at test time), and
// this Chromium trusts the test CA for this run only: it is launched with
// --ignore-certificate-errors-spki-list naming the CA's public key, and the
// broker presents the CA after its certificate (Chromium matches the
// certificates a server presents, not a trust store). Nothing is installed
// system-wide. A page speaking ws:// to that port, and a certificate the
// test CA did not sign, fail with the page's error state.
import './websocket-global.mjs'
import assert from 'node:assert/strict'
import { X509Certificate, createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'
import { WebSocket } from 'ws'
import { connect } from '@blipmq/web'
import { serve } from '../example/serve.mjs'
import { makeTestPki, startBroker, startTlsBroker } from './shared/broker.mjs'

const SCREENSHOTS = process.env.SCREENSHOT_DIR ?? join(process.cwd(), 'screenshots')
const packageDir = dirname(createRequire(import.meta.url).resolve('@blipmq/web/package.json'))
const example = join(process.cwd(), 'example')

let site
let broker
let pki
let tlsBroker
let profile
let browser
let node
let tlsNode

/** The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's SPKI lists take it. */
function spkiSha256(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(spki).digest('base64')
}

before(async () => {
  site = await serve({ root: example, packageDir })
  const env = { BLIPMQ_AUTH_API_KEYS: 'chat-key', BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS: site.origin }
  broker = await startBroker({ env })
  node = await connect(broker.url, { apiKey: 'chat-key', name: 'node side' })
  pki = makeTestPki()
  tlsBroker = await startTlsBroker(pki, { chain: 'ca.pem', env })
  // The Node side trusts the test CA through `ws`'s own option.
  const ca = pki.read('ca.pem')
  const TrustingTestCa = class extends WebSocket {
    constructor(url) {
      super(url, { ca })
    }
  }
  tlsNode = await connect(tlsBroker.url, { apiKey: 'chat-key', name: 'node side', WebSocket: TrustingTestCa })
  // A fresh profile every run; flags for a closed network (no background
  // requests to hosts this machine cannot reach).
  profile = await mkdtemp(join(tmpdir(), 'blipmq-chromium-'))
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      // Trust the test CA, for this profile and run only.
      `--ignore-certificate-errors-spki-list=${spkiSha256(pki.read('ca.pem'))}`,
    ],
  })
})

after(async () => {
  await browser?.close()
  await node?.close()
  await tlsNode?.close()
  await broker?.stop()
  await tlsBroker?.stop()
  pki?.remove()
  site?.server.close()
  if (profile) await rm(profile, { recursive: true, force: true })
})

/** A page that fails the test on any uncaught error or console error. */
async function openPage(url) {
  const page = await browser.newPage()
  const problems = []
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`)
  })
  await page.goto(url)
  return { page, problems }
}

/**
 * The chat page on `broker` (at its `url`) subscribes, publishes and
 * renders, with `node` (a client of the same broker) on the other side.
 */
async function chat(broker, node, screenshot) {
  const watcher = await node.subscribe('chat.lobby')
  const { page, problems } = await openPage(`${site.origin}/?broker=${broker.url}&room=lobby&name=alice&key=chat-key`)
  await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15_000 })
  assert.equal(await page.locator('#status').textContent(), 'connected')
  assert.equal(await broker.metric('blipmq_transport_connections{transport="websocket"}'), 2)

  // Node publishes; the page renders it.
  await node.publish('chat.lobby', 'hello from node', { headers: { from: 'bob' } })
  const first = page.locator('#messages li').first()
  await first.waitFor({ timeout: 10_000 })
  assert.match(await first.textContent(), /bob: hello from node$/)

  // The page publishes what is typed; it comes back to the page and to Node.
  for (const text of ['hi from the browser', 'second line ✓']) {
    await page.fill('#text', text)
    await page.click('#send')
  }
  await page.locator('#messages li').nth(2).waitFor({ timeout: 10_000 })
  const shown = await page.locator('#messages li').allTextContents()
  assert.deepEqual(shown.map((line) => line.replace(/^.*?(?=[a-z]+: )/, '')), [
    'bob: hello from node',
    'alice: hi from the browser',
    'alice: second line ✓',
  ])
  assert.equal(await page.locator('#messages li.mine').count(), 2)
  const received = []
  for (let i = 0; i < 3; i++) received.push(await watcher.next({ timeoutMs: 5000 }))
  assert.deepEqual(received.map((m) => [m.headers.get('from'), m.text()]), [
    ['bob', 'hello from node'],
    ['alice', 'hi from the browser'],
    ['alice', 'second line ✓'],
  ])

  await mkdir(SCREENSHOTS, { recursive: true })
  await page.screenshot({ path: join(SCREENSHOTS, screenshot) })
  assert.deepEqual(problems, [])
  await page.close()
  await watcher.unsubscribe()
}

test('the chat page subscribes, publishes and renders messages in Chromium', async () => {
  await chat(broker, node, 'browser-chat.png')
})

// examples/browser/quickstart.html: the browser's quickstart must print
// what every language's quickstart prints (examples/expected-output.txt,
// which scripts/test-web.sh copies beside the page).
test('the quickstart page publishes, subscribes and acks a QoS 1 message in Chromium', async () => {
  const expected = await readFile(join(example, 'expected-output.txt'), 'utf8')
  const { page, problems } = await openPage(`${site.origin}/quickstart.html?broker=${broker.url}&key=chat-key`)
  await page.locator('#output:not([data-state="running"])').waitFor({ timeout: 30_000 })
  assert.equal(await page.locator('#output').textContent(), expected)
  assert.equal(await page.locator('#output').getAttribute('data-state'), 'done')
  assert.deepEqual(problems, [])
  await page.close()
})

test('over wss with the test CA, the chat page subscribes, publishes and renders messages', async () => {
  assert.match(tlsBroker.url, /^wss:\/\/localhost:\d+$/)
  await chat(tlsBroker, tlsNode, 'browser-chat-wss.png')
})

test('a page speaking ws:// to the wss port shows the error state', async () => {
  const { page } = await openPage(`${site.origin}/?broker=ws://localhost:${tlsBroker.wsPort}&name=eve&key=chat-key`)
  await page.locator('#status[data-state="error"]').waitFor({ timeout: 15_000 })
  assert.match(await page.locator('#status').textContent(), /^error 600 ConnectError/)
  await page.close()
})

test('over wss, a certificate the test CA did not sign is refused in the page', async () => {
  // Another CA's certificate, sent with that CA: the flag trusts one CA,
  // not every certificate.
  const stranger = await startTlsBroker(pki, {
    cert: 'stranger',
    chain: 'other-ca.pem',
    env: { BLIPMQ_AUTH_API_KEYS: 'chat-key', BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS: site.origin },
  })
  try {
    const { page } = await openPage(`${site.origin}/?broker=${stranger.url}&name=eve&key=chat-key`)
    await page.locator('#status[data-state="error"]').waitFor({ timeout: 15_000 })
    assert.match(await page.locator('#status').textContent(), /^error 600 ConnectError/)
    await page.close()
  } finally {
    await stranger.stop()
  }
})

test('a wrong API key shows 200 AuthFailed on the page', async () => {
  const { page } = await openPage(`${site.origin}/?broker=${broker.url}&name=mallory&key=wrong`)
  await page.locator('#status[data-state="error"]').waitFor({ timeout: 15_000 })
  assert.match(await page.locator('#status').textContent(), /^error 200 AuthError: AuthFailed \(200\)/)
  await page.close()
})

test('a page from an origin the broker does not allow cannot connect', async () => {
  // Same server, other origin: localhost is not 127.0.0.1 to a browser.
  const other = site.origin.replace('127.0.0.1', 'localhost')
  const refusedBefore = await broker.metric('blipmq_websocket_upgrade_failures_total{reason="origin"}')
  const { page } = await openPage(`${other}/?broker=${broker.url}&name=eve&key=chat-key`)
  await page.locator('#status[data-state="error"]').waitFor({ timeout: 15_000 })
  assert.match(await page.locator('#status').textContent(), /^error 600 ConnectError/)
  assert.equal(await broker.metric('blipmq_websocket_upgrade_failures_total{reason="origin"}'), refusedBefore + 1)
  await page.close()
})
