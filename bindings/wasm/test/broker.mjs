// Starts the real `blipmq` binary for a test, with its WebSocket listener:
// on 127.0.0.1:0 (or given ports, to restart on the same addresses),
// reading the addresses from its readiness line
// `blipmq ready clients=ADDR metrics=ADDR websocket=ADDR`.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const BROKER_BIN = process.env.BLIPMQ_BIN ?? 'blipmq'

/** A running broker: `url` (ws://), `addr` (TCP), `metricsAddr`, `metric()`, `stop()`, `restart()`. */
export async function startBroker({ env = {} } = {}) {
  // A log directory of its own (kept across restarts): one broker per
  // directory, and tests run side by side.
  const dataDir = mkdtempSync(join(tmpdir(), 'blipmq-test-'))
  const broker = { url: '', addr: '', metricsAddr: '', process: null }
  let ports = { tcp: 0, ws: 0 }
  const launch = async () => {
    const child = spawn(BROKER_BIN, [], {
      env: {
        ...process.env,
        BLIPMQ_SERVER_BIND_ADDR: `127.0.0.1:${ports.tcp}`,
        BLIPMQ_WEBSOCKET_BIND_ADDR: `127.0.0.1:${ports.ws}`,
        BLIPMQ_METRICS_BIND_ADDR: '127.0.0.1:0',
        RUST_LOG: process.env.RUST_LOG ?? 'warn',
        BLIPMQ_WAL_DIR: join(dataDir, 'wal'),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const match = await new Promise((resolve, reject) => {
      let seen = ''
      const timer = setTimeout(() => reject(new Error(`no readiness line from ${BROKER_BIN}`)), 10_000)
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`${BROKER_BIN} exited with ${code} before it was ready`)))
      child.stdout.on('data', (chunk) => {
        seen += chunk
        const ready = /^blipmq ready clients=(\S+) metrics=(\S+) websocket=(\S+)$/m.exec(seen)
        if (ready) {
          clearTimeout(timer)
          resolve(ready)
        }
      })
    })
    broker.process = child
    broker.addr = match[1]
    broker.metricsAddr = match[2]
    broker.url = `ws://${match[3]}`
    ports = { tcp: Number(match[1].split(':').pop()), ws: Number(match[3].split(':').pop()) }
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
