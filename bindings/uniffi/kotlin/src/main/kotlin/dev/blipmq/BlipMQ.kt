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
     * TLS failure is a [ConnectFailedException] (600) saying why. [addr] may
     * list several addresses separated by commas (see the overload taking a
     * list).
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
    ): Client = connect(listOf(addr), apiKey, name, reconnect, connectTimeout, requestTimeout, subscriptionCapacity, tls)

    /**
     * Connect to the first of several brokers that answers: [addresses] are
     * tried in order, and when none answers the [ConnectFailedException]
     * names each one's failure. After a lost connection the client tries
     * them in turn again, from the one it was connected to, after a random
     * wait up to its backoff (so that many clients do not return at once).
     * The other parameters are those of the overload taking one address.
     */
    public suspend fun connect(
        addresses: List<String>,
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
        return Client(native { dev.blipmq.ffi.connect(addresses, options) })
    }
}
