package dev.blipmq

import java.nio.ByteBuffer
import java.util.logging.Handler
import java.util.logging.Level
import java.util.logging.LogRecord
import java.util.logging.Logger
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.ValueSource

/** Messages flooded at a stalled consumer, each numbered in its first four bytes. */
private const val FLOOD = 1500

/** 64 KiB each, about 98 MB in all: more than the socket buffers between broker and consumer hold. */
private const val SIZE = 64 * 1024

/** What a consumer saw, in the order it saw it. */
private sealed interface Seen {
    /** Message number [index], which said [droppedBefore]. */
    data class Got(val index: Int, val droppedBefore: Long) : Seen

    /** A gap of [count] the SDK reported (to onDrop, as an event or as a warning). */
    data class Gap(val count: Long) : Seen

    /** Messages one nextBatch returned: the gaps among them are reported before it returns. */
    data class Batch(val messages: List<Got>) : Seen
}

/**
 * QUEUE-6 from a Kotlin application's side: a consumer that stops reading
 * while a producer floods it loses messages to the broker's bounded queue,
 * and is told of every one of them, once, in order with what it receives.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class DropsTest {
    /** One broker per overflow policy, with a queue of 4 and one delivery in flight at a time. */
    private val brokers = HashMap<String, Broker>()

    private fun broker(policy: String): Broker = brokers.getOrPut(policy) {
        Broker(
            mapOf(
                "BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY" to "4",
                "BLIPMQ_QUEUES_OVERFLOW_POLICY" to policy,
                "BLIPMQ_DELIVERY_MAX_BATCH" to "1",
                "BLIPMQ_DELIVERY_MAX_BATCH_BYTES" to "1",
            ),
        )
    }

    @AfterAll
    fun stopBrokers() = brokers.values.forEach { it.close() }

    @ParameterizedTest
    @ValueSource(strings = ["drop_new", "drop_oldest"])
    fun `a stalled consumer pulling with next is told of every discard, each just before the message after it`(
        policy: String,
    ): Unit = runBlocking {
        val broker = broker(policy)
        val seen = mutableListOf<Seen>()
        BlipMQ.connect(broker.addr, subscriptionCapacity = 1).use { consumer ->
            val flood = consumer.subscribe("flood.next", onDrop = { seen += Seen.Gap(it) })
            flood(broker, "flood.next")
            // Read until quiet: a gap with no message after it is reported
            // while next waits, which then waits on and times out.
            while (true) {
                val message = flood.next(2.seconds) ?: break
                seen += Seen.Got(index(message), message.droppedBefore)
            }
            checkAccounted(seen, flood.dropped)
        }
    }

    @ParameterizedTest
    @ValueSource(strings = ["drop_new", "drop_oldest"])
    fun `collecting a stalled subscription reports each gap just before the message after it`(
        policy: String,
    ): Unit = runBlocking {
        val broker = broker(policy)
        val seen = mutableListOf<Seen>()
        val accounted = CompletableDeferred<Unit>()
        // Every message is received or reported: none follows a last gap.
        fun record(event: Seen) {
            seen += event
            if (seen.sumOf { if (it is Seen.Gap) it.count else 1L } >= FLOOD) accounted.complete(Unit)
        }
        BlipMQ.connect(broker.addr, subscriptionCapacity = 1).use { consumer ->
            val flood = consumer.subscribe("flood.flow", onDrop = { record(Seen.Gap(it)) })
            flood(broker, "flood.flow")
            val collector = launch { flood.collect { record(Seen.Got(index(it), it.droppedBefore)) } }
            withTimeout(60.seconds) { accounted.await() }
            collector.cancelAndJoin()
            checkAccounted(seen, flood.dropped)
        }
    }

    @Test
    fun `events carry the gaps as Dropped among the messages, instead of onDrop`(): Unit = runBlocking {
        val broker = broker("drop_oldest")
        val seen = mutableListOf<Seen>()
        val accounted = CompletableDeferred<Unit>()
        BlipMQ.connect(broker.addr, subscriptionCapacity = 1).use { consumer ->
            val flood = consumer.subscribe("flood.events", onDrop = { error("onDrop called with $it") })
            flood(broker, "flood.events")
            val collector = launch(start = CoroutineStart.UNDISPATCHED) {
                flood.events().collect { event ->
                    seen += when (event) {
                        is SubscriptionEvent.Received -> Seen.Got(index(event.message), event.message.droppedBefore)
                        is SubscriptionEvent.Dropped -> Seen.Gap(event.count)
                    }
                    if (seen.sumOf { if (it is Seen.Gap) it.count else 1L } >= FLOOD) accounted.complete(Unit)
                }
            }
            withTimeout(60.seconds) { accounted.await() }
            // Collected once: the subscription's messages cannot be collected beside it.
            assertThrows<IllegalStateException> { runBlocking { flood.first() } }
            collector.cancelAndJoin()
            checkAccounted(seen, flood.dropped)
        }
    }

    @Test
    fun `without onDrop each gap is logged as a warning`(): Unit = runBlocking {
        val broker = broker("drop_new")
        val seen = mutableListOf<Seen>()
        val logger = Logger.getLogger("dev.blipmq")
        val warnings = object : Handler() {
            override fun publish(record: LogRecord) {
                if (record.level != Level.WARNING || "'flood.log'" !in record.message) return
                val count = Regex("discarded (\\d+) message").find(record.message)?.groupValues?.get(1)
                seen += Seen.Gap(count?.toLong() ?: error("no count in \"${record.message}\""))
            }

            override fun flush() {}

            override fun close() {}
        }
        logger.addHandler(warnings)
        try {
            BlipMQ.connect(broker.addr, subscriptionCapacity = 1).use { consumer ->
                val flood = consumer.subscribe("flood.log")
                flood(broker, "flood.log")
                while (true) {
                    val batch = flood.nextBatch(16, 2.seconds) ?: break
                    if (batch.isEmpty()) break
                    seen += Seen.Batch(batch.map { Seen.Got(index(it), it.droppedBefore) })
                }
                checkAccounted(seen, flood.dropped)
            }
        } finally {
            logger.removeHandler(warnings)
        }
    }

    /** From a client of its own, publish [FLOOD] numbered messages to [topic] and wait until the broker has them. */
    private suspend fun flood(broker: Broker, topic: String) {
        BlipMQ.connect(broker.addr).use { producer ->
            for (i in 0 until FLOOD) {
                producer.publish(topic, ByteBuffer.allocate(SIZE).putInt(0, i).array())
            }
            producer.flush()
        }
    }

    private fun index(message: Message): Int = ByteBuffer.wrap(message.payload).getInt(0)

    /**
     * Every message of the flood was received or reported dropped, once:
     * the gaps reported between two messages add up to the numbers missing
     * between them (those after the last message to the ones missing at
     * the end), a message's own droppedBefore was reported just before it
     * (before its batch, for a batch), and the subscription's running count
     * is what was reported.
     */
    private fun checkAccounted(seen: List<Seen>, dropped: Long) {
        var previous = -1
        var reportedSince = 0L
        var reported = 0L
        var carried = 0L
        var received = 0
        for ((at, event) in seen.withIndex()) {
            when (event) {
                is Seen.Gap -> {
                    assertTrue(event.count > 0, "a gap of ${event.count}")
                    reportedSince += event.count
                    reported += event.count
                }
                is Seen.Got -> {
                    assertEquals(event.index - previous - 1L, reportedSince, "the gap before message ${event.index}")
                    if (event.droppedBefore > 0) {
                        assertEquals(Seen.Gap(event.droppedBefore), seen.getOrNull(at - 1), "just before ${event.index}")
                    }
                    carried += event.droppedBefore
                    previous = event.index
                    reportedSince = 0
                    received++
                }
                is Seen.Batch -> {
                    val last = event.messages.last().index
                    assertEquals(last - previous - event.messages.size.toLong(), reportedSince, "the gaps up to message $last")
                    for ((before, message) in event.messages.zipWithNext()) {
                        assertEquals(message.index - before.index - 1L, message.droppedBefore, "the gap before ${message.index}")
                    }
                    carried += event.messages.sumOf { it.droppedBefore }
                    previous = last
                    reportedSince = 0
                    received += event.messages.size
                }
            }
        }
        assertEquals(FLOOD - 1L - previous, reportedSince, "the gap after the last message, $previous")
        assertEquals(FLOOD.toLong(), received + reported, "received $received, reported $reported dropped")
        assertTrue(reported > 0, "the stalled consumer lost nothing: the test floods too little")
        assertTrue(carried <= reported, "messages carried $carried drops, $reported were reported")
        assertEquals(reported, dropped, "the subscription's running count")
    }
}
