// Throughput through the browser SDK, bounded in count and time: a broker
// on 127.0.0.1 (free ports, `block` policy so nothing is dropped and only
// delivered messages count), then the same run (core.js) in headless
// Chromium and in Node. Prints one JSON line per run.
//
// Chromium is started directly, not through playwright: with DevTools
// attached, Chromium reports every WebSocket message to it, which costs
// more than the message itself. The page posts its result back.
//
//   node bindings/wasm/bench/bench.mjs [--count 100000] [--size 16]
//
// Run by scripts/bench-web.sh, which builds what it needs first.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { WebSocket } from 'ws'
import { connect } from '../index.js'
import { serve } from '../../../examples/browser/serve.mjs'
import { run } from './core.js'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const args = process.argv.slice(2)
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  return Number(i === -1 ? fallback : args[i + 1])
}
const count = option('count', 100_000)
const size = option('size', 16)
const LIMIT_MS = 120_000

const bin = process.env.BLIPMQ_BIN ?? resolve(HERE, '../../../target/release/blipmq')
const broker = spawn(bin, [], {
  env: {
    ...process.env,
    BLIPMQ_SERVER_BIND_ADDR: '127.0.0.1:0',
    BLIPMQ_METRICS_BIND_ADDR: '127.0.0.1:0',
    BLIPMQ_WEBSOCKET_BIND_ADDR: '127.0.0.1:0',
    BLIPMQ_QUEUES_OVERFLOW_POLICY: 'block',
    RUST_LOG: 'warn',
  },
  stdio: ['ignore', 'pipe', 'inherit'],
})
const url = await new Promise((done, fail) => {
  let seen = ''
  broker.once('exit', (code) => fail(new Error(`${bin} exited with ${code}`)))
  broker.stdout.on('data', (chunk) => {
    seen += chunk
    const match = / websocket=(\S+)/.exec(seen)
    if (match) done(`ws://${match[1]}`)
  })
})
const limit = setTimeout(() => {
  console.error(`benchmark still running after ${LIMIT_MS} ms: stopping`)
  broker.kill('SIGTERM')
  process.exit(1)
}, LIMIT_MS)

const site = await serve({ root: HERE, packageDir: resolve(HERE, '..') })
// Where the page reports: POST /result (from the page's origin, same host).
const reports = createServer((request, response) => {
  let body = ''
  request.on('data', (chunk) => { body += chunk })
  request.on('end', () => {
    response.writeHead(204, { 'access-control-allow-origin': '*' }).end()
    reports.emit('result', JSON.parse(body))
  })
})
await new Promise((done) => reports.listen(0, '127.0.0.1', done))
const report = `http://127.0.0.1:${reports.address().port}/result`
const profile = await mkdtemp(join(tmpdir(), 'blipmq-bench-chromium-'))
const browser = spawn('/usr/bin/chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`,
  `${site.origin}/?broker=${url}&count=${count}&size=${size}&report=${report}`,
], { stdio: 'ignore' })
try {
  const [inChromium] = await once(reports, 'result')
  console.log(JSON.stringify({ host: 'chromium', ...inChromium }))
  const inNode = await run(connect, url, { count, size, options: { WebSocket } })
  console.log(JSON.stringify({ host: 'node', ...inNode }))
} finally {
  clearTimeout(limit)
  // Chromium writes its cache while it exits: remove its profile after
  // it has (the removal raced it and failed with ENOTEMPTY).
  const exited = browser.exitCode !== null || browser.signalCode !== null
    ? Promise.resolve()
    : once(browser, 'exit')
  browser.kill('SIGTERM')
  reports.close()
  // The servers first: a failed removal below must not leave them running.
  site.server.close()
  broker.kill('SIGTERM')
  await exited
  await rm(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
}
