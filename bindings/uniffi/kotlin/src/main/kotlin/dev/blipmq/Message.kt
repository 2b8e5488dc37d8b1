package dev.blipmq

import dev.blipmq.ffi.NativeMessage
import dev.blipmq.ffi.ReceivedMessage

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
public class Message internal constructor(received: ReceivedMessage) {
    /** The topic it was published to (not the pattern that matched). */
    public val topic: String = received.topic

    /** The payload, byte for byte as published. */
    public val payload: ByteArray = received.payload

    /** The publisher's headers, in order (keys may repeat); empty when it sent none. */
    public val headers: List<Header> = received.headers.map { Header(it.key, it.value) }

    /** The broker-assigned id (increasing over a broker run). */
    public val id: ULong = received.id

    /** When the broker accepted the message, in ms since the Unix epoch. */
    public val timestampMs: Long = received.timestampMs.toLong()

    /** 1 on first delivery, higher when the broker redelivers. */
    public val deliveryCount: Int = received.deliveryCount.toInt()

    /** What an ack names: non-zero for a durable (QoS 1) delivery, 0 otherwise. */
    public val deliveryId: ULong = received.deliveryId

    /**
     * How many messages the broker discarded for the subscription just
     * before this one (full queue, expired TTL, memory budget): 0 when none
     * were. The subscription's `onDrop` (or its [Subscription.events], as a
     * Dropped) has been told of them by the time this message is emitted or
     * returned.
     */
    public val droppedBefore: Long = received.droppedBefore.toLong()

    /** Only a QoS 1 delivery has one: there is nothing to ack at QoS 0. */
    private val handle: NativeMessage? = received.handle

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

    override fun toString(): String = "Message(topic=$topic, id=$id, ${payload.size} bytes)"
}
