// The Node SDK beside the `nats` npm client: the same workloads through both.
//
// Started by scripts/bench-node.sh, which installs the packed `blipmq`
// tarball and `nats` into a scratch project, copies this file there and
// starts the servers. By hand, from a project with both packages installed:
//
//   node sdk-bench.mjs run --blipmq 127.0.0.1:PORT --nats 127.0.0.1:PORT
//
// Workloads (each bounded in count and time, run --rounds times; the report
// gives medians):
// - publish: one client publishes --count messages as fast as it can and
//   flushes (the server has handled them all); msgs/s = count / time from
//   the first publish to the end of the flush. No subscriber.
// - receive 1→1: a subscriber process and a publisher process (same SDK,
//   one connection each). msgs/s = messages received / time from the
//   publisher's first publish to the subscriber's last receipt
//   (process.hrtime is CLOCK_MONOTONIC, shared by the processes). The
//   subscriber reads each payload, and the clock every CLOCK_EVERY messages.
// - latency: one process, a publisher connection paced at --latency-rate
//   msgs/s for --latency-secs and a subscriber connection; 16 B payloads
//   carry the send time; p50/p99/p99.9 of publish-to-receipt.
//
// BlipMQ publishes with `await client.publish(...)` per message (its
// promise resolves once the message is queued); `nats` publishes with its
// synchronous `nc.publish(...)`. Both receive through a subscription
// callback (BlipMQ's `onMessage`, nats' `callback`): each client's fastest
// way, the same for both.

import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const SCRIPT = fileURLToPath(import.meta.url)
const require = createRequire(import.meta.url)
const SIZES = [16, 1024]
// The subscriber reads the clock once per this many messages (and at the last).
const CLOCK_EVERY = 256
// A receiving run ends this long after the last message when some are missing.
const IDLE_MS = 3000
// Hard cap on any one child process (its own loops are bounded well below).
const CHILD_TIMEOUT_MS = 120_000
const SYSTEMS = ['blipmq', 'nats']
const TITLES = { blipmq: 'BlipMQ (blipmq SDK)', nats: 'NATS (nats npm)' }

const nowNs = () => process.hrtime.bigint()

// ----------------------------------------------------------------- clients

async function connectBlip(addr) {
  const { connect } = await import('blipmq')
  const client = await connect(addr, { name: 'sdk-bench' })
  return {
    publisher: (topic) => (payload) => client.publish(topic, payload),
    flush: () => client.flush(),
    async receive(topic, onMessage) {
      const subscription = await client.subscribe(topic, {
        onMessage: (message) => onMessage(message.payload),
      })
      return { stop: () => subscription.unsubscribe().catch(() => {}) }
    },
    close: () => client.close(),
  }
}

async function connectNats(addr) {
  const { connect } = await import('nats')
  const nc = await connect({ servers: addr, name: 'sdk-bench' })
  return {
    publisher: (topic) => (payload) => nc.publish(topic, payload),
    flush: () => nc.flush(),
    async receive(topic, onMessage) {
      const subscription = nc.subscribe(topic, {
        callback: (error, message) => {
          if (!error) onMessage(message.data)
        },
      })
      await nc.flush() // the server has the subscription
      return { stop: async () => subscription.unsubscribe() }
    },
    close: () => nc.close(),
  }
}

const connectTo = (system, addr) => (system === 'blipmq' ? connectBlip(addr) : connectNats(addr))

// -------------------------------------------------------------- child roles

function payloadOf(size) {
  const payload = Buffer.alloc(size)
  for (let i = 0; i < size; i++) payload[i] = i % 251
  return payload
}

