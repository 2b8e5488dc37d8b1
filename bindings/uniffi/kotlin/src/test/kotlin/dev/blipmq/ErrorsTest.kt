package dev.blipmq

import dev.blipmq.ffi.BlipMqException
import kotlin.time.Duration.Companion.milliseconds
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ErrorsTest {
    private val broker = Broker(mapOf("BLIPMQ_SERVER_MAX_MESSAGE_SIZE_BYTES" to "1024"))
    private val secured = Broker(mapOf("BLIPMQ_AUTH_API_KEYS" to "s3cret,other"))

    @AfterAll
    fun stopBrokers() {
        broker.close()
        secured.close()
    }

    private inline fun <reified E : BlipMQException> fails(code: Int, noinline call: suspend () -> Unit): E {
        val error = assertThrows<E> { runBlocking { call() } }
        assertEquals(code, error.code)
        assertTrue(error.message!!.startsWith("${error.codeName} ($code): "), error.message)
        return error
    }

    @Test
    fun `connecting fails with the wire code`() {
        fails<BlipMQException.ConnectFailed>(600) { BlipMQ.connect(Broker.closedAddr(), reconnect = false) }
        val auth = fails<BlipMQException.AuthFailed>(200) { BlipMQ.connect(secured.addr, apiKey = "wrong") }
        assertEquals("AuthFailed", auth.codeName)
        assertTrue(auth.cause is BlipMqException.AuthFailed, "the generated error is kept as the cause")
        fails<BlipMQException.AuthFailed>(200) { BlipMQ.connect(secured.addr) }
        runBlocking { BlipMQ.connect(secured.addr, apiKey = "other").use { it.flush() } }
    }

    @Test
    fun `bad publishes and subscribes are refused with their codes`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            fails<BlipMQException.InvalidTopic>(300) { client.publish("bad..topic", "x") }
            fails<BlipMQException.InvalidTopic>(300) { client.publish("wild.*", "x") }
            fails<BlipMQException.InvalidTopic>(300) { client.subscribe("a.>.b") }
            fails<BlipMQException.MessageTooLarge>(400) { client.publish("big", ByteArray(2048)) }
            fails<BlipMQException.InvalidHeader>(304) { client.publish("h", "x", headers = listOf(Header("bad key", "v"))) }
            fails<BlipMQException.HeadersTooLarge>(404) {
                client.publish("h", "x", headers = (0..100).map { Header("k$it", "v") })
            }
            fails<BlipMQException.InvalidArgument>(301) { client.subscribe("q", group = "two words") }
            fails<BlipMQException.InvalidArgument>(301) { client.publish("t", "x", ttl = (-1).milliseconds) }
            fails<BlipMQException.InvalidArgument>(301) { BlipMQ.connect(broker.addr, subscriptionCapacity = 0) }
            // The connection is still good after every refusal.
            client.subscribe("still.good").use { sub ->
                client.publish("still.good", "yes")
                assertEquals("yes", sub.next()?.payloadText())
            }
        }
    }

    @Test
    fun `a durable subscription attached elsewhere is Other with its code`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { first ->
            BlipMQ.connect(broker.addr).use { second ->
                val held = first.subscribe("d.in.use", qos = Qos.AT_LEAST_ONCE, durable = "only-one")
                val error = fails<BlipMQException.Other>(305) {
                    second.subscribe("d.in.use", qos = Qos.AT_LEAST_ONCE, durable = "only-one")
                }
                assertEquals("DurableInUse", error.codeName)
                held.unsubscribe()
            }
        }
    }

    @Test
    fun `the hierarchy is sealed, so a when over it needs no else`() {
        val error: BlipMQException = runCatching { runBlocking { BlipMQ.connect(Broker.closedAddr(), reconnect = false) } }
            .exceptionOrNull() as BlipMQException
        val kind = when (error) {
            is BlipMQException.AuthFailed -> "auth"
            is BlipMQException.InvalidTopic -> "topic"
            is BlipMQException.InvalidArgument -> "argument"
            is BlipMQException.UnsupportedQos -> "qos"
            is BlipMQException.InvalidHeader -> "header"
            is BlipMQException.MessageTooLarge -> "size"
            is BlipMQException.HeadersTooLarge -> "headers"
            is BlipMQException.ConnectFailed -> "connect"
            is BlipMQException.Timeout -> "timeout"
            is BlipMQException.ConnectionClosed -> "connection"
            is BlipMQException.ClientClosed -> "closed"
            is BlipMQException.Other -> "other"
        }
        assertEquals("connect", kind)
    }
}
