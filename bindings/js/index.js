// @blipmq/core: the JavaScript both BlipMQ npm packages share (`blipmq` for
// Node over its napi-rs addon, `@blipmq/web` for browsers over its wasm
// module). Each package passes its own base classes (EventEmitter or
// EventTarget), bytes type and native calls to the factories here, and
// re-exports the error classes; nothing here touches a native module itself.

export * from './errors.js'
export {
  addressList,
  call,
  connectOptions,
  convertError,
  isTtlMs,
  nakDelayMs,
  optionalNumber,
  optionalString,
  qosOption,
  ttlOption,
  uint32,
} from './arguments.js'
export { headersClass, toHeaders } from './headers.js'
export { subscriptionClass } from './subscription.js'
export { clientClass, PUBLISHED } from './client.js'
