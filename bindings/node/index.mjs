// The ES module entry: the same objects as the CommonJS entry (one copy of
// the native addon and of every class, whichever way the package is loaded).
//
// Loaded with require, not `import ... from './index.js'`: importing a
// CommonJS file makes Node scan its source (and native.js's) for export
// names, and that scan ran hot enough to be compiled by V8's optimizing
// compiler. `import('blipmq')` took 17-19 ms and ~40 ms of CPU that way
// (most of it after the import had returned, in a background compile),
// 7-10 ms and ~10 ms like this.
import { createRequire } from 'node:module'

const blipmq = createRequire(import.meta.url)('./index.js')

export const {
  connect,
  Client,
  Subscription,
  Message,
  Headers,
} = blipmq
export * from './errors.mjs'
export default blipmq
