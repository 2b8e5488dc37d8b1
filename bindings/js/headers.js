// Message headers: the one class both packages export, made with the
// package's own bytes type (Buffer in Node, Uint8Array in browsers).

const decoder = new TextDecoder()

/**
 * The `Headers` class of a package: `toBytes(value, what)` makes a value
 * the package's bytes (or throws a TypeError naming `what`), and
 * `bytesGetter` names the method that reads a first value as bytes
 * (`getBuffer` in Node, `getBytes` in browsers).
 */
export function headersClass(toBytes, bytesGetter) {
  /**
   * A message's headers: ordered key/value pairs, keys may repeat, values
   * are bytes. `get` reads the first value as UTF-8 text.
   */
  class Headers {
    #entries = []

    /** `init`: a Headers, an iterable of [key, value] pairs, or an object. */
    constructor(init) {
      if (init == null) return
      const pairs = typeof init[Symbol.iterator] === 'function' ? init : Object.entries(init)
      for (const pair of pairs) {
        if (!Array.isArray(pair) || pair.length !== 2) {
          throw new TypeError('each header must be a [key, value] pair')
        }
        this.append(pair[0], pair[1])
      }
    }

    /** Add a header after the existing ones. */
    append(key, value) {
      if (typeof key !== 'string') throw new TypeError('a header key must be a string')
      this.#entries.push([key, toBytes(value, 'a header value')])
      return this
    }

    /** The first value of `key` as text, or undefined. */
    get(key) {
      const value = this[bytesGetter](key)
      return value === undefined ? undefined : decoder.decode(value)
    }

    /** The first value of `key` as bytes, or undefined. */
    [bytesGetter](key) {
      return this.#entries.find(([k]) => k === key)?.[1]
    }

    /** Every value of `key`, in order. */
    getAll(key) {
      return this.#entries.filter(([k]) => k === key).map(([, v]) => v)
    }

    has(key) {
      return this.#entries.some(([k]) => k === key)
    }

    get size() {
      return this.#entries.length
    }

    entries() {
      return this.#entries.map(([k, v]) => [k, v])[Symbol.iterator]()
    }

    [Symbol.iterator]() {
      return this.entries()
    }
  }
  return Headers
}

/** `init` (anything `new Headers` takes, or null) as a Headers of `Headers`'s class, or undefined. */
export function toHeaders(Headers, init) {
  if (init == null) return undefined
  return init instanceof Headers ? init : new Headers(init)
}
