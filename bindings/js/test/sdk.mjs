// The package the shared tests run against: BLIPMQ_SDK=node (`blipmq`) or
// web (`@blipmq/web`), as scripts/test-node.sh and scripts/test-web.sh set
// it. These tests cover the layer both packages take from @blipmq/core;
// each package's own tests (bindings/node/test, bindings/wasm/test) cover
// its backend.
export const SDK = process.env.BLIPMQ_SDK ?? 'node'
if (SDK !== 'node' && SDK !== 'web') throw new Error(`BLIPMQ_SDK must be node or web, not ${SDK}`)

if (SDK === 'web') {
  // Node 20 has no WebSocket of its own: the `ws` package's stands in.
  const { WebSocket } = await import('ws')
  globalThis.WebSocket ??= WebSocket
}

/** The package's module namespace. */
export const sdk = await import(SDK === 'node' ? 'blipmq' : '@blipmq/web')
