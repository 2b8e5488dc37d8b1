// Clients: the connection's events, subscribe, publish, flush and close,
// as both packages wrap their native client.

import { call, convertError, subscribeOptions, ttlOption, qosOption } from './arguments.js'
import { codedError } from './errors.js'
import { toHeaders } from './headers.js'

const RESOLVED = Promise.resolve()

/**
 * Called with a topic once the native module has accepted a publish to it;
 * a package's Client may define it (Node's batches publishes to such topics).
 */
export const PUBLISHED = Symbol('blipmq.published')

/**
 * The `Client` class of a package, extending `Base` (EventEmitter in Node,
 * EventTarget in browsers), over the package's backend:
 *
 * - `emit(client, type, detail)`: one of the connection's events:
 *   `'disconnect'` ({ reason, kind, code, ioKind }: the text, then why as a
 *   type: `kind` 'broker_closed', 'io' or 'protocol', `code` the wire code
 *   that goes with it, `ioKind` the I/O error's kind for 'io', else
 *   undefined), `'reconnect'` ({ connectionId, address }: a bigint, and
 *   the broker address of the new connection as given to connect),
 *   `'reconnectFailed'` ({ attempt, error }), `'serverError'` ({ error }, a
 *   BlipMQError the broker sent that answers no call) and `'close'` ({}).
 * - `toBytes(value, what)`: a payload as the package's bytes.
 * - `Headers`, `Subscription`: the package's classes.
 * - `publish(native, topic, bytes, { ttlMs, qos, headers })`: the native
 *   publish (headers a Headers or undefined); null when queued on the spot,
 *   else a Promise of the message id (QoS 1) or of null.
 * - `subscribe(native, pattern, { qos, durable, group })`: the native
 *   subscribe, a Promise of the native subscription.
 */
export function clientClass(Base, backend) {
  const { emit, toBytes, Headers, Subscription } = backend

  /**
   * A connection to a broker; create it with `connect`. Its events say how
   * the connection changes; none of them is an error event, so a client
   * nobody listens to never throws from one.
   */
  class Client extends Base {
    #native
    #closeEmitted = false

    constructor(nativeClient) {
      super()
      this.#native = nativeClient
      // Through a WeakRef: the native side keeps this callback for as long
      // as the connection lives, and a client dropped without close() must
      // stay collectable (collecting it closes the connection).
      const client = new WeakRef(this)
      nativeClient.onEvent((event) => client.deref()?.#onNativeEvent(event))
    }

    /** One native event (`kind` and its fields) as the event it stands for. */
    #onNativeEvent(event) {
      // 'close' is the last event; close() may have emitted it already.
      if (this.#closeEmitted) return
      switch (event.kind) {
        case 'connected':
          emit(this, 'reconnect', { connectionId: event.connectionId, address: event.address })
          break
        case 'disconnected':
          emit(this, 'disconnect', {
            reason: event.message,
            kind: event.disconnectKind,
            code: event.code,
            ioKind: event.ioKind,
          })
          break
        case 'reconnect_failed':
          emit(this, 'reconnectFailed', { attempt: event.attempt, error: event.message })
          break
        case 'server_error':
          emit(this, 'serverError', { error: codedError(event.code, event.codeName, event.message) })
          break
        case 'closed':
          this.#emitClose()
          break
      }
    }

    /**
     * Publish a message. Resolves once it is queued at QoS 0, and with the
     * broker's message id (a bigint) once the broker confirms it at QoS 1.
     */
    publish(topic, payload, options) {
      let pending
      try {
        if (typeof topic !== 'string') throw new TypeError('topic must be a string')
        const bytes = toBytes(payload, 'payload')
        pending = backend.publish(this.#native, topic, bytes, {
          ttlMs: ttlOption(options?.ttlMs),
          qos: qosOption(options?.qos),
          headers: toHeaders(Headers, options?.headers),
        })
      } catch (error) {
        return Promise.reject(convertError(error))
      }
      if (pending === null) {
        this[PUBLISHED]?.(topic)
        return RESOLVED
      }
      return pending.then(
        (id) => {
          this[PUBLISHED]?.(topic)
          return id ?? undefined
        },
        (error) => {
          throw convertError(error)
        },
      )
    }

    /** Subscribe to a topic or pattern (`*` one token, `>` the rest). */
    async subscribe(pattern, options = {}) {
      if (typeof pattern !== 'string') throw new TypeError('pattern must be a string')
      const { native, ...callbacks } = subscribeOptions(options)
      const nativeSubscription = await call(() => backend.subscribe(this.#native, pattern, native))
      return new Subscription(nativeSubscription, callbacks)
    }

    /** Resolves once the broker has handled everything sent before. */
    flush() {
      return call(() => this.#native.flush())
    }

    /** Send what is queued and close. Subscriptions end; later calls fail with ClientClosedError. */
    async close() {
      await call(() => this.#native.close())
      // The native 'closed' event may come after this answer, or never, if
      // nothing keeps the process alive to take it: a listener has heard
      // 'close' by the time close() resolves.
      this.#emitClose()
    }

    #emitClose() {
      if (this.#closeEmitted) return
      this.#closeEmitted = true
      emit(this, 'close', {})
    }

    /** `'connected'`, `'reconnecting'` or `'closed'`. */
    get status() {
      return this.#native.status
    }

    /** The largest payload the broker accepts, in bytes. */
    get maxMessageSize() {
      return this.#native.maxMessageSize
    }
  }

  // `await using` support where the runtime has it.
  if (typeof Symbol.asyncDispose === 'symbol') {
    Client.prototype[Symbol.asyncDispose] = Client.prototype.close
  }
  return Client
}
