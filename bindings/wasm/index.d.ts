// Types of the `@blipmq/web` package's public API (index.js). Hand-written,
// like the layer they describe; the wasm module's own types are generated
// by wasm-bindgen into native/blipmq_wasm.d.ts.
import type { BlipMQError } from '@blipmq/core/errors'
import type { DisconnectDetail, DisconnectKind } from '@blipmq/core'

export type { DisconnectDetail, DisconnectKind }

// One error class per wire code, generated from the protocol's error table
// (shared with the Node SDK through @blipmq/core).
export * from '@blipmq/core/errors'

/** Bytes to send: any Uint8Array or view, an ArrayBuffer, or text (sent as UTF-8). */
export type Payload = Uint8Array | ArrayBufferView | ArrayBuffer | string

/** 0 = at most once; 1 = at least once (resolves on the broker's confirm). */
export type Qos = 0 | 1

/** Headers to send: a Headers, [key, value] pairs (keys may repeat) or an object. */
export type HeadersInit =
  | Headers
  | Iterable<readonly [string, Payload]>
  | Record<string, Payload>

/** A WebSocket class: the host's global one, or e.g. the `ws` package's on Node 20. */
export type WebSocketClass = new (url: string) => unknown

export interface ConnectOptions {
  /** Required when the broker has API keys configured. */
  apiKey?: string
  /** Sent in the handshake; the broker logs it. */
  name?: string
  /** Reconnect with backoff after a lost connection (default true). */
  reconnect?: boolean
  /** Limit for reaching the broker and the handshake, in ms (default 5000). */
  connectTimeoutMs?: number
  /** Limit for the answer to a request, in ms (default 10000). */
  requestTimeoutMs?: number
  /** Messages buffered per subscription before the client stops reading (default 8192). */
  subscriptionCapacity?: number
  /** Use this WebSocket class instead of the global `WebSocket`. */
  WebSocket?: WebSocketClass
}

export interface PublishOptions {
  /** How long the message may wait for delivery, in ms; 0 = the broker's default. */
  ttlMs?: number
  qos?: Qos
  headers?: HeadersInit
}

export interface SubscribeOptions {
  qos?: Qos
  /** Name of a durable subscription that outlives the connection. */
  durable?: string
  /** Queue group: members sharing a name share the messages. */
  group?: string
  /**
   * QoS 1: how long a delivery may go without `ack`, `nak`, `term` or
   * `inProgress` before the broker sends it again (10 to 3600000 ms; the
   * broker's default when absent).
   */
  ackTimeoutMs?: number
  /**
   * QoS 1: deliveries of a message before the broker moves it to the
   * dead-letter topic instead (1 to 10000; the broker's default when absent).
   */
  maxDeliveries?: number
  /**
   * Called with the count of messages the broker discarded for this
   * subscription (a full queue, an expired TTL, the memory budget), in line
   * with the messages: just before the message after them is handed out,
   * or as soon as they are reported when none follows while a receive
   * waits. A `'drop'` event says the same. With neither, `console.warn`
   * says so once.
   */
  onDrop?: (count: number) => void
}

export interface NextOptions {
  /** Resolve `null` if no message arrives within this many ms. */
  timeoutMs?: number
  /**
   * Reject with the signal's reason when it aborts first (at once if it
   * already has). An aborted call takes no message: the next one gets it.
   */
  signal?: AbortSignal
}

/** Where `load` may take the wasm module from. */
export type WasmSource = URL | string | Request | Response | BufferSource | WebAssembly.Module

/**
 * Load and compile the wasm module once (`connect` does it by itself).
 * Without an argument it is fetched next to this file, or read from disk
 * where the package is loaded from files (Node).
 */
export declare function load(source?: WasmSource | Promise<WasmSource>): Promise<unknown>

/**
 * Connect to a broker's WebSocket listener (`ws://host:port`, see the
 * broker's `[websocket] bind_addr`), or to the first that answers of
 * several (an array, or one string separated by commas), tried in order;
 * after a lost connection they are tried in turn again, from the one the
 * client was connected to, after a random wait up to the backoff. Resolves
 * once the handshake is done.
 */
export declare function connect(url: string | readonly string[], options?: ConnectOptions): Promise<Client>

/** The events a `Client` dispatches: each a CustomEvent with this `detail`. */
export interface ClientEventMap {
  /**
   * The connection to the broker was lost; the client reconnects unless told
   * not to. `detail.reason` says why for people, `detail.kind` to act on
   * (`'broker_closed'`, `'io'` or `'protocol'`), with its wire `code` and,
   * for `'io'`, the I/O error's `ioKind`.
   */
  disconnect: CustomEvent<DisconnectDetail>
  /**
   * Connected again (subscriptions are restored): the broker's id for the
   * new connection, and its address as given to `connect`.
   */
  reconnect: CustomEvent<{ connectionId: bigint; address: string }>
  /** A reconnect attempt (from 1) failed; the next follows after a backoff. */
  reconnectFailed: CustomEvent<{ attempt: number; error: string }>
  /** An error the broker sent that answers no particular call. */
  serverError: CustomEvent<{ error: BlipMQError }>
  /** The client has closed (by `close()`, or for good after a lost connection). */
  close: CustomEvent<Record<string, never>>
}

