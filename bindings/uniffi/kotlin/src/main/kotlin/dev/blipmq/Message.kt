package dev.blipmq

import com.sun.jna.Pointer
import dev.blipmq.ffi.NativeMessage
import dev.blipmq.ffi.PackedMessages
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.time.Duration
import kotlin.time.DurationUnit

/** One message header: a text key and a byte value. Compared by content. */
public class Header(public val key: String, public val value: ByteArray) {
    /** A header with a UTF-8 text value. */
    public constructor(key: String, value: String) : this(key, value.encodeToByteArray())

    /** The value as UTF-8 text. */
    public val text: String get() = value.decodeToString()

    override fun equals(other: Any?): Boolean =
        other is Header && key == other.key && value.contentEquals(other.value)

    override fun hashCode(): Int = 31 * key.hashCode() + value.contentHashCode()

    override fun toString(): String = "Header($key=${value.decodeToString()})"
}

/** A message delivered to a [Subscription]. */
public class Message internal constructor(
    /** The topic it was published to (not the pattern that matched). */
    public val topic: String,
    /** The payload, byte for byte as published. */
    public val payload: ByteArray,
    /** The publisher's headers, in order (keys may repeat); empty when it sent none. */
    public val headers: List<Header>,
    /** The broker-assigned id (increasing over a broker run). */
    public val id: ULong,
    /** When the broker accepted the message, in ms since the Unix epoch. */
    public val timestampMs: Long,
    /** 1 on first delivery, higher when the broker redelivers. */
    public val deliveryCount: Int,
    /** What an ack names: non-zero for a durable (QoS 1) delivery, 0 otherwise. */
    public val deliveryId: ULong,
    /**
     * How many messages the broker discarded for the subscription just
     * before this one (full queue, expired TTL, memory budget): 0 when none
     * were. The subscription's `onDrop` (or its [Subscription.events], as a
     * Dropped) has been told of them by the time this message is emitted or
     * returned.
     */
    public val droppedBefore: Long,
    /** Only a QoS 1 delivery has one: there is nothing to ack at QoS 0. */
    private val handle: NativeMessage?,
) {
    /** The payload as UTF-8 text. */
    public fun payloadText(): String = payload.decodeToString()

    /** The first value of header [key], or null. */
    public fun header(key: String): ByteArray? = headers.firstOrNull { it.key == key }?.value

    /**
     * Acknowledge the message. Returns at once for a QoS 0 delivery, which
     * needs no ack; for a durable (QoS 1) one the ack is queued to the broker
     * in order with the client's other frames.
     */
    public suspend fun ack() {
        val handle = handle ?: return
        native { handle.ack() }
    }

    /**
     * Negative acknowledgement: processing failed, so the broker delivers
     * the message again, no sooner than [delay] from now (at once when null
     * or zero). The redelivery has a higher [deliveryCount] and counts
     * toward the subscription's `maxDeliveries`. A negative [delay] throws
     * [InvalidArgumentException]. Returns at once for a QoS 0 delivery.
     */
    public suspend fun nak(delay: Duration? = null) {
        val handle = handle ?: return
        val delayMs = delay?.toDouble(DurationUnit.MILLISECONDS) ?: 0.0
        native { handle.nak(delayMs) }
    }

    /**
     * The message can never be processed: the broker moves it to the
     * dead-letter topic now (header `blipmq-dead-letter-reason: terminated`)
     * and never delivers it here again. Returns at once for QoS 0.
     */
    public suspend fun term() {
        val handle = handle ?: return
        native { handle.term() }
    }

    /**
     * Still working: the broker restarts this delivery's ack timeout, so a
     * job longer than it is not sent to another consumer. Call it more often
     * than the ack timeout, as often as needed. Returns at once for QoS 0.
     */
    public suspend fun inProgress() {
        val handle = handle ?: return
        native { handle.inProgress() }
    }

    override fun toString(): String = "Message(topic=$topic, id=$id, ${payload.size} bytes)"
}

/**
 * Reads the messages the native subscription packed into its own memory
 * (bindings/uniffi/src/message.rs, `PackedMessages`), in place. Keeps the
 * last topic it read, so that a stream on one topic decodes each topic
 * name once.
 */
internal class MessageReader {
    private var lastTopicBytes = ByteArray(0)
    private var lastTopic = ""
    private var scratch = ByteArray(64)
    private var batch: PackedMessages? = null
    private var buf: ByteBuffer = EMPTY
    private var left = 0
    private var handle = 0

    /** Read [batch] next, with [hasNext] and [next]; frees it once read. */
    fun start(batch: PackedMessages) {
        this.batch = batch
        left = batch.count.toInt()
        handle = 0
        buf = if (batch.len == 0u) EMPTY else {
            Pointer(batch.address.toLong()).getByteBuffer(0, batch.len.toLong()).order(ByteOrder.LITTLE_ENDIAN)
        }
        if (left == 0) done()
    }

    fun hasNext(): Boolean = left > 0

    fun next(): Message {
        val batch = checkNotNull(batch)
        check(left > 0)
        val topic = topic()
        val payload = bytes(buf.getInt())
        val id = buf.getLong().toULong()
        val timestampMs = buf.getLong()
        val deliveryCount = buf.getInt()
        val deliveryId = buf.getLong().toULong()
        val droppedBefore = buf.getLong()
        val headerCount = buf.getShort().toInt() and 0xFFFF
        val headers = if (headerCount == 0) emptyList() else List(headerCount) {
            val key = bytes(buf.getShort().toInt() and 0xFFFF).decodeToString()
            Header(key, bytes(buf.getInt()))
        }
        val ack = if (deliveryId != 0uL) batch.handles[handle++] else null
        if (--left == 0) done()
        return Message(topic, payload, headers, id, timestampMs, deliveryCount, deliveryId, droppedBefore, ack)
    }

    /** Free the native bytes now rather than at the next collection. */
    private fun done() {
        buf = EMPTY
        batch?.bytes?.destroy()
        batch = null
    }

    private fun topic(): String {
        val length = buf.getShort().toInt() and 0xFFFF
        if (scratch.size < length) scratch = ByteArray(maxOf(length, scratch.size * 2))
        buf.get(scratch, 0, length)
        if (!java.util.Arrays.equals(scratch, 0, length, lastTopicBytes, 0, lastTopicBytes.size)) {
            lastTopicBytes = scratch.copyOf(length)
            lastTopic = lastTopicBytes.decodeToString()
        }
        return lastTopic
    }

    private fun bytes(length: Int): ByteArray = ByteArray(length).also { buf.get(it) }

    private companion object {
        val EMPTY: ByteBuffer = ByteBuffer.allocate(0)
    }
}
