// Types of @blipmq/core, the layer the `blipmq` and `@blipmq/web` packages
// share. Its classes reach users through those packages, whose own .d.ts
// files describe them with each package's bytes and event types; these
// declarations are for the packages' adapters.

export * from './errors.js'

/** A native module's failure (an Error with a numeric `code`) as its BlipMQError; anything else unchanged. */
export declare function convertError(error: unknown): unknown
/** `operation()` awaited, its failure converted. */
export declare function call<T>(operation: () => T | PromiseLike<T>): Promise<T>
export declare function isTtlMs(value: unknown): boolean
export declare function ttlOption(ttlMs: unknown): number | undefined
export declare function qosOption(qos: unknown): number | undefined
export declare function uint32(value: unknown, what: string): number | undefined
export declare function optionalString(value: unknown, what: string): string | undefined
export declare function optionalNumber(value: unknown, what: string): number | undefined
/** The delay of `message.nak({ delayMs })`, in ms (0 when not given). */
export declare function nakDelayMs(options?: { delayMs?: unknown }): number

/**
 * The broker addresses `connect` takes, checked: one address (which may
 * list several separated by commas) or an array of them, tried in order.
 */
export declare function addressList(value: unknown, what: string): string[]

/** The connect options both packages take, checked. */
export interface CommonConnectOptions {
  apiKey?: string
  name?: string
  reconnect: boolean
  connectTimeoutMs?: number
  requestTimeoutMs?: number
  subscriptionCapacity?: number
}
export declare function connectOptions(options: Record<string, unknown>): CommonConnectOptions

type Constructor<T = object> = abstract new (...args: any[]) => T

/** A package's Headers class over its bytes type. */
export declare function headersClass<B extends Uint8Array>(
  toBytes: (value: unknown, what: string) => B,
  bytesGetter: string,
): new (init?: unknown) => Iterable<[string, B]>
export declare function toHeaders<H>(Headers: new (init?: unknown) => H, init: unknown): H | undefined

export interface SubscriptionBackend<Batch, Message> {
  batchSize: number
  openBatch(nativeBatch: any, nativeSubscription: any): Batch & { count: number; next: number; droppedAfter: number }
  message(batch: Batch, index: number): Message & { droppedBefore: number }
  emitDrop(subscription: object, count: number): boolean
  warn(text: string): void
  throwLater(error: unknown): void
  nextTurn(): Promise<void>
}
export declare function subscriptionClass<B extends Constructor, Batch, Message>(
  Base: B,
  backend: SubscriptionBackend<Batch, Message>,
): new (nativeSubscription: any, options?: object) => InstanceType<B>

/**
 * Why a connection ended: the broker closed it, reading or writing failed
 * (`ioKind` says how), or the broker sent bytes that are not frames.
 */
export type DisconnectKind = 'broker_closed' | 'io' | 'protocol'

/**
 * What a client's `'disconnect'` event carries (Node passes the fields as
 * its arguments, in this order; browsers as the CustomEvent's `detail`).
 */
export interface DisconnectDetail {
  /** Why, for people. */
  reason: string
  /** Why, to act on. */
  kind: DisconnectKind
  /** The wire code that goes with it: 100 (MalformedFrame) for `'protocol'`, else 602 (ConnectionClosed). */
  code: number
  /** For `'io'`: the I/O error's kind in snake case (`'connection_reset'`, `'timed_out'`, ...). */
  ioKind: string | undefined
}

/**
 * A native event, as both backends deliver it to a client (`onEvent`):
 * `kind` says which of the other fields are set.
 */
export interface NativeEvent {
  kind: 'connected' | 'disconnected' | 'reconnect_failed' | 'server_error' | 'closed'
  connectionId?: bigint
  address?: string
  attempt?: number
  message?: string
  code?: number
  codeName?: string
  disconnectKind?: DisconnectKind
  ioKind?: string
}

/** Called with a topic once the native module accepted a publish to it. */
export declare const PUBLISHED: unique symbol

export interface ClientBackend {
  emit(client: object, type: string, detail: Record<string, unknown>): unknown
  toBytes(value: unknown, what: string): Uint8Array
  Headers: new (init?: unknown) => Iterable<[string, Uint8Array]>
  Subscription: new (nativeSubscription: any, options?: object) => object
  publish(
    native: any,
    topic: string,
    bytes: Uint8Array,
    options: { ttlMs?: number; qos?: number; headers?: Iterable<[string, Uint8Array]> },
  ): PromiseLike<bigint | null | undefined> | null
  subscribe(
    native: any,
    pattern: string,
    options: { qos?: number; durable?: string; group?: string; ackTimeoutMs?: number; maxDeliveries?: number },
  ): PromiseLike<unknown>
}
export declare function clientClass<B extends Constructor>(
  Base: B,
  backend: ClientBackend,
): new (nativeClient: any) => InstanceType<B>
