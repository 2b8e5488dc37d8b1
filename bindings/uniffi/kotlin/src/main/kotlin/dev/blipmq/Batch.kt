package dev.blipmq

import com.sun.jna.Native
import com.sun.jna.Pointer
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext

/** Where a [PublishBatcher] hands its packed messages: the native client. */
internal interface BatchSink {
    /**
     * Queue the [len] packed bytes at native [address] now, reading them
     * before it returns; false when the native queue is full, and then
     * they are kept for [publishKept], which is called next.
     */
    fun tryPublishPacked(address: Long, len: Int): Boolean

    /** Queue what [tryPublishPacked] kept, waiting for room. */
    suspend fun publishKept()
}

/**
 * QoS 0 publishes packed in a bounded buffer, handed to the native client
 * many at a time: a call through JNA costs far more than packing a message,
 * so one call per batch instead of one per message is what makes
 * publishing fast (bindings/uniffi/src/batch.rs reads the packing).
 *
 * Call order is wire order: everything that sends on the client's own
 * (a QoS 1 publish, a QoS 0 one that is not buffered, flush, subscribe,
 * close) first hands over what is buffered, under [sendLock], which every
 * hand-over holds. A buffered publish does not wait for a batch to fill:
 * the first message into an empty buffer starts a hand-over on [scope],
 * which takes whatever has been buffered by the time it runs; publishes
 * made meanwhile make the next batch. When the buffer is full the publisher
 * hands it over itself, suspending until the native client has room: each
 * of the two buffers (one packed while the other is read) stays within
 * [capacity].
 *
 * Only messages whose errors are already ruled out are buffered: a topic
 * the native client has accepted before ([remember]), a payload within the
 * broker's limit, no headers, a client not closed. Anything else goes
 * through the native client directly, which raises the exact error. The one
 * failure a hand-over can still meet (the client closed under it, or a
 * limit lowered by a reconnect) is raised by the next publish or flush.
 */
internal class PublishBatcher(
    private val sink: BatchSink,
    private val scope: CoroutineScope,
    private val capacity: Int = CAPACITY,
) {
    /** Held by every hand-over to the native client, in call order. */
    val sendLock = Mutex()

    /** Guards the fields below; held only to pack or take a batch. */
    private val lock = Any()

    /**
     * Where publishes are packed, in native memory: the native client reads
     * it in place. Two, swapped at each hand-over, so that publishers pack
     * into one while the other is read; made at the first buffered publish.
     */
    private var buffer: PackBuffer? = null
    private var spare: PackBuffer? = null
    private var length = 0
    private var handOverScheduled = false
    private var sealed = false

    /** Topics the native client has accepted, with their UTF-8 bytes. */
    private val topics = HashMap<String, ByteArray>()

    @Volatile private var failure: BlipMQException? = null

    /** Bytes buffered now (for tests). */
    internal val buffered: Int get() = synchronized(lock) { length }

    private enum class Offer {
        /** Buffered: it will be handed over, in order. */
        BUFFERED,

        /** The buffer is full: hand it over and offer again. */
        FULL,

        /** Not for the buffer: publish it directly, after [handOver]. */
        DIRECT,
    }

    /**
     * Buffer a QoS 0 message, suspending while the buffer is full until it
     * has been handed over: true once buffered; false when it is not for
     * the buffer, and the caller publishes it directly.
     */
    suspend fun publish(topic: String, payload: ByteArray, ttlMs: Int): Boolean {
        while (true) {
            when (offer(topic, payload, ttlMs)) {
                Offer.BUFFERED -> return true
                Offer.FULL -> handOverNow()
                Offer.DIRECT -> return false
            }
        }
    }

    /** Buffer a QoS 0 message if it can be. */
    private fun offer(topic: String, payload: ByteArray, ttlMs: Int): Offer {
        val schedule: Boolean
        synchronized(lock) {
            if (sealed) return Offer.DIRECT
            val topicBytes = topics[topic] ?: return Offer.DIRECT
            val size = ENTRY_OVERHEAD + topicBytes.size + payload.size
            if (size > capacity) return Offer.DIRECT
            if (length + size > capacity) return Offer.FULL
            val bytes = (buffer ?: PackBuffer(capacity).also { buffer = it }).bytes
            bytes.putInt(ttlMs).putShort(topicBytes.size.toShort()).put(topicBytes)
            bytes.putInt(payload.size).put(payload)
            length += size
            schedule = !handOverScheduled
            handOverScheduled = true
        }
        if (schedule) scope.launch { handOverNow() }
        return Offer.BUFFERED
    }

    /** [topic] was published without error: later messages to it may be buffered. */
    fun remember(topic: String) {
        val bytes = topic.encodeToByteArray()
        if (bytes.size > 0xFFFF) return
        synchronized(lock) {
            if (topics.size >= MAX_TOPICS && topic !in topics) topics.clear()
            topics[topic] = bytes
        }
    }

    /** Hand over what is buffered, waiting for the hand-overs before. */
    suspend fun handOverNow(): Unit = sendLock.withLock { handOver() }

    /**
     * Hand what is buffered to the native client, waiting for room there;
     * the caller holds [sendLock]. Not cancellable once it has taken the
     * batch: the messages in it were published by calls that have returned.
     */
    suspend fun handOver() {
        val full: PackBuffer
        val packed: Int
        synchronized(lock) {
            handOverScheduled = false
            if (length == 0) return
            full = buffer!!
            packed = length
            buffer = spare
            spare = null
            length = 0
        }
        try {
            val queued = sink.tryPublishPacked(full.address, packed)
            // The bytes have been read: the buffer can take publishes again.
            full.bytes.clear()
            synchronized(lock) { spare = full }
            if (!queued) withContext(NonCancellable) { sink.publishKept() }
        } catch (e: ClientClosedException) {
            seal()
            failure = e
        } catch (e: BlipMQException) {
            failure = e
        } finally {
            synchronized(lock) { if (spare == null) spare = full.also { it.bytes.clear() } }
        }
    }

    /** Buffer nothing more: every later publish goes directly (the client is closing). */
    fun seal(): Unit = synchronized(lock) { sealed = true }

    /** The error a hand-over met, once: raised by the next publish or flush. */
    fun takeFailure(): BlipMQException? {
        val failed = failure ?: return null
        failure = null
        return failed
    }

    /** A direct buffer and its native address. */
    private class PackBuffer(capacity: Int) {
        val bytes: ByteBuffer = ByteBuffer.allocateDirect(capacity).order(ByteOrder.LITTLE_ENDIAN)
        val address: Long = Pointer.nativeValue(Native.getDirectBufferPointer(bytes))
    }

    companion object {
        /**
         * Bytes buffered at most: thousands of small messages per hand-over,
         * a small fraction of the native queue's own bound (4 MiB).
         */
        const val CAPACITY: Int = 256 * 1024

        /** ttl, topic length, payload length. */
        const val ENTRY_OVERHEAD: Int = 4 + 2 + 4

        /** Topics remembered at most; past that the memory starts again. */
        const val MAX_TOPICS: Int = 1024
    }
}

