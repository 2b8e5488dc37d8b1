package dev.blipmq

import dev.blipmq.ffi.NativeSubscription
import dev.blipmq.ffi.PackedMessages
import java.io.Closeable
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong
import kotlin.time.Duration
import kotlin.time.TimeSource
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.FlowCollector
import kotlinx.coroutines.flow.flow

/** Messages taken from the native subscription per crossing. A batch is only
 * what is already buffered, so a slow stream still gets each message as soon
 * as it arrives, and a fast one crosses the boundary once per batch. */
private const val BATCH: UInt = 256u

/**
 * The messages matching a pattern, in order, as a [Flow] that can be
 * collected once. When the collector stops (it is cancelled, throws, or a
 * `take(n)` is satisfied) the subscription ends: a plain one is
 * unsubscribed, a durable one is detached and keeps its unacked messages for
 * the next subscribe with its name. The flow completes when the client is
 * closed.
 *
 * [next] pulls messages one at a time instead; [unsubscribe] ends it and
 * deletes a durable subscription; [close] detaches (what `use {}` does).
 *
 * Messages the broker discards for the subscription (full queue, expired
 * TTL, memory budget) are reported, each gap once, to the `onDrop` given to
 * [Client.subscribe] (a logged warning without one), in order with the
 * messages: just before the message after the gap is emitted or returned,
 * or, when no message has followed yet, as soon as the broker reports it
 * while a receive waits (which then waits on). [dropped] is the running
 * total; [events] carries the gaps in the flow instead.
 */
