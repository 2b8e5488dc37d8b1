package dev.blipmq

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class DurableTest {
    private val broker = Broker()

    @AfterAll
    fun stopBroker() = broker.close()

    @Test
    fun `a QoS 1 publish resumes with the stored message's id`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val first = client.publish("ids", "a", qos = Qos.AT_LEAST_ONCE)!!
            val second = client.publish("ids", "b", qos = Qos.AT_LEAST_ONCE)!!
            assertTrue(second > first, "$second > $first")
            assertNull(client.publish("ids", "c"), "QoS 0 has no id")
        }
    }

    @Test
    fun `a durable subscription survives its flow until acked, and unsubscribe deletes it`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            var jobs = client.subscribe("kt.jobs", qos = Qos.AT_LEAST_ONCE, durable = "kt-worker")
            val id = client.publish("kt.jobs", "one", qos = Qos.AT_LEAST_ONCE)
            val taken = jobs.first() // not acked; ending the flow only detaches
            assertEquals(id, taken.id)
            assertEquals(1, taken.deliveryCount)
            assertNotEquals(0uL, taken.deliveryId)
            client.publish("kt.jobs", "two", qos = Qos.AT_LEAST_ONCE)

            jobs = client.subscribe("kt.jobs", qos = Qos.AT_LEAST_ONCE, durable = "kt-worker")
            val again = jobs.next(5.seconds)!!
            assertEquals("one", again.payloadText())
            assertEquals(2, again.deliveryCount)
            again.ack()
            val second = jobs.next(5.seconds)!!
            assertEquals("two", second.payloadText())
            second.ack()
            jobs.close()

            // Everything acked: nothing comes back.
            jobs = client.subscribe("kt.jobs", qos = Qos.AT_LEAST_ONCE, durable = "kt-worker")
            assertNull(jobs.next(200.milliseconds))
            jobs.unsubscribe()
            assertEquals(0L, broker.metric("blipmq_durable_subscriptions"))
            client.publish("kt.jobs", "three", qos = Qos.AT_LEAST_ONCE)
            jobs = client.subscribe("kt.jobs", qos = Qos.AT_LEAST_ONCE, durable = "kt-worker")
            assertNull(jobs.next(200.milliseconds), "a new durable subscription starts empty")
            jobs.unsubscribe()
        }
    }
}