async function rolePublish(o) {
  const client = await connectTo(o.system, o.addr)
  const publish = client.publisher(o.topic)
  const payload = payloadOf(o.size)
  const deadline = Date.now() + o.maxSecs * 1000
  const cpuBefore = process.cpuUsage()
  const start = nowNs()
  let sent = 0
  while (sent < o.count) {
    // Check the clock every 1,024 messages: bounded in time, cheap.
    const chunk = Math.min(1024, o.count - sent)
    for (let i = 0; i < chunk; i++) {
      // Await what returns a promise (BlipMQ); nats' publish returns nothing.
      const queued = publish(payload)
      if (queued !== undefined) await queued
    }
    sent += chunk
    if (Date.now() > deadline) break
  }
  await client.flush()
  const end = nowNs()
  const cpu = process.cpuUsage(cpuBefore)
  await client.close()
  return { sent, start_ns: String(start), end_ns: String(end), cpu_us: cpu.user + cpu.system }
}

async function roleSubscribe(o) {
  const client = await connectTo(o.system, o.addr)
  const state = { received: 0, stamped: 0, bytes: 0, first: 0n, last: 0n }
  let finish
  const done = new Promise((resolve) => (finish = resolve))
  const receiver = await client.receive(o.topic, (payload) => {
    state.bytes += payload.length
    state.received++
    // The clock every CLOCK_EVERY messages and at the last one: a clock
    // read per message cost the harness more than some clients' receive.
    // A run that ends short (idle) counts the messages up to its last stamp.
    if (state.received % CLOCK_EVERY === 0 || state.received >= o.count || state.first === 0n) {
      state.last = nowNs()
      state.stamped = state.received
      if (state.first === 0n) state.first = state.last
      if (state.received >= o.count) finish()
    }
  })
  process.stdout.write('ready\n')
  const cpuBefore = process.cpuUsage()
  const deadline = Date.now() + o.maxSecs * 1000
  let ended = 'complete'
  while (state.received < o.count) {
    const before = state.received
    const timedOut = await Promise.race([
      done.then(() => false),
      new Promise((resolve) => setTimeout(() => resolve(true), IDLE_MS).unref()),
    ])
    if (timedOut && state.received === before && before > 0) {
      ended = 'idle'
      break
    }
    if (Date.now() > deadline) {
      ended = 'time cap'
      break
    }
  }
  const cpu = process.cpuUsage(cpuBefore)
  await receiver.stop()
  await client.close()
  return {
    cpu_us: cpu.user + cpu.system,
    received: state.received,
    stamped: state.stamped,
    bytes: state.bytes,
    first_ns: String(state.first),
    last_ns: String(state.last),
    ended,
  }
}

async function roleLatency(o) {
  const subscriber = await connectTo(o.system, o.addr)
  const publisher = await connectTo(o.system, o.addr)
  const latencies = []
  const receiver = await subscriber.receive(o.topic, (payload) => {
    latencies.push(Number(nowNs() - payload.readBigUInt64LE(0)) / 1000)
  })
  const publish = publisher.publisher(o.topic)
  const total = Math.floor(o.rate * o.secs)
  let sent = 0
  const start = nowNs()
  while (sent < total) {
    const due = Math.min(total, Math.floor((Number(nowNs() - start) / 1e9) * o.rate) + 1)
    while (sent < due) {
      const payload = Buffer.alloc(16)
      payload.writeBigUInt64LE(nowNs(), 0)
      const queued = publish(payload)
      if (queued !== undefined) await queued
      sent++
    }
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
  await publisher.flush()
  const deadline = Date.now() + 2000
  while (latencies.length < sent && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await receiver.stop()
  await publisher.close()
  await subscriber.close()
  latencies.sort((a, b) => a - b)
  return {
    sent,
    received: latencies.length,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    p999: percentile(latencies, 0.999),
  }
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

const ROLES = { publish: rolePublish, subscribe: roleSubscribe, latency: roleLatency }

// -------------------------------------------------------------- the driver

class ChildFailed extends Error {}

function childArgs(role, system, addr, options) {
  const args = [SCRIPT, 'child', role, '--system', system, '--addr', addr]
  for (const [key, value] of Object.entries(options)) {
    args.push(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, String(value))
  }
  return args
}

function lastJson(output) {
  const line = output.split('\n').reverse().find((l) => l.startsWith('{'))
  if (!line) throw new ChildFailed(`no result in the output: ${JSON.stringify(output.slice(-500))}`)
  return JSON.parse(line)
}

// A child process; `ready` resolves on its first line, `done` with its
// stdout once it exits 0.
function startChild(args) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  let onLine
  const ready = new Promise((resolve) => (onLine = resolve))
  child.stdout.on('data', (chunk) => {
    out += chunk
    if (out.includes('\n')) onLine(out.slice(0, out.indexOf('\n')))
  })
  child.stderr.on('data', (chunk) => (err += chunk))
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS)
  const done = new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      onLine('')
      if (code === 0) resolve(out)
      else reject(new ChildFailed(`exit ${code ?? signal}: ${err.trim().slice(-800)}`))
    })
  })
  return { child, ready, done }
}