/**
 * A connection to a broker; create it with `connect`. An EventTarget of the
 * connection's changes (`ClientEventMap`).
 */
export declare class Client extends EventTarget {
  private constructor()
  addEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (event: ClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void
  removeEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (event: ClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void
  /**
   * Publish a message. Resolves with `undefined` once queued at QoS 0, and
   * with the broker's message id once the broker confirms it at QoS 1.
   */
  publish(topic: string, payload: Payload, options?: PublishOptions): Promise<bigint | undefined>
  /** Subscribe to a topic or pattern (`*` one token, `>` the rest). */
  subscribe(pattern: string, options?: SubscribeOptions): Promise<Subscription>
  /** Resolves once the broker has handled everything sent before. */
  flush(): Promise<void>
  /** Send what is queued and close; subscriptions end. */
  close(): Promise<void>
  readonly status: 'connected' | 'reconnecting' | 'closed'
  /** The largest payload the broker accepts, in bytes. */
  readonly maxMessageSize: number
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Messages matching a pattern, in order. `for await` ends when the
 * subscription ends; leaving the loop early ends it (a durable one is
 * detached, never deleted).
 */
/** What a subscription's `'drop'` event carries. */
export interface DropDetail {
  /** How many messages the broker discarded here. */
  count: number
}

export declare class Subscription extends EventTarget implements AsyncIterable<Message> {
  private constructor()
  readonly pattern: string
  /** Messages the broker has reported discarded for this subscription so far. */
  readonly dropped: number
  addEventListener(type: 'drop', listener: (event: CustomEvent<DropDetail>) => void, options?: boolean | AddEventListenerOptions): void
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void
  /** The next message; `null` on timeout or once the subscription has ended. */
  next(options?: NextOptions): Promise<Message | null>
  /** Stop receiving and wait for the broker's confirm; deletes a durable subscription. Idempotent. */
  unsubscribe(): Promise<void>
  /** Stop receiving, keeping a durable subscription for the next subscribe with its name. */
  detach(): Promise<void>
  [Symbol.asyncIterator](): AsyncIterableIterator<Message>
  [Symbol.asyncDispose](): Promise<void>
}

/** A message delivered to a subscription. */
export declare class Message {
  private constructor()
  /** The topic it was published to (not the pattern that matched). */
  readonly topic: string
  readonly payload: Uint8Array
  readonly headers: Headers
  /** The broker-assigned id. */
  readonly id: bigint
  /** When the broker accepted it, in ms since the Unix epoch. */
  readonly timestampMs: number
  /** 1 on first delivery, higher on redelivery. */
  readonly deliveryCount: number
  /** What the broker acks this delivery by: unique among the subscription's unacked deliveries at QoS 1; `0n` at QoS 0. */
  readonly deliveryId: bigint
  /** Messages the broker discarded for the subscription just before this one (0 almost always). */
  readonly droppedBefore: number
  /** The payload as UTF-8 text. */
  text(): string
  /** Acknowledge; resolves at once for QoS 0 deliveries. */
  ack(): Promise<void>
  /**
   * Processing failed: the broker delivers it again, after `delayMs` (at
   * once when absent or 0); it counts toward `maxDeliveries`. Resolves at
   * once for QoS 0 deliveries.
   */
  nak(options?: NakOptions): Promise<void>
  /** It can never be processed: the broker moves it to the dead-letter topic now. */
  term(): Promise<void>
  /** Still working: the broker restarts the delivery's ack timeout; send it more often than that. */
  inProgress(): Promise<void>
}

export interface NakOptions {
  /** No redelivery sooner than this many ms from now (0 = at once). */
  delayMs?: number
}

/** Ordered key/value pairs; keys may repeat; values are bytes. */
export declare class Headers implements Iterable<[string, Uint8Array]> {
  constructor(init?: HeadersInit)
  append(key: string, value: Payload): this
  /** The first value of `key` as UTF-8 text. */
  get(key: string): string | undefined
  /** The first value of `key` as bytes. */
  getBytes(key: string): Uint8Array | undefined
  getAll(key: string): Uint8Array[]
  has(key: string): boolean
  readonly size: number
  entries(): IterableIterator<[string, Uint8Array]>
  [Symbol.iterator](): IterableIterator<[string, Uint8Array]>
}

