package dev.blipmq

import dev.blipmq.ffi.NativeException
import java.io.File
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
        fails<ConnectException>(600) { BlipMQ.connect(Broker.closedAddr(), reconnect = false) }
        val auth = fails<AuthException>(200) { BlipMQ.connect(secured.addr, apiKey = "wrong") }
        assertEquals("AuthFailed", auth.codeName)
        assertTrue(auth.cause is NativeException.Failed, "the generated error is kept as the cause")
        fails<AuthException>(200) { BlipMQ.connect(secured.addr) }
        runBlocking { BlipMQ.connect(secured.addr, apiKey = "other").use { it.flush() } }
    }

    @Test
    fun `bad publishes and subscribes are refused with their codes`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { client ->
            fails<InvalidTopicException>(300) { client.publish("bad..topic", "x") }
            fails<InvalidTopicException>(300) { client.publish("wild.*", "x") }
            fails<InvalidTopicException>(300) { client.subscribe("a.>.b") }
            fails<MessageTooLargeException>(400) { client.publish("big", ByteArray(2048)) }
            fails<InvalidHeaderException>(304) { client.publish("h", "x", headers = listOf(Header("bad key", "v"))) }
            fails<HeadersTooLargeException>(404) {
                client.publish("h", "x", headers = (0..100).map { Header("k$it", "v") })
            }
            fails<InvalidArgumentException>(301) { client.subscribe("q", group = "two words") }
            fails<InvalidArgumentException>(301) { client.publish("t", "x", ttl = (-1).milliseconds) }
            fails<InvalidArgumentException>(301) { BlipMQ.connect(broker.addr, subscriptionCapacity = 0) }
            // The connection is still good after every refusal.
            client.subscribe("still.good").use { sub ->
                client.publish("still.good", "yes")
                assertEquals("yes", sub.next()?.payloadText())
            }
        }
    }

    @Test
    fun `a durable subscription attached elsewhere is 305 DurableInUse`(): Unit = runBlocking {
        BlipMQ.connect(broker.addr).use { first ->
            BlipMQ.connect(broker.addr).use { second ->
                val held = first.subscribe("d.in.use", qos = Qos.AT_LEAST_ONCE, durable = "only-one")
                val error = fails<DurableInUseException>(305) {
                    second.subscribe("d.in.use", qos = Qos.AT_LEAST_ONCE, durable = "only-one")
                }
                assertEquals("DurableInUse", error.codeName)
                held.unsubscribe()
            }
        }
    }

    @Test
    fun `every wire code has its own class, named as in every SDK`() {
        // The table the classes were generated from (scripts/lib/gen_errors.py).
        val table = File("../../../schema/error-classes.json").readText()
        val rows = Regex(""""code": (\d+),\s*"name": "(\w+)",\s*"class": "(\w+)"""").findAll(table).toList()
        assertTrue(rows.size > 20, "${rows.size} codes")
        for (row in rows) {
            val (code, name, stem) = row.destructured
            val error = BlipMQException.of(code.toInt(), name, "the detail")
            assertEquals("${stem}Exception", error::class.simpleName)
            assertEquals(code.toInt(), error.code)
            assertEquals(name, error.codeName)
            assertEquals("$name ($code): the detail", error.message)
        }
        // A code a newer broker might send: UnknownException, keeping the number.
        val future = BlipMQException.of(406, "Unknown", "new")
        assertTrue(future is UnknownException && future.code == 406, "$future")
    }
}