async function runChild(args) {
  return lastJson(await startChild(args).done)
}

async function measurePublish(system, addr, size, o, topic) {
  const r = await runChild(childArgs('publish', system, addr, { topic, size, count: o.count, maxSecs: o.maxSecs }))
  return {
    rate: r.sent / (Number(BigInt(r.end_ns) - BigInt(r.start_ns)) / 1e9),
    sent: r.sent,
    cpuPerMsg: r.cpu_us / r.sent,
  }
}

async function measureReceive(system, addr, size, o, topic) {
  const subscriber = startChild(
    childArgs('subscribe', system, addr, { topic, size, count: o.count, maxSecs: o.maxSecs + (2 * IDLE_MS) / 1000 }),
  )
  try {
    const line = await subscriber.ready
    if (line.trim() !== 'ready') {
      subscriber.child.kill('SIGKILL')
      await subscriber.done.catch((e) => {
        throw new ChildFailed(`subscriber not ready (${JSON.stringify(line)}): ${e.message}`)
      })
      throw new ChildFailed(`subscriber not ready: ${JSON.stringify(line)}`)
    }
    const published = await runChild(
      childArgs('publish', system, addr, { topic, size, count: o.count, maxSecs: o.maxSecs }),
    )
    const received = lastJson(await subscriber.done)
    if (received.received === 0) throw new ChildFailed('the subscriber received nothing')
    const secs = Number(BigInt(received.last_ns) - BigInt(published.start_ns)) / 1e9
    return {
      rate: received.stamped / secs,
      sent: published.sent,
      received: received.received,
      ended: received.ended,
      cpuPerMsg: received.cpu_us / received.received,
      publisherCpuPerMsg: published.cpu_us / published.sent,
    }
  } finally {
    if (subscriber.child.exitCode === null) subscriber.child.kill('SIGKILL')
  }
}

function measureLatency(system, addr, o, topic) {
  return runChild(childArgs('latency', system, addr, { topic, rate: o.latencyRate, secs: o.latencySecs }))
}

const sizeLabel = (size) => (size >= 1024 && size % 1024 === 0 ? `${size / 1024} KiB` : `${size} B`)

function workloads(o) {
  const items = []
  for (const size of SIZES) {
    items.push([`publish-${size}`, `publish, ${sizeLabel(size)}`, (s, a, t) => measurePublish(s, a, size, o, t)])
  }
  for (const size of SIZES) {
    items.push([`receive-${size}`, `receive 1→1, ${sizeLabel(size)}`, (s, a, t) => measureReceive(s, a, size, o, t)])
  }
  items.push(['latency', 'latency', (s, a, t) => measureLatency(s, a, o, t)])
  return o.workloads.length === 0 ? items : items.filter(([key]) => o.workloads.includes(key))
}

const WORKLOADS = ['publish-16', 'publish-1024', 'receive-16', 'receive-1024', 'latency']

function median(values) {
  const v = values.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b)
  if (v.length === 0) return null
  const n = v.length
  return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
}

