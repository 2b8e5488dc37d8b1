// The package the shared tests run against: BLIPMQ_SDK=node (`blipmq`) or
// web (`@blipmq/web`), as scripts/test-node.sh and scripts/test-web.sh set
// it. These tests cover the layer both packages take from @blipmq/core;
// each package's own tests (bindings/node/test, bindings/wasm/test) cover
// its backend. Below: what differs between the two (addresses, bytes,
// events), and helpers both packages' tests use.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once as onceEmitted } from 'node:events'

export const SDK = process.env.BLIPMQ_SDK ?? 'node'
if (SDK !== 'node' && SDK !== 'web') throw new Error(`BLIPMQ_SDK must be node or web, not ${SDK}`)

if (SDK === 'web') {
  // Node 20 has no WebSocket of its own: the `ws` package's stands in.
  const { WebSocket } = await import('ws')
  globalThis.WebSocket ??= WebSocket
}

/** The package's module namespace. */
export const sdk = await import(SDK === 'node' ? 'blipmq' : '@blipmq/web')

// ------------------------------------------------- what differs, in one place

/** What a test connects to: the TCP address in Node, the ws:// URL in browsers. */
export const address = (broker) => (SDK === 'node' ? broker.addr : broker.url)

/** The package's own bytes type: a Buffer in Node, a Uint8Array in browsers. */
export const bytes = (array) => (SDK === 'node' ? Buffer.from(array) : Uint8Array.from(array))

/** `size` zero bytes, in the package's bytes type. */
export const zeros = (size) => (SDK === 'node' ? Buffer.alloc(size) : new Uint8Array(size))

const decoder = new TextDecoder()
/** Bytes (a payload, a header value) as UTF-8 text. */
export const text = (value) => decoder.decode(value)

// The detail of each client event, in the order Node's EventEmitter passes
// them as arguments (browsers dispatch a CustomEvent with them as `detail`).
const EVENT_FIELDS = {
  disconnect: ['reason', 'kind', 'code', 'ioKind'],
  reconnect: ['connectionId', 'address'],
  reconnectFailed: ['attempt', 'error'],
  serverError: ['error'],
  close: [],
}

/**
 * Calls `listener(detail)` on each `type` event of `client` (a Node
 * EventEmitter or a browser EventTarget), `detail` as browsers have it.
 */
export function listen(client, type, listener, { once = false } = {}) {
  if (SDK === 'node') {
    const fields = EVENT_FIELDS[type]
    const handler = (...args) => listener(Object.fromEntries(fields.map((field, i) => [field, args[i]])))
    if (once) client.once(type, handler)
    else client.on(type, handler)
  } else {
    client.addEventListener(type, (event) => listener(event.detail), { once })
  }
}

/** The detail of the next `type` event of `client`. */
export const nextEvent = (client, type) => new Promise((resolve) => listen(client, type, resolve, { once: true }))

// ------------------------------------------------------------ test helpers

/** Asserts that `promise` rejects with class `Class` and wire `code`. */
export async function rejectsWith(promise, Class, code, codeName) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof Class, `${error} is a ${Class.name}`)
    assert.ok(error instanceof sdk.BlipMQError)
    assert.ok(error instanceof Error)
    assert.equal(error.name, Class.name)
    assert.equal(error.code, code)
    assert.equal(error.codeName, codeName)
    assert.match(error.message, new RegExp(`^${codeName} \\(${code}\\): .+`))
    assert.ok(error.cause instanceof Error, 'the native error is kept as the cause')
    assert.ok(error.stack.includes(Class.name))
    return true
  })
}

/**
 * The lines a script (see `runScript`) starts with to import `connect`,
 * and the options its `connect` calls take: in Node 20 the browser package
 * needs a WebSocket class (the `ws` package's).
 */
export const SCRIPT_IMPORT =
  SDK === 'node'
    ? `import { connect } from 'blipmq'`
    : `import { WebSocket } from 'ws'\nimport { connect } from '@blipmq/web'`
export const SCRIPT_OPTIONS = SDK === 'node' ? '{}' : '{ WebSocket }'

/** Runs `source` as an ES module in a child node; resolves its exit code (killed after 10 s). */
export async function runScript(source, args = []) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', source, ...args], {
    cwd: process.cwd(),
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const [code, signal] = await onceEmitted(child, 'exit')
  clearTimeout(timer)
  return signal === null ? code : signal
}
