package dev.blipmq

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class PubSubTest {
    private val broker = Broker()

    @AfterAll
    fun stopBroker() = broker.close()

    @Test
    fun `a message round trips with every field`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            client.subscribe("orders.*").use { orders ->
                val before = System.currentTimeMillis()
                val payload = byteArrayOf(0, 1, 2, -1, 10, 13)
                client.publish("orders.created", payload, headers = listOf(Header("a", "1"), Header("b", byteArrayOf(0, -1)), Header("a", "3")))
                val message = orders.next(5.seconds)!!
                assertEquals("orders.created", message.topic)
                assertArrayEquals(payload, message.payload)
                assertEquals(listOf(Header("a", "1"), Header("b", byteArrayOf(0, -1)), Header("a", "3")), message.headers)
                assertArrayEquals("1".encodeToByteArray(), message.header("a"))
                assertTrue(message.id > 0u)
                assertTrue(message.timestampMs >= before - 1000, "timestamp ${message.timestampMs}")
                assertEquals(1, message.deliveryCount)
                assertEquals(0uL, message.deliveryId)
                message.ack() // a no-op at QoS 0
            }
        }
    }

    @Test
    fun `a flow delivers in order and collecting it again is refused`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val numbers = client.subscribe("flow.numbers")
            for (i in 0 until 1000) client.publish("flow.numbers", "$i")
            val received = withTimeout(10.seconds) { numbers.take(1000).map { it.payloadText() }.toList() }
            assertEquals((0 until 1000).map { "$it" }, received)
            assertThrows<IllegalStateException> { runBlocking { numbers.first() } }
        }
    }

    @Test
    fun `stopping the collector unsubscribes`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val baseline = broker.metric("blipmq_subscriptions")
            val subscription = client.subscribe("cancel.me")
            broker.awaitMetric("blipmq_subscriptions", baseline + 1)
            val first = Channel<Message>(1)
            val collector = launch { subscription.collect { first.send(it) } }
            client.publish("cancel.me", "one")
            assertEquals("one", withTimeout(5.seconds) { first.receive() }.payloadText())
            collector.cancelAndJoin()
            broker.awaitMetric("blipmq_subscriptions", baseline)
            assertNull(subscription.next(100.milliseconds), "the subscription has ended")

            // `take(n)` ends the collection, and with it the subscription.
            val taken = client.subscribe("take.one")
            broker.awaitMetric("blipmq_subscriptions", baseline + 1)
            val got = async(start = CoroutineStart.UNDISPATCHED) { taken.take(1).toList() }
            client.publish("take.one", "x")
            assertEquals(1, withTimeout(5.seconds) { got.await() }.size)
            broker.awaitMetric("blipmq_subscriptions", baseline)
        }
    }

    @Test
    fun `next times out with null, and a batch takes what is buffered`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            client.subscribe("batch.>").use { sub ->
                assertNull(sub.next(50.milliseconds))
                for (i in 0 until 5) client.publish("batch.x", "$i")
                client.flush()
                val batch = mutableListOf<Message>()
                while (batch.size < 5) batch += sub.nextBatch(10, 5.seconds)!!
                assertEquals((0 until 5).map { "$it" }, batch.map { it.payloadText() })
                assertEquals(emptyList<Message>(), sub.nextBatch(10, 20.milliseconds))
                assertThrows<InvalidArgumentException> { runBlocking { sub.nextBatch(0) } }
            }
        }
    }

    @Test
    fun `wildcards match, and a subscription can be closed or unsubscribed`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            val one = client.subscribe("w.*.x")
            val rest = client.subscribe("w.>")
            client.publish("w.a.x", "1")
            client.publish("w.a.b.c", "2")
            assertEquals("w.a.x", one.next(5.seconds)?.topic)
            assertEquals(listOf("w.a.x", "w.a.b.c"), listOf(rest.next(5.seconds)?.topic, rest.next(5.seconds)?.topic))
            assertNull(one.next(100.milliseconds))
            one.close()
            rest.unsubscribe()
        }
    }

    @Test
    fun `closing the client ends collectors and later calls fail with 603`(): Unit = runBlocking {
        val client = BlipMQ.connect(broker.addr, name = "kotlin-test", reconnect = false)
        assertEquals(ConnectionStatus.CONNECTED, client.status)
        assertTrue(client.maxMessageSize > 0)
        val sub = client.subscribe("closing")
        val collected = async(start = CoroutineStart.UNDISPATCHED) { sub.toList() }
        client.publish("closing", "last")
        client.flush()
        client.closeAndWait()
        assertEquals(listOf("last"), withTimeout(5.seconds) { collected.await() }.map { it.payloadText() })
        assertEquals(ConnectionStatus.CLOSED, client.status)
        val error = assertThrows<ClientClosedException> { runBlocking { client.publish("closing", "more") } }
        assertEquals(603, error.code)
        client.close() // a second close does nothing
    }

    @Test
    fun `use closes the client`(): Unit = runBlocking {
        val client = BlipMQ.connect(broker.addr)
        client.use { it.publish("used", "x") }
        assertEquals(ConnectionStatus.CLOSED, client.status)
    }
}
