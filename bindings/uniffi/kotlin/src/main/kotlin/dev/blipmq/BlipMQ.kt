package dev.blipmq

import dev.blipmq.ffi.ConnectOptions
import kotlin.time.Duration

/**
 * The entry point of the Kotlin SDK for BlipMQ:
 *
 * ```
 * BlipMQ.connect("127.0.0.1:7878").use { client ->
 *     val orders = client.subscribe("orders.*")
 *     client.publish("orders.created", "order #1")
 *     orders.take(1).collect { println("${it.topic}: ${it.payloadText()}") }
 * }
 * ```
 *
 * The work happens in the Rust client crate (`client-rs`), reached through
 * uniffi and JNA; it runs on its own threads, so no call blocks a coroutine
 * dispatcher while it waits.
 */
public object BlipMQ {
    /** This SDK's version. */
    public const val VERSION: String = "0.1.0"

    /**
     * Connect to the broker at [addr] (`host:port`); resumes once the
     * handshake is done. [apiKey] is required when the broker has API keys
     * configured. [connectTimeout] (default 5 s) limits reaching the broker
     * and the handshake, [requestTimeout] (default 10 s) the wait for an
     * answer (subscribe, QoS 1 confirm, flush). With [reconnect] (the default) a lost connection is
     * re-established with backoff and subscriptions are renewed.
     * [subscriptionCapacity] is how many messages a subscription buffers
     * before the client stops reading from the broker. [tls] (or a
     * `tls://host:port` address, with the system's roots) speaks TLS; every
     * TLS failure is a [ConnectFailedException] (600) saying why.
     */
    public suspend fun connect(
        addr: String,
        apiKey: String? = null,
        name: String? = null,
        reconnect: Boolean = true,
        connectTimeout: Duration? = null,
        requestTimeout: Duration? = null,
        subscriptionCapacity: Int? = null,
        tls: Tls? = null,
    ): Client {
        if (subscriptionCapacity != null && subscriptionCapacity < 1) {
            throw invalidArgument("subscriptionCapacity must be at least 1, not $subscriptionCapacity")
        }
        val options = ConnectOptions(
            apiKey = apiKey,
            name = name,
            reconnect = reconnect,
            connectTimeoutMs = connectTimeout?.toMillisOrNull("connectTimeout"),
            requestTimeoutMs = requestTimeout?.toMillisOrNull("requestTimeout"),
            subscriptionCapacity = subscriptionCapacity?.toUInt(),
            tls = tls?.toNative(),
        )
        return Client(native { dev.blipmq.ffi.connect(addr, options) })
    }
}
