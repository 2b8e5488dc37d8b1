// Starts the real `blipmq` binary for a test, with its client (TCP) and
// WebSocket listeners: on 127.0.0.1:0 (restarted on the same ports),
// reading the addresses from its readiness line
// `blipmq ready clients=ADDR metrics=ADDR websocket=ADDR`. And the
// throwaway certificates of the TLS tests. Both packages' tests use it
// (scripts/test-node.sh and scripts/test-web.sh copy it to test/shared/).
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const BROKER_BIN = process.env.BLIPMQ_BIN ?? 'blipmq'

/**
 * A running broker: `addr` (TCP, host:port), `port` (its port), `url` (the
 * WebSocket listener: ws://127.0.0.1:PORT, or wss://localhost:PORT with
 * `tls`), `wsPort`, `metricsAddr`, `metric()`, `stop()`, `restart()`.
 * `tls` only says what `url` is: the broker speaks TLS when `env` gives it
 * a certificate (see `startTlsBroker`).
 */
export async function startBroker({ env = {}, tls = false } = {}) {
  // A log directory of its own (kept across restarts): one broker per
  // directory, and tests run side by side.
  const dataDir = mkdtempSync(join(tmpdir(), 'blipmq-test-'))
  const broker = { addr: '', port: 0, url: '', wsPort: 0, metricsAddr: '', process: null }
  const launch = async () => {
    const child = spawn(BROKER_BIN, [], {
      env: {
        ...process.env,
        BLIPMQ_SERVER_BIND_ADDR: `127.0.0.1:${broker.port}`,
        BLIPMQ_WEBSOCKET_BIND_ADDR: `127.0.0.1:${broker.wsPort}`,
        BLIPMQ_METRICS_BIND_ADDR: '127.0.0.1:0',
        RUST_LOG: process.env.RUST_LOG ?? 'warn',
        BLIPMQ_WAL_DIR: join(dataDir, 'wal'),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const ready = await new Promise((resolve, reject) => {
      let seen = ''
      const timer = setTimeout(() => reject(new Error(`no readiness line from ${BROKER_BIN}`)), 10_000)
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`${BROKER_BIN} exited with ${code} before it was ready`)))
      child.stdout.on('data', (chunk) => {
        seen += chunk
        const match = /^blipmq ready clients=(\S+) metrics=(\S+) websocket=(\S+)$/m.exec(seen)
        if (match) {
          clearTimeout(timer)
          resolve(match)
        }
      })
    })
    const portOf = (addr) => Number(addr.split(':').pop())
    broker.process = child
    broker.addr = ready[1]
    broker.port = portOf(ready[1])
    broker.metricsAddr = ready[2]
    broker.wsPort = portOf(ready[3])
    // The test certificate names localhost, and a browser checks the name.
    broker.url = tls ? `wss://localhost:${broker.wsPort}` : `ws://${ready[3]}`
  }
  const halt = async () => {
    const child = broker.process
    if (child === null || child.exitCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    await exited
    broker.process = null
  }
  broker.stop = async () => {
    await halt()
    rmSync(dataDir, { recursive: true, force: true })
  }
  // Stop and start again on the same ports (clients see a restart).
  broker.restart = async () => {
    await halt()
    await launch()
  }
  /** The value of one sample of /metrics, e.g. `blipmq_connections`. */
  broker.metric = async (sample) => {
    const text = await (await fetch(`http://${broker.metricsAddr}/metrics`)).text()
    const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
    if (line === undefined) throw new Error(`no sample ${sample} in /metrics`)
    return Number(line.slice(sample.length + 1))
  }
  await launch()
  return broker
}

/**
 * A throwaway PKI made by `blipmq-test-pki` (BLIPMQ_TEST_PKI, which the
 * test scripts set): `path(name)` and `read(name)` of its files (ca.pem,
 * broker.pem/.key, client-ca.pem, client.pem/.key, other-ca.pem,
 * expired.pem/.key, wrong-name.pem/.key, stranger.pem/.key; see
 * testkit/src/lib.rs), and `remove()`.
 */
export function makeTestPki() {
  const tool = process.env.BLIPMQ_TEST_PKI
  if (!tool) throw new Error('set BLIPMQ_TEST_PKI to the blipmq-test-pki binary (the test scripts do)')
  const dir = mkdtempSync(join(tmpdir(), 'blipmq-pki-'))
  execFileSync(tool, [dir], { stdio: ['ignore', 'ignore', 'inherit'] })
  return {
    dir,
    path: (name) => join(dir, name),
    read: (name) => readFileSync(join(dir, name)),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}

/**
 * A broker speaking TLS on its client and WebSocket (wss) listeners with
 * `pki`'s `cert`.pem/.key; /metrics stays plain HTTP (for `metric()`).
 * With `clientCa`, mutual TLS. With `chain` (a CA file of `pki`), the
 * broker presents that CA after its certificate, as servers that send
 * their full chain do. `env`: more configuration.
 */
export function startTlsBroker(pki, { cert = 'broker', clientCa = false, chain = null, env = {} } = {}) {
  let certFile = pki.path(`${cert}.pem`)
  if (chain !== null) {
    certFile = pki.path(`${cert}+${chain}`)
    writeFileSync(certFile, Buffer.concat([pki.read(`${cert}.pem`), pki.read(chain)]))
  }
  const tlsEnv = {
    BLIPMQ_TLS_CERT_FILE: certFile,
    BLIPMQ_TLS_KEY_FILE: pki.path(`${cert}.key`),
    BLIPMQ_METRICS_TLS: 'false',
  }
  if (clientCa) tlsEnv.BLIPMQ_TLS_CLIENT_CA_FILE = pki.path('client-ca.pem')
  return startBroker({ env: { ...tlsEnv, ...env }, tls: true })
}