const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(' ')

async function driverMain(o) {
  const addrs = { blipmq: o.blipmq, nats: o.nats }
  const systems = SYSTEMS.filter((s) => addrs[s])
  const loadBefore = loadavg()
  const started = Date.now()
  const results = {}
  const errors = []
  for (let round = 0; round < o.rounds; round++) {
    for (const [key, label, measure] of workloads(o)) {
      // Take turns, in an order rotated every round.
      const k = round % systems.length
      for (const system of [...systems.slice(k), ...systems.slice(0, k)]) {
        let figures
        try {
          figures = await measure(system, addrs[system], `bench.${key}.r${round}`)
        } catch (e) {
          errors.push(`round ${round + 1}, ${label}, ${system}: ${e.message}`)
          figures = { error: e.message }
        }
        ;((results[key] ??= {})[system] ??= []).push(figures)
        process.stderr.write(`round ${round + 1}/${o.rounds} ${label.padEnd(22)} ${system.padEnd(7)} ${brief(figures)}\n`)
      }
    }
  }
  const report = render(o, systems, results, errors, loadBefore, loadavg(), (Date.now() - started) / 1000)
  process.stdout.write(report)
  if (o.out) writeFileSync(o.out, report)
  if (errors.length) process.exitCode = 1
}

const fmtRate = (v) => (v === null ? '–' : Math.round(v).toLocaleString('en-US'))
const fmtUs = (v) => (v === null ? '–' : v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1))
const fmtRatio = (a, b) => (a === null || b === null || !b ? '–' : `${(a / b).toFixed(2)}×`)
const lost = (f) => (f.received !== undefined && f.received < f.sent ? ` (lost ${((1 - f.received / f.sent) * 100).toFixed(1)}%)` : '')

function brief(f) {
  if (f.error) return `FAILED: ${f.error}`
  if (f.rate !== undefined) {
    const cpu = `CPU ${f.cpuPerMsg.toFixed(2)} µs/msg${f.publisherCpuPerMsg ? ` (publisher ${f.publisherCpuPerMsg.toFixed(2)})` : ''}`
    return `${fmtRate(f.rate)} msgs/s${lost(f)}${f.ended && f.ended !== 'complete' ? ` ${f.ended}` : ''}, ${cpu}`
  }
  return `p50 ${fmtUs(f.p50)} µs, p99 ${fmtUs(f.p99)} µs, ${f.received}/${f.sent}`
}

function roundFigure(f) {
  if (f.error) return 'failed'
  if (f.rate !== undefined) return `${fmtRate(f.rate)} (${f.cpuPerMsg.toFixed(2)} µs)${lost(f)}`
  return `${fmtUs(f.p50)} / ${fmtUs(f.p99)}${lost(f)}`
}

function packageVersion(name) {
  try {
    return require(`${name}/package.json`).version
  } catch {
    return 'not installed'
  }
}

function machine() {
  const model = os.cpus()[0]?.model?.trim() ?? '?'
  return `${os.cpus().length} cores (os.cpus), CPU model "${model}", ${Math.round(os.totalmem() / 2 ** 30)} GiB memory, ${os.type()} ${os.release()}`
}

