package dev.blipmq

import java.util.logging.Logger

// Messages the broker discarded for a subscription (its queue was full
// under a dropping overflow policy, they outlived their TTL, or the broker's
// memory budget ran out): how an application hears of them. No discard is
// silent: a subscription without an onDrop logs a warning instead.

/**
 * What [Subscription.events] carries: the subscription's messages and, in
 * order among them, the gaps the broker left by discarding messages.
 */
public sealed class SubscriptionEvent {
    /** The next message (its [Message.droppedBefore] was reported as a [Dropped] just before it). */
    public class Received(public val message: Message) : SubscriptionEvent() {
        override fun toString(): String = "Received($message)"
    }

    /** [count] messages were discarded here, between the message before and the one after. */
    public data class Dropped(val count: Long) : SubscriptionEvent()
}

/** Where the SDK logs; held here so that a handler the application adds stays attached. */
private val log: Logger = Logger.getLogger("dev.blipmq")

/** The `onDrop` of a subscription made without one: a warning per gap. */
internal fun warnOfDrops(pattern: String): (Long) -> Unit = { count ->
    log.warning(
        "the broker discarded $count message(s) for subscription '$pattern' (full queue, expired TTL " +
            "or memory budget); pass onDrop to Client.subscribe to handle discards",
    )
}
