package dev.blipmq

import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Several broker addresses: a dead one is skipped, and a lost broker hands over to the next. */
class AddressesTest {
    @Test
    fun `a dead first address is skipped for the next`(): Unit = runBlocking {
        Broker().use { broker ->
            BlipMQ.connect(listOf(Broker.closedAddr(), broker.addr)).use { client ->
                client.subscribe("listed").use { sub ->
                    client.publish("listed", "via the second")
                    assertEquals("via the second", sub.next(5.seconds)!!.payloadText())
                }
            }
            // One string of addresses separated by commas works too.
            BlipMQ.connect("${Broker.closedAddr()}, ${broker.addr}").use { client ->
                assertEquals(ConnectionStatus.CONNECTED, client.status)
            }
        }
    }

    @Test
    fun `when every address is dead the error names each, and no address is an invalid argument`(): Unit = runBlocking {
        val (first, second) = Broker.closedAddr() to Broker.closedAddr()
        val error = assertThrows<ConnectException> { runBlocking { BlipMQ.connect(listOf(first, second), reconnect = false) } }
        assertEquals(600, error.code)
        val message = error.message!!
        assertTrue(message.indexOf("[$first]") in 0 until message.indexOf("[$second]"), message)
        val none = assertThrows<InvalidArgumentException> { runBlocking { BlipMQ.connect(emptyList()) } }
        assertEquals(301, none.code)
    }

    @Test
    fun `a lost broker hands over to the next address, which the Reconnected event names`(): Unit = runBlocking {
        Broker().use { second ->
            val first = Broker()
            BlipMQ.connect(listOf(first.addr, second.addr)).use { client ->
                val seen = Channel<ClientEvent>(Channel.UNLIMITED)
                val collector = launch { client.events().collect { seen.send(it) } }
                val sub = client.subscribe("moves")
                first.close()
                val reconnected = withTimeout(20.seconds) {
                    var next = seen.receive()
                    while (next !is ClientEvent.Reconnected) next = seen.receive()
                    next
                }
                assertEquals(second.addr, reconnected.address)
                client.flush()
                BlipMQ.connect(second.addr).use { other -> other.publish("moves", "on the second") }
                assertEquals("on the second", sub.next(5.seconds)!!.payloadText())
                collector.cancel()
            }
        }
    }
}