public class Subscription internal constructor(
    private val native: NativeSubscription,
    onDrop: ((Long) -> Unit)?,
) : Flow<Message>, Closeable {
    /** The topic or pattern this subscription was made with. */
    public val pattern: String = native.pattern()

    /** Told of each gap: the `onDrop` given, or a logged warning. */
    private val reportGap: (Long) -> Unit = onDrop ?: warnOfDrops(pattern)

    private val collected = AtomicBoolean(false)

    /**
     * A gap after the last message a pull ([nextBatch]) returned, with no
     * message after it yet. The caller has not seen those messages when the
     * gap is found, so it is told at the start of its next receive, in order.
     */
    private val pendingGap = AtomicLong(0)

    /**
     * How many messages the broker has reported discarded for this
     * subscription so far; counted as each report arrives, so it may run
     * ahead of what `onDrop` has been told while messages before a gap are
     * still buffered.
     */
    public val dropped: Long get() = native.dropped().toLong()

    private val messages: Flow<Message> = flow {
        receiveAll(onMessage = { emit(it) }, onGap = { reportGap(it) })
    }

    override suspend fun collect(collector: FlowCollector<Message>): Unit = messages.collect(collector)

    /**
     * The messages with the gaps among them, as a [Flow] of
     * [SubscriptionEvent]s: each gap is a [SubscriptionEvent.Dropped] just
     * before the message after it (or as soon as it is reported, when none
     * follows yet), and is not passed to `onDrop` as well. The subscription
     * is collected once either way: as a `Flow<Message>` or through this,
     * with the same ending.
     */
    public fun events(): Flow<SubscriptionEvent> = flow {
        receiveAll(
            onMessage = { emit(SubscriptionEvent.Received(it)) },
            onGap = { emit(SubscriptionEvent.Dropped(it)) },
        )
    }

    /**
     * The one collection of this subscription: every message to [onMessage]
     * and every gap to [onGap], in order, until it ends; then it is closed.
     * Inline, so that a message without a gap costs one comparison more.
     */
    private suspend inline fun receiveAll(
        crossinline onMessage: suspend (Message) -> Unit,
        crossinline onGap: suspend (Long) -> Unit,
    ) {
        check(collected.compareAndSet(false, true)) { "a Subscription can be collected only once" }
        try {
            val pending = pendingGap.getAndSet(0)
            if (pending != 0L) onGap(pending)
            val reader = MessageReader()
            while (true) {
                // What is buffered already, in one plain call; the waiting
                // call (several crossings) only when nothing is.
                var batch = native.tryNextPacked(BATCH)
                if (batch.count == 0u) {
                    batch.bytes.destroy()
                    batch = native.nextPacked(BATCH, null) ?: break
                }
                reader.start(batch)
                while (reader.hasNext()) {
                    val message = reader.next()
                    if (message.droppedBefore != 0L) onGap(message.droppedBefore)
                    onMessage(message)
                }
                // The collector has handled every message before this gap.
                if (batch.droppedAfter != 0uL) onGap(batch.droppedAfter.toLong())
            }
        } finally {
            close()
        }
    }

    /**
     * The next message, waiting at most [timeout]; null when the time passes
     * or once the subscription has ended. Cancelling the call loses no
     * message.
     */
    public suspend fun next(timeout: Duration = Duration.INFINITE): Message? =
        nextBatch(1, timeout)?.firstOrNull()

    /**
     * Wait for one message (at most [timeout]), then take up to [max] in all
     * from what is already buffered: an empty list when the time passes, null
     * once the subscription has ended.
     *
     * The gaps before the returned messages are passed to `onDrop`, in
     * order, before it returns; a gap after the last of them with no message
     * after it yet, at the start of the next receive; one the broker reports
     * while this call waits, at once, and the wait goes on (a gap is not a
     * timeout). An `onDrop` may cancel the calling coroutine to stop the
     * wait: the call then throws without having taken a message.
     */
    public suspend fun nextBatch(max: Int, timeout: Duration = Duration.INFINITE): List<Message>? {
        if (max < 1) throw invalidArgument("max must be at least 1, not $max")
        var timeoutMs = timeout.toMillisOrNull("timeout")
        val deadline = timeoutMs?.let { TimeSource.Monotonic.markNow() + timeout }
        tellGap(pendingGap.getAndSet(0))
        val ready = native.tryNextPacked(max.toUInt())
        if (ready.count != 0u) return messages(ready)
        ready.bytes.destroy()
        while (true) {
            val batch = native.nextPacked(max.toUInt(), timeoutMs) ?: return null
            if (batch.count == 0u) {
                batch.bytes.destroy()
                // Either the time passed, or a gap with no message after it.
                if (batch.droppedAfter == 0uL) return emptyList()
                tellGap(batch.droppedAfter.toLong())
                if (deadline != null) {
                    timeoutMs = (-deadline.elapsedNow()).inWholeMilliseconds.coerceAtLeast(0).toUInt()
                }
                continue
            }
            pendingGap.addAndGet(batch.droppedAfter.toLong())
            return messages(batch)
        }
    }

    /** The messages of [batch], each gap before one passed to `onDrop`. */
    private fun messages(batch: PackedMessages): List<Message> {
        val reader = MessageReader().apply { start(batch) }
        return List(batch.count.toInt()) {
            reader.next().also { if (it.droppedBefore != 0L) reportGap(it.droppedBefore) }
        }
    }

    /** Pass a gap to `onDrop` ahead of a wait, which it may have cancelled. */
    private suspend fun tellGap(count: Long) {
        if (count == 0L) return
        reportGap(count)
        // A cancelled native call can still take messages before it sees
        // the cancellation (and then they are lost): stop before it.
        currentCoroutineContext().ensureActive()
    }

    /**
     * Stop the subscription and wait for the broker to confirm. Buffered
     * messages are discarded, and a durable subscription is deleted with
     * every message it still held (to keep it, [close] instead).
     */
    public suspend fun unsubscribe(): Unit = native { native.unsubscribe() }

    /**
     * Stop receiving without deleting anything, without waiting: a plain
     * subscription ends, a durable one keeps its unacked messages for the
     * next subscribe with its name. A collector or a pending [next] ends.
     */
    override fun close(): Unit = native.detach()

    override fun toString(): String = "Subscription($pattern)"
}
