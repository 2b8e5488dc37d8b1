/* tslint:disable */
/* eslint-disable */

/**
 * Wraps `blipmq::Client`; freeing it (when JavaScript collects it) closes
 * the connection.
 */
export class NativeClient {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Send what is queued and close; subscriptions end.
     */
    close(): Promise<void>;
    /**
     * Resolves once the broker has handled everything sent before.
     */
    flush(): Promise<void>;
    /**
     * Call `callback` with every change of the connection from now on
     * (`{ kind, ... }`: see `event_to_js`), until the client has closed.
     */
    onEvent(callback: Function): void;
    /**
     * A QoS 0 publish queued on the spot returns `null` (done: no Promise
     * to make and settle); otherwise a Promise of the broker's message id
     * at QoS 1, of `undefined` at QoS 0 (once queued). The payload and
     * header values are copied here, so the caller may reuse its buffers
     * at once.
     */
    publish(topic: string, payload: Uint8Array | number[], ttlMs: number, qos: number, headers: Array<[string, Uint8Array]>): Promise<bigint | undefined> | null;
    /**
     * Resolves once the broker has confirmed the subscription.
     */
    subscribe(pattern: string, qos: number, durable?: string | null, group?: string | null, ackTimeoutMs?: number | null, maxDeliveries?: number | null): Promise<NativeSubscription>;
    /**
     * The largest payload the broker accepts.
     */
    readonly maxMessageSize: number;
    /**
     * `connected`, `reconnecting` or `closed`.
     */
    readonly status: string;
}

/**
 * Wraps `blipmq::foreign::SharedSubscription` (which holds the logic every
 * binding shares), and keeps the QoS 1 messages until JavaScript acks them.
 */
export class NativeSubscription {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Ack the message with this delivery id (QoS 1); resolves once queued.
     */
    ack(deliveryId: bigint): Promise<void>;
    /**
     * Stop receiving without deleting anything: a plain subscription ends,
     * a durable one keeps its unacked messages for the next subscribe with
     * its name (what dropping the Rust `Subscription` does).
     */
    detach(): Promise<void>;
    /**
     * Wait for one message (at most `timeoutMs` when given), then take up
     * to `max` in all from what is buffered, as plain objects, with the
     * discards the broker reported after the last of them (QUEUE-6); a
     * result with no messages and `droppedAfter > 0` came early, just to
     * report them. Resolves `{ messages: [], droppedAfter: 0 }` on timeout
     * and `null` once the subscription has ended.
     */
    nextBatch(max: number, timeoutMs?: number | null): Promise<{ messages: Array<{ topic: string, payload: Uint8Array, headers: Array<[string, Uint8Array]>, id: bigint, timestampMs: number, deliveryCount: number, deliveryId: bigint, droppedBefore: number }>, droppedAfter: number } | null>;
    /**
     * Nak (`kind` 1, redelivered after `delayMs`), term (2, moved to the
     * dead-letter topic) or mark in progress (3, its ack timeout restarts)
     * the message with this delivery id; resolves once queued. One export
     * for the three keeps the .wasm small; `index.js` names them.
     */
    settle(deliveryId: bigint, kind: number, delayMs: number): Promise<void>;
    /**
     * Stop the subscription and wait for the broker's confirm; buffered
     * messages are discarded. A second call does nothing.
     */
    unsubscribe(): Promise<void>;
    /**
     * How many messages the broker has reported discarded for this
     * subscription so far.
     */
    readonly dropped: number;
    readonly pattern: string;
}

/**
 * Connect to the first of the brokers' WebSocket listeners
 * (`ws://host:port`) that answers, tried in order; resolves once the
 * handshake is done. `webSocket` replaces the host's global WebSocket
 * class (Node 20 has none).
 */
export function connect(addr: string[], apiKey: string | null | undefined, name: string | null | undefined, reconnect: boolean, connectTimeoutMs?: number | null, requestTimeoutMs?: number | null, subscriptionCapacity?: number | null, webSocket?: Function | null): Promise<NativeClient>;

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

export interface InitOutput {
    readonly memory: WebAssembly.Memory;
    readonly __wbg_nativeclient_free: (a: number, b: number) => void;
    readonly __wbg_nativesubscription_free: (a: number, b: number) => void;
    readonly connect: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number, i: number, j: number, k: number) => any;
    readonly nativeclient_close: (a: number) => any;
    readonly nativeclient_flush: (a: number) => any;
    readonly nativeclient_maxMessageSize: (a: number) => number;
    readonly nativeclient_onEvent: (a: number, b: any) => void;
    readonly nativeclient_publish: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: any) => any;
    readonly nativeclient_status: (a: number) => [number, number];
    readonly nativeclient_subscribe: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number, i: number, j: number, k: number) => any;
    readonly nativesubscription_ack: (a: number, b: bigint) => any;
    readonly nativesubscription_detach: (a: number) => any;
    readonly nativesubscription_dropped: (a: number) => number;
    readonly nativesubscription_nextBatch: (a: number, b: number, c: number) => any;
    readonly nativesubscription_pattern: (a: number) => [number, number];
    readonly nativesubscription_settle: (a: number, b: bigint, c: number, d: number) => any;
    readonly nativesubscription_unsubscribe: (a: number) => any;
    readonly wasm_bindgen__convert__closures_____invoke__h07c32a586e33fbdd: (a: number, b: number, c: any, d: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__hc06105ba2143ae46: (a: number, b: number, c: any) => [number, number];
    readonly wasm_bindgen__convert__closures_____invoke__h6673f823b3376884: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h6673f823b3376884_18: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h6673f823b3376884_19: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h026402313bfb9043: (a: number, b: number) => void;
    readonly __wbindgen_malloc: (a: number, b: number) => number;
    readonly __wbindgen_realloc: (a: number, b: number, c: number, d: number) => number;
    readonly __wbindgen_free: (a: number, b: number, c: number) => void;
    readonly __wbindgen_exn_store: (a: number) => void;
    readonly __externref_table_alloc: () => number;
    readonly __wbindgen_externrefs: WebAssembly.Table;
    readonly __wbindgen_destroy_closure: (a: number, b: number) => void;
    readonly __externref_drop_slice: (a: number, b: number) => void;
    readonly __externref_table_dealloc: (a: number) => void;
    readonly __wbindgen_start: () => void;
}

export type SyncInitInput = BufferSource | WebAssembly.Module;

/**
 * Instantiates the given `module`, which can either be bytes or
 * a precompiled `WebAssembly.Module`.
 *
 * @param {{ module: SyncInitInput }} module - Passing `SyncInitInput` directly is deprecated.
 *
 * @returns {InitOutput}
 */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

/**
 * If `module_or_path` is {RequestInfo} or {URL}, makes a request and
 * for everything else, calls `WebAssembly.instantiate` directly.
 *
 * @param {{ module_or_path: InitInput | Promise<InitInput> }} module_or_path - Passing `InitInput` directly is deprecated.
 *
 * @returns {Promise<InitOutput>}
 */
export default function __wbg_init (module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>): Promise<InitOutput>;
