package dev.blipmq

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/**
 * Job-queue controls of a QoS 1 message against a live broker (whose own
 * ack timeout is 30 s): nak with and without a delay, term to the
 * dead-letter topic, inProgress against the subscription's own ackTimeout,
 * maxDeliveries, and bad values.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class JobQueueTest {
    private val broker = Broker()

    @AfterAll
    fun stopBroker() = broker.close()

    @Test
    fun `nak redelivers at once, and after its delay when given`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val jobs = client.subscribe("kt.nak", qos = Qos.AT_LEAST_ONCE, durable = "kt-nak")
            client.publish("kt.nak", "retry me", qos = Qos.AT_LEAST_ONCE)
            val first = jobs.next(5.seconds)!!
            assertEquals(1, first.deliveryCount)
            first.nak()
            val second = jobs.next(5.seconds)!!
            assertEquals(first.deliveryId, second.deliveryId)
            assertEquals(2, second.deliveryCount)
            val naked = TimeSource.Monotonic.markNow()
            second.nak(300.milliseconds)
            assertNull(jobs.next(150.milliseconds))
            val third = jobs.next(5.seconds)!!
            assertTrue(naked.elapsedNow() >= 300.milliseconds, "${naked.elapsedNow()}")
            assertEquals(3, third.deliveryCount)
            third.ack()
            assertNull(jobs.next(200.milliseconds))
            jobs.unsubscribe()
        }
    }

    @Test
    fun `term moves the message to the dead-letter topic`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val dead = client.subscribe("\$dlq.kt-term")
            val jobs = client.subscribe("kt.term", qos = Qos.AT_LEAST_ONCE, durable = "kt-term")
            client.publish("kt.term", "poison", qos = Qos.AT_LEAST_ONCE)
            val poison = jobs.next(5.seconds)!!
            poison.term()
            val letter = dead.next(5.seconds)!!
            assertEquals("poison", letter.payloadText())
            assertEquals(poison.id, letter.id)
            assertEquals("terminated", letter.header("blipmq-dead-letter-reason")?.decodeToString())
            assertNull(jobs.next(200.milliseconds))
            jobs.unsubscribe()
            dead.unsubscribe()
        }
    }

    @Test
    fun `inProgress holds off the subscription's own ack timeout`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val jobs = client.subscribe(
                "kt.long", qos = Qos.AT_LEAST_ONCE, durable = "kt-long", ackTimeout = 200.milliseconds,
            )
            client.publish("kt.long", "long", qos = Qos.AT_LEAST_ONCE)
            val job = jobs.next(5.seconds)!!
            val started = TimeSource.Monotonic.markNow()
            while (started.elapsedNow() < 600.milliseconds) {
                job.inProgress()
                assertNull(jobs.next(100.milliseconds))
            }
            job.ack()
            // Without inProgress the 200 ms timeout (not the broker's 30 s) applies.
            client.publish("kt.long", "stalled", qos = Qos.AT_LEAST_ONCE)
            val stalled = jobs.next(5.seconds)!!
            val again = jobs.next(5.seconds)!!
            assertEquals(stalled.deliveryId, again.deliveryId)
            assertEquals(2, again.deliveryCount)
            again.ack()
            jobs.unsubscribe()
        }
    }

    @Test
    fun `maxDeliveries dead-letters a message after that many naks`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val dead = client.subscribe("\$dlq.kt-flaky")
            val jobs = client.subscribe("kt.flaky", qos = Qos.AT_LEAST_ONCE, durable = "kt-flaky", maxDeliveries = 2)
            client.publish("kt.flaky", "flaky", qos = Qos.AT_LEAST_ONCE)
            for (count in 1..2) {
                val message = jobs.next(5.seconds)!!
                assertEquals(count, message.deliveryCount)
                message.nak()
            }
            val letter = dead.next(5.seconds)!!
            assertEquals("2", letter.header("blipmq-deliveries")?.decodeToString())
            assertEquals("max_deliveries", letter.header("blipmq-dead-letter-reason")?.decodeToString())
            jobs.unsubscribe()
            dead.unsubscribe()
        }
    }

    @Test
    fun `bad values throw InvalidArgumentException`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            for (subscribe in listOf(
                suspend { client.subscribe("kt.bad", qos = Qos.AT_LEAST_ONCE, durable = "kt-bad", ackTimeout = 5.milliseconds) },
                suspend { client.subscribe("kt.bad", qos = Qos.AT_LEAST_ONCE, durable = "kt-bad", ackTimeout = (-1).seconds) },
                suspend { client.subscribe("kt.bad", qos = Qos.AT_LEAST_ONCE, durable = "kt-bad", maxDeliveries = 10_001) },
                suspend { client.subscribe("kt.bad", ackTimeout = 1.seconds) },
            )) {
                val error = assertThrows<InvalidArgumentException> { runBlocking { subscribe() } }
                assertEquals(301, error.code)
            }
            val jobs = client.subscribe("kt.bad", qos = Qos.AT_LEAST_ONCE, durable = "kt-bad")
            client.publish("kt.bad", "x", qos = Qos.AT_LEAST_ONCE)
            val message = jobs.next(5.seconds)!!
            assertThrows<InvalidArgumentException> { runBlocking { message.nak((-5).milliseconds) } }
            message.ack()
            jobs.unsubscribe()
        }
    }
}