function render(o, systems, results, errors, loadBefore, loadAfter, secs) {
  const cell = (key, system) => results[key]?.[system] ?? []
  const med = (key, system, field) => median(cell(key, system).filter((f) => !f.error).map((f) => f[field]))
  const ratioOf = (values) => (values.length === 2 ? fmtRatio(values[0], values[1]) : '–')
  const header = `| workload | ${systems.map((s) => TITLES[s]).join(' | ')} | BlipMQ/nats |`
  const rule = `|---|${'---:|'.repeat(systems.length + 1)}`
  const lines = [
    '# The Node SDK beside the `nats` npm client',
    '',
    `Generated ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC in ${Math.round(secs)} s of measuring by:`,
    '',
    '```',
    o.command || 'node sdk-bench.mjs run ...',
    '```',
    '',
    `- **Machine**: ${machine()}. Servers, publishers and subscribers share these cores; the machine is shared and noisy (load average ${loadBefore} before measuring, ${loadAfter} after).`,
    `- **Clients**: blipmq ${packageVersion('blipmq')} (this tree, release build, from its packed tarball), nats ${packageVersion('nats')}; Node.js ${process.versions.node}.`,
    ...o.serverVersion.map((s) => `- **Server**: ${s}`),
    `- **Method**: ${o.rounds} rounds, systems take turns in an order rotated each round; every figure is the median over rounds. Each run is a fresh process with its own connections.`,
    `  - *publish*: one client publishes ${o.count.toLocaleString('en-US')} messages, awaiting each publish call (\`await client.publish(...)\`; nats' \`publish\` returns nothing to await), then flushes; msgs/s = messages ÷ time from the first publish to the end of the flush. No subscriber.`,
    `  - *receive 1→1*: a subscriber process and a publisher process (same SDK); ${o.count.toLocaleString('en-US')} messages; msgs/s = messages received ÷ time from the first publish to the last receipt (the subscriber reads the clock every ${CLOCK_EVERY} messages and at the last; a run that ends short counts up to its last reading). The subscriber reads every payload in a subscription callback (BlipMQ's \`onMessage\`, nats' \`callback\`). BlipMQ runs with the \`block\` overflow policy (lossless). *CPU µs/msg* (every round table) is the subscriber process's CPU time (all its threads) per message received: what receiving costs, whatever else the machine is doing.`,
    `  - *latency*: one process, a publisher connection paced at ${o.latencyRate.toLocaleString('en-US')} msgs/s for ${o.latencySecs} s (bursts every ~1 ms), a subscriber connection; 16 B payloads carry the send time; publish call to receipt in the subscriber's code.`,
    '',
    '## Throughput, msgs/s (higher is better)',
    '',
    header,
    rule,
  ]
  for (const [key, label] of workloads(o)) {
    if (key === 'latency') continue
    const values = systems.map((s) => med(key, s, 'rate'))
    lines.push(`| ${label} | ${values.map(fmtRate).join(' | ')} | ${ratioOf(values)} |`)
  }
  lines.push(
    '',
    '## Receive cost: CPU µs per message in the subscriber process (lower is better)',
    '',
    'All of its threads; a figure that holds however busy the machine is.',
    '',
    `| workload | ${systems.map((s) => TITLES[s]).join(' | ')} | nats/BlipMQ |`,
    rule,
  )
  for (const size of SIZES) {
    const values = systems.map((s) => med(`receive-${size}`, s, 'cpuPerMsg'))
    const ratio = values.length === 2 ? fmtRatio(values[1], values[0]) : '–'
    lines.push(`| receive 1→1, ${sizeLabel(size)} | ${values.map((v) => (v === null ? '–' : v.toFixed(2))).join(' | ')} | ${ratio} |`)
  }
  lines.push(
    '',
    `## Latency at ${o.latencyRate.toLocaleString('en-US')} msgs/s, 16 B (µs, lower is better; a ratio below 1 means BlipMQ is faster)`,
    '',
    header.replace('workload', 'percentile'),
    rule,
  )
  for (const [field, label] of [['p50', 'p50'], ['p99', 'p99'], ['p999', 'p99.9']]) {
    const values = systems.map((s) => med('latency', s, field))
    lines.push(`| ${label} | ${values.map(fmtUs).join(' | ')} | ${ratioOf(values)} |`)
  }
  lines.push(
    '',
    '## Every round',
    '',
    'msgs/s (CPU µs per message of the publishing or, for receive, the subscribing process) per round; latency: p50 / p99 µs.',
    '',
    `| workload | system | ${Array.from({ length: o.rounds }, (_, i) => `round ${i + 1}`).join(' | ')} |`,
    `|---|---|${'---:|'.repeat(o.rounds)}`,
  )
  for (const [key, label] of workloads(o)) {
    for (const system of systems) {
      lines.push(`| ${label} | ${TITLES[system]} | ${cell(key, system).map(roundFigure).join(' | ')} |`)
    }
  }
  if (errors.length) lines.push('', '## Failed runs', '', ...errors.map((e) => `- ${e}`))
  return lines.join('\n') + '\n'
}

