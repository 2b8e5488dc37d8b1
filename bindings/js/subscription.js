// Subscriptions: the receive side both packages share. A package's native
// subscription hands out batches of messages; this layer hands them out one
// at a time, in order, to `next()` callers, async iteration or an
// `onMessage` callback, and reports discards in line with the messages.

import { call, uint32 } from './arguments.js'

/**
 * The `Subscription` class of a package, extending `Base` (EventEmitter in
 * Node, EventTarget in browsers), over the package's backend:
 *
 * - `batchSize`: messages taken from the native subscription per crossing.
 *   Bigger batches amortize the crossing; a batch is only what is already
 *   buffered, so a slow stream still gets each message as soon as it
 *   arrives.
 * - `openBatch(nativeBatch, nativeSubscription)`: a batch with `count`,
 *   `next` (0) and `droppedAfter`; `message(batch, index)` its message
 *   `index`, a Message with `droppedBefore`.
 * - `emitDrop(subscription, count)`: the `'drop'` event; true if anyone
 *   listened. `warn(text)`: the one warning when no one did.
 * - `throwLater(error)`: throw as an uncaught exception, as from a listener.
 * - `nextTurn()`: a Promise of the event loop's next turn (an onMessage
 *   subscription gives timers and I/O a turn after each batch).
 *
 * The native subscription has `pattern`, `dropped`, `nextBatch(max,
 * timeoutMs)` (null once ended), `unsubscribe()`, `detach()`, and may have a
 * synchronous `tryNextBatch(max)` (null when nothing is buffered).
 */
