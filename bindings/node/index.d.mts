// Types of the ES module entry: the same declarations as the CommonJS entry.
export * from './index.js'
import blipmq from './index.js'
export default blipmq
