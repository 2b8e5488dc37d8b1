package dev.blipmq

import dev.blipmq.ffi.NativeSubscription
import java.io.Closeable
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.time.Duration
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
 */
public class Subscription internal constructor(private val native: NativeSubscription) : Flow<Message>, Closeable {
    /** The topic or pattern this subscription was made with. */
    public val pattern: String = native.pattern()

    private val collected = AtomicBoolean(false)

    private val messages: Flow<Message> = flow {
        check(collected.compareAndSet(false, true)) { "a Subscription can be collected only once" }
        try {
            while (true) {
                val batch = native.nextBatch(BATCH, null) ?: break
                for (message in batch) emit(Message(message))
            }
        } finally {
            close()
        }
    }

    override suspend fun collect(collector: FlowCollector<Message>): Unit = messages.collect(collector)

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
     */
    public suspend fun nextBatch(max: Int, timeout: Duration = Duration.INFINITE): List<Message>? {
        if (max < 1) throw invalidArgument("max must be at least 1, not $max")
        return native.nextBatch(max.toUInt(), timeout.toMillisOrNull("timeout"))?.map(::Message)
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
