// One idiomatic burst in headless Chromium, through @blipmq/web or through
// nats.ws (idiomatic-core.js has the run and says how each side is
// written). Serves idiomatic.html, this package (/blipmq-web/) and the
// nats.ws package (/nats.ws/) on 127.0.0.1, starts Chromium without
// DevTools (as bench.mjs does, for the same reason), waits for the page's
// report and prints one JSON line. Bounded: the page stops at --limit
// seconds, and this process gives up 30 s after that.
//
//   node bindings/wasm/bench/idiomatic.mjs blipmq|nats --url ws://HOST:PORT
//       --nats-ws DIR [--count 200000] [--size 16] [--quiet 3] [--limit 120]
//
// Run by scripts/bench-idiomatic.sh, which starts the servers (BlipMQ with
// its WebSocket listener, nats-server with a websocket block).
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createReadStream, readFileSync } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, extname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const PACKAGE = resolve(HERE, '..')
const args = process.argv.slice(2)
const system = args[0]
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? fallback : args[i + 1]
}
const url = option('url')
const natsWs = option('nats-ws')
const count = Number(option('count', 200_000))
const size = Number(option('size', 16))
const quiet = Number(option('quiet', 3))
const limit = Number(option('limit', 120))
const chromium = option('chromium', '/usr/bin/chromium')
if (!['blipmq', 'nats'].includes(system) || !url || !natsWs) {
  console.error('usage: node idiomatic.mjs blipmq|nats --url ws://HOST:PORT --nats-ws DIR [--count N] [--size B]')
  process.exit(2)
}
const version = (dir) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version
const client = system === 'blipmq'
  ? `@blipmq/web ${version(PACKAGE)} (this tree, wasm-release build)`
  : `nats.ws ${version(natsWs)}`

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm' }
// @blipmq/web imports @blipmq/core by name: idiomatic.html maps it here.
const CORE = dirname(createRequire(join(PACKAGE, 'package.json')).resolve('@blipmq/core/package.json'))
const mounts = [['/blipmq-web/', PACKAGE], ['/blipmq-core/', CORE], ['/nats.ws/', resolve(natsWs)], ['/', HERE]]
const site = createServer(async (request, response) => {
  const path = decodeURIComponent(new URL(request.url, 'http://x').pathname)
  if (request.method === 'POST' && path === '/result') {
    let body = ''
    request.on('data', (chunk) => { body += chunk })
    request.on('end', () => {
      response.writeHead(204).end()
      site.emit('result', JSON.parse(body))
    })
    return
  }
  const [prefix, base] = mounts.find(([p]) => path.startsWith(p))
  const file = resolve(base, path === '/' ? 'idiomatic.html' : path.slice(prefix.length))
  if (!file.startsWith(resolve(base) + sep)) return response.writeHead(403).end()
  try {
    if (!(await stat(file)).isFile()) return response.writeHead(404).end()
  } catch {
    return response.writeHead(404).end()
  }
  response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' })
  createReadStream(file).pipe(response)
})
await new Promise((done) => site.listen(0, '127.0.0.1', done))
const origin = `http://127.0.0.1:${site.address().port}`
const query = new URLSearchParams({ system, url, count, size, quiet, limit, report: `${origin}/result` })
const profile = await mkdtemp(join(tmpdir(), 'blipmq-idiomatic-chromium-'))
const browser = spawn(chromium, [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`,
  `${origin}/idiomatic.html?${query}`,
], { stdio: 'ignore' })
const giveUp = setTimeout(() => site.emit('result', { system, error: `no report after ${limit + 30} s` }), (limit + 30) * 1000)
try {
  const [result] = await once(site, 'result')
  console.log(JSON.stringify({ sdk: 'web', client, ...result }))
} finally {
  clearTimeout(giveUp)
  const exited = browser.exitCode !== null || browser.signalCode !== null ? Promise.resolve() : once(browser, 'exit')
  browser.kill('SIGTERM')
  site.close()
  site.closeAllConnections?.()
  await exited
  await rm(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
}
