package dev.blipmq

import dev.blipmq.ffi.NativeClient
import dev.blipmq.ffi.PublishOptions
import dev.blipmq.ffi.SubscribeOptions
import java.io.Closeable
import kotlin.time.Duration
import kotlin.time.DurationUnit
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.sync.withLock

/** Delivery guarantee: [Qos.AT_MOST_ONCE] (the default) or [Qos.AT_LEAST_ONCE]. */
public typealias Qos = dev.blipmq.ffi.Qos

/** Connected, reconnecting (after a lost connection) or closed. */
public typealias ConnectionStatus = dev.blipmq.ffi.ConnectionStatus

/**
 * A connection to a BlipMQ broker, made by [BlipMQ.connect]. Safe to share
 * between coroutines and threads. [close] (or `use {}`) sends what is queued
 * and closes; subscriptions then end and later calls throw
 * [ClientClosedException].
 */
public class Client internal constructor(private val native: NativeClient) : Closeable {
    /** Runs the hand-overs of buffered publishes; cancelled by [close]. */
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)

    private val batcher = PublishBatcher(
        object : BatchSink {
            override fun tryPublishPacked(address: Long, len: Int): Boolean =
                native { native.tryPublishPacked(address.toULong(), len.toUInt()) }

            override suspend fun publishKept(): Unit = native { native.publishKept() }
        },
        scope,
    )

    /** The broker's limit at connect; a larger payload goes to the native client to be judged. */
    private val payloadLimit: Long = native.maxMessageSize().toLong()

    /**
     * Publish [payload] to [topic]. At QoS 0 this returns null once the
     * message is queued (topic, size and headers are checked first); at QoS 1
     * it resumes with the broker's message id once the broker has stored it.
     * [ttl] is how long the message may wait for delivery (zero: the
     * broker's default). Messages go out in call order, whatever their QoS;
     * QoS 1 publishes from concurrent coroutines are in flight together.
     */
    public suspend fun publish(
        topic: String,
        payload: ByteArray,
        qos: Qos = Qos.AT_MOST_ONCE,
        ttl: Duration = Duration.ZERO,
        headers: List<Header> = emptyList(),
    ): ULong? {
        batcher.takeFailure()?.let { throw it }
        val ttlMs = if (ttl == Duration.ZERO) 0u else ttl.toMillisOrNull("ttl") ?: throw invalidArgument("ttl must be finite")
        // Packed into the batcher's buffer, handed over many at a time.
        if (qos == Qos.AT_MOST_ONCE && headers.isEmpty() && payload.size <= payloadLimit &&
            batcher.publish(topic, payload, ttlMs.toInt())
        ) {
            return null
        }
        val options = PublishOptions(
            ttlMs = ttlMs,
            qos = qos,
            headers = headers.map { dev.blipmq.ffi.Header(it.key, it.value) },
        )
        if (qos == Qos.AT_MOST_ONCE) {
            batcher.sendLock.withLock {
                batcher.handOver()
                // One plain call when the outgoing queue has room (the
                // suspending call crosses into the library several times).
                if (!native { native.tryPublish(topic, payload, options) }) native { native.publish(topic, payload, options) }
            }
            batcher.remember(topic)
            return null
        }
        // What is buffered goes first. The call queues the message before it
        // first suspends, and then waits for the confirm: QoS 1 publishes
        // from concurrent coroutines are in flight together.
        batcher.handOverNow()
        return native { native.publish(topic, payload, options) }.also { batcher.remember(topic) }
    }

    /** Publish a UTF-8 text payload; see the other [publish]. */
    public suspend fun publish(
        topic: String,
        payload: String,
        qos: Qos = Qos.AT_MOST_ONCE,
        ttl: Duration = Duration.ZERO,
        headers: List<Header> = emptyList(),
    ): ULong? = publish(topic, payload.encodeToByteArray(), qos, ttl, headers)

    /**
     * Subscribe to a topic or pattern (`*` matches one token, `>` the rest);
     * resumes once the broker has confirmed. With [qos] AT_LEAST_ONCE and a
     * [durable] name the subscription keeps QoS 1 messages until each is
     * acked, across disconnects and broker restarts. Members of a queue
     * [group] share its messages.
     *
     * [onDrop] hears how many messages the broker discarded (full queue,
     * expired TTL, memory budget) at each gap, in order with the messages:
     * just before the message after the gap, or while a receive waits when
     * none follows yet. It runs on the receiving coroutine and should return
     * quickly. Without it each gap is logged as a warning (java.util.logging,
     * logger `dev.blipmq`): no discard goes unnoticed.
     *
     * At QoS 1, [ackTimeout] (10 ms to 1 h) is how long a delivery may go
     * without [Message.ack], [Message.nak], [Message.term] or
     * [Message.inProgress] before the broker sends it again, and
     * [maxDeliveries] (1 to 10000) how often a message is delivered before
     * it goes to the dead-letter topic; null keeps the broker's defaults.
     * Values outside those bounds throw [InvalidArgumentException].
     */
    public suspend fun subscribe(
        pattern: String,
        qos: Qos = Qos.AT_MOST_ONCE,
        durable: String? = null,
        group: String? = null,
        onDrop: ((Long) -> Unit)? = null,
        ackTimeout: Duration? = null,
        maxDeliveries: Int? = null,
    ): Subscription {
        val options = SubscribeOptions(
            qos = qos,
            durable = durable,
            group = group,
            ackTimeoutMs = ackTimeout?.toDouble(DurationUnit.MILLISECONDS),
            // A negative count becomes one the broker refuses, not a wrap-around.
            maxDeliveries = maxDeliveries?.let { if (it < 0) UInt.MAX_VALUE else it.toUInt() },
        )
        // Publishes before it reach the broker before it.
        batcher.handOverNow()
        return Subscription(native { native.subscribe(pattern, options) }, onDrop)
    }

    /** Resumes once the broker has handled everything this client sent before. */
    public suspend fun flush() {
        batcher.handOverNow()
        batcher.takeFailure()?.let { throw it }
        native { native.flush() }
    }

    /** Like [close], suspending instead of blocking the thread. */
    public suspend fun closeAndWait() {
        // Later publishes go to the native client, which refuses them.
        batcher.seal()
        batcher.handOverNow()
        native.shutdown()
        scope.cancel()
    }

    /**
     * Send what is queued, close the connection and wait (briefly, blocking
     * the calling thread) for the client's task to finish. A second call
     * does nothing.
     */
    override fun close(): Unit = runBlocking { closeAndWait() }

    /** The connection's state now. */
    public val status: ConnectionStatus get() = native.status()

    /**
     * The connection's changes from this call on, as a [Flow] that can be
     * collected once and completes after [ClientEvent.Closed]. Events are
     * kept from the call, not from the start of collecting, so none is
     * missed while a collector starts; every call gets every event.
     */
    public fun events(): Flow<ClientEvent> = eventFlow(native.events())

    /** The largest payload the broker accepts (from its handshake). */
    public val maxMessageSize: Long get() = native.maxMessageSize().toLong()

    override fun toString(): String = "Client($status)"
}

/** Milliseconds for the native layer: null for an infinite duration. */
internal fun Duration.toMillisOrNull(name: String): UInt? {
    if (isInfinite()) return null
    if (isNegative()) throw invalidArgument("$name must not be negative, not $this")
    val ms = inWholeMilliseconds
    if (ms > UInt.MAX_VALUE.toLong()) throw invalidArgument("$name of $this is too long")
    return ms.toUInt()
}