export function subscriptionClass(Base, backend) {
  const { batchSize, openBatch, message: messageAt, emitDrop, warn, throwLater, nextTurn } = backend

  /**
   * Messages matching a pattern, in order. Async-iterable: `for await` ends
   * when the subscription ends, and leaving the loop early ends the
   * subscription (a durable one is detached, never deleted). Made with an
   * `onMessage` callback, it calls that instead (and is not iterable).
   */
  class Subscription extends Base {
    #native
    // What the native subscription buffers can be read without waiting.
    #canTry
    // Batches received and not yet handed out, oldest first.
    #batches = []
    #ended = false
    // The one native wait in progress, if any (it holds the native lock).
    #receiving = null
    // Calls of next() waiting for a message, oldest first: each gets the
    // next message in arrival order, or null at its timeout or the end.
    #waiters = []
    // The callbacks of a subscription made with `onMessage`, else null.
    #handlers = null
    // The subscribe option `onDrop`, else null.
    #onDrop = null
    // Discards reported after the last message handed out, to report when
    // the consumer asks for what comes next.
    #trailingDrops = 0
    // Whether the one warning of unheard discards was given.
    #warned = false

    /** `options`: `onMessage`, `onError`, `onDrop` (checked by the caller). */
    constructor(nativeSubscription, options = {}) {
      super()
      this.#native = nativeSubscription
      this.#canTry = typeof nativeSubscription.tryNextBatch === 'function'
      this.#onDrop = options.onDrop ?? null
      if (options.onMessage != null) {
        this.#handlers = { onMessage: options.onMessage, onError: options.onError }
        nextTurn().then(() => this.#pump())
      }
    }

    /** The topic or pattern it was made with. */
    get pattern() {
      return this.#native.pattern
    }

    /**
     * How many messages the broker has reported discarded for this
     * subscription so far (counted as soon as reported, before the consumer
     * reaches them).
     */
    get dropped() {
      return this.#native.dropped
    }

    /**
     * Discards reach the application in line with the messages, as the
     * consumer reaches them: `onDrop(count)` and the `'drop'` event, just
     * before the message after them is handed out, or when nothing follows
     * them, as soon as they are reported while a receive waits. With
     * neither, a warning says so, once per subscription: no discard is
     * silent.
     */
    #reportDrops(count) {
      let heard = this.#onDrop !== null
      try {
        this.#onDrop?.(count)
      } catch (error) {
        this.#uncaught(error)
      }
      try {
        heard = emitDrop(this, count) || heard
      } catch (error) {
        this.#uncaught(error)
        heard = true
      }
      if (!heard && !this.#warned) {
        this.#warned = true
        warn(
          `the broker discarded ${count} messages for subscription '${this.pattern}' ` +
            "(the consumer fell behind or they expired); listen for 'drop' or pass onDrop to handle it",
        )
      }
    }

    /** An error thrown by the application's drop handling. */
    #uncaught(error) {
      if (this.#handlers !== null) this.#report(error)
      else throwLater(error)
    }

    /**
     * The next message; `null` when `timeoutMs` passes first or once the
     * subscription has ended (unsubscribed, or the client closed). A
     * `signal` that aborts first rejects the call with its reason; the
     * message it would have had goes to the next call. Concurrent calls are
     * answered in call order.
     */
    next(options) {
      if (this.#handlers !== null) return Promise.reject(callbackModeError())
      const signal = options?.signal
      let timeoutMs
      try {
        timeoutMs = uint32(options?.timeoutMs, 'timeoutMs')
        if (signal != null && typeof signal.throwIfAborted !== 'function') {
          throw new TypeError('signal must be an AbortSignal')
        }
      } catch (error) {
        return Promise.reject(error)
      }
      // An aborted call takes nothing: the message stays for the next one.
      if (signal?.aborted) return Promise.reject(signal.reason)
      // Not an async function: a message that is already here costs one
      // resolved promise. Earlier callers still waiting come first.
      if (this.#waiters.length === 0) {
        const message = this.#take()
        if (message !== null) return Promise.resolve(message)
        if (this.#ended) return Promise.resolve(null)
      }
      return new Promise((resolve, reject) => {
        const waiter = { resolve, reject, deadline: undefined, timer: undefined, signal, onAbort: undefined }
        if (timeoutMs !== undefined) {
          waiter.deadline = Date.now() + timeoutMs
          waiter.timer = setTimeout(() => this.#giveUp(waiter, (w) => w.resolve(null)), timeoutMs)
        }
        if (signal != null) {
          waiter.onAbort = () => this.#giveUp(waiter, (w) => w.reject(signal.reason))
          signal.addEventListener('abort', waiter.onAbort, { once: true })
        }
        this.#waiters.push(waiter)
        this.#serve()
      })
    }

    // The iterator's next(): a message that is already here costs one
    // resolved promise of its iterator result, not a second promise on top.
    #nextResult() {
      if (this.#waiters.length === 0) {
        const message = this.#take()
        if (message !== null) return Promise.resolve({ done: false, value: message })
      }
      return this.next().then(toIteratorResult)
    }

    /**
     * A message that is already here (batches, then the native buffer), or
     * null. The native buffer is not read while a native wait is in
     * progress: that wait may have taken older messages that are still on
     * their way here, and reading past them would hand messages out of
     * order.
     */
    #take() {
      if (this.#trailingDrops > 0) {
        const count = this.#trailingDrops
        this.#trailingDrops = 0
        this.#reportDrops(count)
      }
      let batch = this.#batches[0]
      if (batch === undefined) {
        if (!this.#canTry || this.#ended || this.#receiving !== null) return null
        const native = this.#native.tryNextBatch(batchSize)
        if (native === null) return null
        batch = openBatch(native, this.#native)
        this.#batches.push(batch)
      }
      const message = messageAt(batch, batch.next++)
      if (message.droppedBefore > 0) this.#reportDrops(message.droppedBefore)
      if (batch.next === batch.count) {
        this.#batches.shift()
        this.#trailingDrops += batch.droppedAfter
      }
      return message
    }

    /**
     * A waiter's timeout passed (`settle` resolves it with null) or its
     * signal aborted (`settle` rejects it with the reason): it leaves the
     * queue having taken nothing, settled by `settle`.
     */
    #giveUp(waiter, settle) {
      const index = this.#waiters.indexOf(waiter)
      if (index === -1) return
      this.#waiters.splice(index, 1)
      settled(waiter)
      settle(waiter)
    }

    /**
     * Hand what is here to the waiters, oldest first; if any still wait,
     * start the one native wait (bounded by the latest waiter's deadline,
     * so that it never outlives them all). One wait at a time: two would
     * queue on the native lock, and the second would wait for a message of
     * its own while the first had brought one for it.
     */
    #serve() {
      while (this.#waiters.length > 0) {
        const message = this.#take()
        if (message === null) break
        const waiter = this.#waiters.shift()
        settled(waiter)
        waiter.resolve(message)
      }
      if (this.#waiters.length === 0) return
      if (this.#ended) {
        this.#releaseWaiters((waiter) => waiter.resolve(null))
        return
      }
      if (this.#receiving !== null) return
      const deadlines = this.#waiters.map((waiter) => waiter.deadline)
      const waitMs = deadlines.includes(undefined)
        ? undefined
        : Math.max(0, Math.ceil(Math.max(...deadlines) - Date.now()))
      this.#receiving = call(() => this.#native.nextBatch(batchSize, waitMs)).then(
        (native) => {
          this.#receiving = null
          if (native === null) this.#ended = true
          else if (!this.#ended) {
            const batch = openBatch(native, this.#native)
            if (batch.count > 0) this.#batches.push(batch)
            // Discards with no message after them (nothing is buffered:
            // this wait started with nothing left to hand out).
            else if (batch.droppedAfter > 0) this.#reportDrops(batch.droppedAfter)
          }
          this.#serve()
        },
        (error) => {
          this.#receiving = null
          this.#releaseWaiters((waiter) => waiter.reject(error))
        },
      )
    }

    /**
     * Call `onMessage` with every message, in order, until the subscription
     * ends: what is buffered a batch at a time, with a turn of the event
     * loop after each batch (so that timers and I/O run while messages
     * stream in), and a native wait when nothing is. No promise per
     * message: the cheapest way to receive.
     */
    async #pump() {
      const { onMessage } = this.#handlers
      while (!this.#ended) {
        let native = this.#canTry ? this.#native.tryNextBatch(batchSize) : null
        if (native === null) {
          try {
            native = await call(() => this.#native.nextBatch(batchSize))
          } catch (error) {
            this.#ended = true
            this.#report(error)
            return
          }
          if (native === null) {
            this.#ended = true
            return
          }
        }
        this.#deliver(openBatch(native, this.#native), onMessage)
        await nextTurn()
      }
    }

    // The per-message loop, apart from the async pump: V8 compiles it (with
    // the user's callback inlined) again whenever that callback takes a new
    // path, and inside the async function each of those compiles cost
    // several times more CPU.
    #deliver(batch, onMessage) {
      for (let i = 0; i < batch.count && !this.#ended; i++) {
        const message = messageAt(batch, i)
        if (message.droppedBefore > 0) this.#reportDrops(message.droppedBefore)
        try {
          onMessage(message)
        } catch (error) {
          this.#report(error)
        }
      }
      if (batch.droppedAfter > 0 && !this.#ended) this.#reportDrops(batch.droppedAfter)
    }

    /**
     * An error of a callback subscription (thrown by `onMessage`, or the
     * one that ended it) goes to `onError`; without one it is thrown as an
     * uncaught exception, as from an event listener.
     */
    #report(error) {
      const { onError } = this.#handlers
      if (onError != null) onError(error)
      else throwLater(error)
    }

    /** Settle every waiting call with `settle`, emptying the queue. */
    #releaseWaiters(settle) {
      for (const waiter of this.#waiters.splice(0)) {
        settled(waiter)
        settle(waiter)
      }
    }

    /**
     * Stop receiving and wait for the broker's confirm. Deletes a durable
     * subscription with its unacked messages. Idempotent.
     */
    unsubscribe() {
      this.#end()
      return call(() => this.#native.unsubscribe())
    }

    /**
     * Stop receiving without deleting anything: a plain subscription ends,
     * a durable one keeps its unacked messages for the next subscribe with
     * its name. Idempotent.
     */
    detach() {
      this.#end()
      return call(() => this.#native.detach())
    }

    #end() {
      this.#ended = true
      this.#batches.length = 0
      this.#serve()
    }

    [Symbol.asyncIterator]() {
      if (this.#handlers !== null) throw callbackModeError()
      const subscription = this
      return {
        next() {
          return subscription.#nextResult()
        },
        async return() {
          await subscription.detach()
          return { done: true, value: undefined }
        },
        [Symbol.asyncIterator]() {
          return this
        },
      }
    }
  }

  // `await using` support where the runtime has it.
  if (typeof Symbol.asyncDispose === 'symbol') {
    Subscription.prototype[Symbol.asyncDispose] = Subscription.prototype.detach
  }
  return Subscription
}

/** A waiter of next() is answered: its timer and abort listener go. */
function settled(waiter) {
  clearTimeout(waiter.timer)
  waiter.signal?.removeEventListener('abort', waiter.onAbort)
}

function callbackModeError() {
  return new TypeError('this subscription delivers to its onMessage callback: it has no next() and is not iterable')
}

function toIteratorResult(message) {
  return message === null ? { done: true, value: undefined } : { done: false, value: message }
}
