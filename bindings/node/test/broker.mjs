// Starts the real `blipmq` binary for a test: on 127.0.0.1:0 (or a given
// port, to restart on the same address), reading the address from its
// readiness line `blipmq ready clients=ADDR metrics=ADDR`. And the
// throwaway certificates of the TLS tests.
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const BROKER_BIN = process.env.BLIPMQ_BIN ?? 'blipmq'

/** A running broker: `addr`, `port`, `stop()`, `restart()`. */
export async function startBroker({ env = {}, port = 0 } = {}) {
  // A log directory of its own (kept across restarts): one broker per
  // directory, and tests run side by side.
  const dataDir = mkdtempSync(join(tmpdir(), 'blipmq-test-'))
  const broker = { addr: '', port: 0, process: null }
  const launch = async (bindPort) => {
    const child = spawn(BROKER_BIN, [], {
      env: {
        ...process.env,
        BLIPMQ_SERVER_BIND_ADDR: `127.0.0.1:${bindPort}`,
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
        const match = /^blipmq ready clients=(\S+) metrics=(\S+)$/m.exec(seen)
        if (match) {
          clearTimeout(timer)
          resolve(match[1])
        }
      })
    })
    broker.process = child
    broker.addr = ready
    broker.port = Number(ready.split(':').pop())
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
  // Stop and start again on the same port (clients see a restart).
  broker.restart = async () => {
    await halt()
    await launch(broker.port)
  }
  await launch(port)
  return broker
}

/**
 * A throwaway PKI made by `blipmq-test-pki` (BLIPMQ_TEST_PKI, which
 * scripts/test-node.sh sets): `path(name)` and `read(name)` of its files
 * (ca.pem, broker.pem/.key, client-ca.pem, client.pem/.key, other-ca.pem,
 * expired.pem/.key, stranger.pem/.key), and `remove()`.
 */
export function makeTestPki() {
  const tool = process.env.BLIPMQ_TEST_PKI
  if (!tool) throw new Error('set BLIPMQ_TEST_PKI to the blipmq-test-pki binary (scripts/test-node.sh does)')
  const dir = mkdtempSync(join(tmpdir(), 'blipmq-pki-'))
  execFileSync(tool, [dir], { stdio: ['ignore', 'ignore', 'inherit'] })
  return {
    dir,
    path: (name) => join(dir, name),
    read: (name) => readFileSync(join(dir, name)),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}

/** A broker speaking TLS with `pki`'s `cert`.pem/.key; with `clientCa`, mutual TLS. */
export function startTlsBroker(pki, { cert = 'broker', clientCa = false } = {}) {
  const env = {
    BLIPMQ_TLS_CERT_FILE: pki.path(`${cert}.pem`),
    BLIPMQ_TLS_KEY_FILE: pki.path(`${cert}.key`),
  }
  if (clientCa) env.BLIPMQ_TLS_CLIENT_CA_FILE = pki.path('client-ca.pem')
  return startBroker({ env })
}
