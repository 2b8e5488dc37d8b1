// Serves the chat page on 127.0.0.1 next to a local broker.
//
//   node examples/browser/serve.mjs [--port 8080] [--broker ws://127.0.0.1:7879]
//
// Without --broker it starts target/debug/blipmq (or $BLIPMQ_BIN) with its
// WebSocket listener on a free port, allowing only this page's origin, and
// stops it on Ctrl-C. The page loads @blipmq/web from bindings/wasm (build
// it first: scripts/test-web.sh --build-only; examples/browser/run.sh does
// both), and @blipmq/core, which it imports, through the page's import map.
// `serve()` is also what the browser test uses.
import { spawn } from 'node:child_process'
import { createReadStream, mkdtempSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, extname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
}

/**
 * A static server on `host:port` (0 = a free port): the page from `root`,
 * the package's files under /blipmq-web/ from `packageDir`, and those of
 * @blipmq/core (as that package resolves it) under /blipmq-core/.
 */
export async function serve({ root = HERE, packageDir, host = '127.0.0.1', port = 0 } = {}) {
  const coreDir = dirname(createRequire(join(packageDir, 'package.json')).resolve('@blipmq/core/package.json'))
  const mounts = [
    ['/blipmq-web/', packageDir],
    ['/blipmq-core/', coreDir],
  ]
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url, 'http://x').pathname)
    const mount = mounts.find(([prefix]) => path.startsWith(prefix))
    const [base, rest] = mount
      ? [mount[1], path.slice(mount[0].length)]
      : [root, path === '/' ? 'index.html' : path.slice(1)]
    const file = resolve(base, rest)
    // Nothing outside the two folders.
    if (!file.startsWith(resolve(base) + sep)) return reply(response, 403)
    try {
      if (!(await stat(file)).isFile()) return reply(response, 404)
    } catch {
      return reply(response, 404)
    }
    response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' })
    createReadStream(file).pipe(response)
  })
  await new Promise((done) => server.listen(port, host, done))
  return { server, origin: `http://${host}:${server.address().port}` }
}

function reply(response, status) {
  response.writeHead(status).end()
}

/** Start the broker with a WebSocket listener; resolves `{ url, child }`. */
function startBroker(bin, origin) {
  const child = spawn(bin, [], {
    env: {
      ...process.env,
      BLIPMQ_SERVER_BIND_ADDR: '127.0.0.1:0',
      BLIPMQ_METRICS_BIND_ADDR: '127.0.0.1:0',
      BLIPMQ_WEBSOCKET_BIND_ADDR: '127.0.0.1:0',
      BLIPMQ_WEBSOCKET_ALLOWED_ORIGINS: origin,
      // A log directory of its own: one broker per directory.
      BLIPMQ_WAL_DIR: join(mkdtempSync(join(tmpdir(), 'blipmq-example-')), 'wal'),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return new Promise((done, fail) => {
    let seen = ''
    child.once('error', fail)
    child.once('exit', (code) => fail(new Error(`${bin} exited with ${code}`)))
    child.stdout.on('data', (chunk) => {
      seen += chunk
      const match = / websocket=(\S+)/.exec(seen)
      if (match) done({ url: `ws://${match[1]}`, child })
    })
  })
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const option = (name, fallback) => {
    const i = args.indexOf(`--${name}`)
    return i === -1 ? fallback : args[i + 1]
  }
  const repo = resolve(HERE, '../..')
  const { server, origin } = await serve({
    packageDir: join(repo, 'bindings/wasm'),
    port: Number(option('port', '8080')),
  })
  let broker = option('broker', null)
  if (broker === null) {
    const bin = process.env.BLIPMQ_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(repo, 'target'), 'debug/blipmq')
    const started = await startBroker(bin, origin)
    broker = started.url
    process.on('SIGINT', () => {
      started.child.kill('SIGTERM')
      server.close()
      process.exit(0)
    })
  }
  console.log(`chat: open ${origin}/?broker=${broker}&room=lobby in two browser windows (Ctrl-C stops)`)
  console.log(`quickstart: open ${origin}/quickstart.html?broker=${broker}`)
}