// ------------------------------------------------------------------ the CLI

const USAGE = `usage:
  node sdk-bench.mjs run [--blipmq ADDR] [--nats ADDR] [--rounds 3] [--count 1000000]
      [--max-secs 30] [--latency-rate 5000] [--latency-secs 3] [--out FILE]
      [--command TEXT] [--server-version TEXT]... [--workloads W,...]
      (workloads: publish-16, publish-1024, receive-16, receive-1024, latency; default all)
  node sdk-bench.mjs child publish|subscribe|latency --system blipmq|nats --addr ADDR --topic T
      [--size 16] [--count N] [--max-secs S] [--rate R] [--secs S]`

function number(value, name) {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number, not ${value}`)
  return n
}

async function main(argv) {
  const [command, ...rest] = argv
  if (command === 'run') {
    const { values } = parseArgs({
      args: rest,
      options: {
        blipmq: { type: 'string', default: '' },
        nats: { type: 'string', default: '' },
        rounds: { type: 'string', default: '3' },
        count: { type: 'string', default: '1000000' },
        'max-secs': { type: 'string', default: '30' },
        'latency-rate': { type: 'string', default: '5000' },
        'latency-secs': { type: 'string', default: '3' },
        out: { type: 'string', default: '' },
        command: { type: 'string', default: '' },
        'server-version': { type: 'string', multiple: true, default: [] },
        workloads: { type: 'string', default: '' },
      },
    })
    const o = {
      blipmq: values.blipmq,
      nats: values.nats,
      rounds: number(values.rounds, 'rounds'),
      count: number(values.count, 'count'),
      maxSecs: number(values['max-secs'], 'max-secs'),
      latencyRate: number(values['latency-rate'], 'latency-rate'),
      latencySecs: number(values['latency-secs'], 'latency-secs'),
      out: values.out,
      command: values.command,
      serverVersion: values['server-version'],
      workloads: values.workloads === '' ? [] : values.workloads.split(','),
    }
    const unknown = o.workloads.filter((w) => !WORKLOADS.includes(w))
    if (unknown.length) throw new Error(`unknown workloads ${unknown.join(', ')} (of ${WORKLOADS.join(', ')})`)
    if (!o.blipmq && !o.nats) throw new Error('give --blipmq and/or --nats')
    if (o.rounds < 1 || o.count < 1) throw new Error('--rounds and --count must be at least 1')
    await driverMain(o)
  } else if (command === 'child') {
    const [role, ...options] = rest
    if (!ROLES[role]) throw new Error(`unknown role ${role}\n${USAGE}`)
    const { values } = parseArgs({
      args: options,
      options: Object.fromEntries(
        ['system', 'addr', 'topic', 'size', 'count', 'max-secs', 'rate', 'secs'].map((k) => [k, { type: 'string' }]),
      ),
    })
    if (!SYSTEMS.includes(values.system) || !values.addr || !values.topic) throw new Error(USAGE)
    const o = {
      system: values.system,
      addr: values.addr,
      topic: values.topic,
      size: number(values.size ?? 16, 'size'),
      count: number(values.count ?? 200000, 'count'),
      maxSecs: number(values['max-secs'] ?? 30, 'max-secs'),
      rate: number(values.rate ?? 5000, 'rate'),
      secs: number(values.secs ?? 3, 'secs'),
    }
    const result = await ROLES[role](o)
    process.stdout.write(JSON.stringify(result) + '\n')
  } else {
    throw new Error(USAGE)
  }
}

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`)
  process.exit(2)
})
