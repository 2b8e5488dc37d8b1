package dev.blipmq

import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.yield
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/**
 * QoS 0 publishes are buffered and handed to the native client in batches
 * (Batch.kt): the order of calls, their errors and the bound on memory are
 * what they would be one call at a time.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class BatchTest {
    private val broker = Broker()

    @AfterAll
    fun stopBroker() = broker.close()

    @Test
    fun `call order is wire order across buffered QoS 0, direct QoS 0, QoS 1 and flush`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { consumer ->
            BlipMQ.connect(broker.addr).use { client ->
                val count = 3000
                val sub = consumer.subscribe("order.>")
                val received = async { withTimeout(30.seconds) { sub.take(count).map { it.payloadText() }.toList() } }
                for (i in 0 until count) {
                    when {
                        // A new topic every so often: its first message goes directly.
                        i % 500 == 0 -> client.publish("order.t${i / 500}", "$i")
                        i % 97 == 0 -> client.publish("order.t0", "$i", qos = Qos.AT_LEAST_ONCE)
                        i % 89 == 0 -> client.publish("order.t0", "$i", headers = listOf(Header("h", "v")))
                        i % 61 == 0 -> {
                            client.publish("order.t0", "$i")
                            client.flush()
                        }
                        else -> client.publish("order.t${i / 500}", "$i")
                    }
                }
                assertEquals((0 until count).map { "$it" }, received.await())
            }
        }
    }

    @Test
    fun `concurrent QoS 1 publishes are queued and confirmed in call order`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { consumer ->
            BlipMQ.connect(broker.addr).use { client ->
                val count = 200
                val sub = consumer.subscribe("pipelined")
                val received = async { withTimeout(30.seconds) { sub.take(count).map { it.payloadText() }.toList() } }
                // Each starts at once, in call order; none waits for another's confirm.
                val ids = (0 until count).map { i ->
                    async(start = CoroutineStart.UNDISPATCHED) {
                        client.publish("pipelined", "$i", qos = Qos.AT_LEAST_ONCE)!!
                    }
                }.awaitAll()
                assertEquals(ids.sorted(), ids, "ids follow call order")
                assertEquals((0 until count).map { "$it" }, received.await())
            }
        }
    }

    @Test
    fun `an invalid publish after buffered ones fails for its caller, and nothing else is lost`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { consumer ->
            BlipMQ.connect(broker.addr).use { client ->
                val sub = consumer.subscribe("errs.*")
                val received = async { withTimeout(30.seconds) { sub.take(300).map { it.payloadText() }.toList() } }
                for (i in 0 until 100) client.publish("errs.a", "$i")
                assertThrows<InvalidTopicException> { runBlocking { client.publish("errs..bad", "x") } }
                for (i in 100 until 200) client.publish("errs.a", "$i")
                val tooLarge = ByteArray(client.maxMessageSize.toInt() + 1)
                assertThrows<MessageTooLargeException> { runBlocking { client.publish("errs.a", tooLarge) } }
                for (i in 200 until 300) client.publish("errs.a", "$i")
                assertEquals((0 until 300).map { "$it" }, received.await())
            }
        }
    }

    @Test
    fun `close sends what is buffered, and a publish after it fails with 603`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { consumer ->
            val sub = consumer.subscribe("closing.buffered")
            val client = BlipMQ.connect(broker.addr)
            val count = 20_000
            val received = async { withTimeout(30.seconds) { sub.take(count).toList().size } }
            for (i in 0 until count) client.publish("closing.buffered", "$i")
            client.close()
            assertEquals(count, received.await())
            val error = assertThrows<ClientClosedException> { runBlocking { client.publish("closing.buffered", "late") } }
            assertEquals(603, error.code)
            assertThrows<ClientClosedException> { runBlocking { client.flush() } }
        }
    }

    @Test
    fun `a full buffer suspends the publisher until handed over, and never grows`(): Unit = runBlocking {
        val gate = CompletableDeferred<Unit>()
        val handedOver = mutableListOf<Int>()
        val sink = object : BatchSink {
            // The native queue is full: every batch waits at the gate.
            override fun tryPublishPacked(address: Long, len: Int): Boolean {
                synchronized(handedOver) { handedOver += len }
                return false
            }

            override suspend fun publishKept() = gate.await()
        }
        coroutineScope {
            val batcher = PublishBatcher(sink, this, capacity = 1000)
            batcher.remember("t")
            val entry = PublishBatcher.ENTRY_OVERHEAD + 1 + 40
            val published = AtomicInteger()
            val publisher = launch(Dispatchers.Default) {
                repeat(1000) {
                    assertTrue(batcher.publish("t", ByteArray(40), 0))
                    published.incrementAndGet()
                }
            }
            // A hand-over takes what is buffered and waits at the gate; the
            // publisher fills the other buffer, then waits its turn.
            withTimeout(10.seconds) {
                var seen = -1
                while (seen != published.get()) {
                    seen = published.get()
                    yield()
                    Thread.sleep(100)
                }
            }
            assertFalse(publisher.isCompleted, "the publisher waits while the native queue is full")
            assertTrue(published.get() <= 2 * (1000 / entry), "at most two buffers' worth: $published")
            assertTrue(batcher.buffered <= 1000)
            gate.complete(Unit)
            withTimeout(10.seconds) { publisher.join() }
            batcher.handOverNow()
            assertEquals(1000 * entry, handedOver.sum(), "every message handed over once")
            assertTrue(handedOver.all { it <= 1000 })
        }
    }
}
