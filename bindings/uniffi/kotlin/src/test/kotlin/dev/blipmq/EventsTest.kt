package dev.blipmq

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class EventsTest {
    @Test
    fun `a broker restart is told in order (a BROKER_CLOSED disconnect), and the flow completes after the close`(): Unit = runBlocking {
        Broker().use { broker ->
            val client = BlipMQ.connect(broker.addr)
            val events = client.events()
            val seen = Channel<ClientEvent>(Channel.UNLIMITED)
            val collector = launch { events.collect { seen.send(it) } }
            assertNull(withTimeoutOrNull(50.milliseconds) { seen.receive() }, "nothing has happened yet")
            broker.restart()
            withTimeout(20.seconds) {
                // A broker stopping gracefully says so first (an error that
                // answers no call), then the connection ends; failed attempts
                // may come while it starts again.
                val shutdown = seen.receive()
                assertTrue(shutdown is ClientEvent.ServerError, "$shutdown")
                val error = (shutdown as ClientEvent.ServerError).error
                assertEquals("ShuttingDown", error.codeName)
                assertTrue(error.message!!.startsWith("ShuttingDown ("), error.message)
                val disconnected = seen.receive()
                assertTrue(disconnected is ClientEvent.Disconnected && disconnected.reason.isNotEmpty(), "$disconnected")
                // ... and why as a type: the broker closed the connection.
                val reason = disconnected as ClientEvent.Disconnected
                assertEquals(DisconnectKind.BROKER_CLOSED, reason.kind)
                assertEquals(602, reason.code)
                assertNull(reason.ioKind)
                var next = seen.receive()
                while (next is ClientEvent.ReconnectFailed) {
                    assertTrue(next.attempt >= 1 && next.error.isNotEmpty(), "$next")
                    next = seen.receive()
                }
                assertTrue(next is ClientEvent.Reconnected && next.connectionId > 0u, "$next")
            }
            assertEquals(ConnectionStatus.CONNECTED, client.status)
            client.closeAndWait()
            withTimeout(5.seconds) { collector.join() }
            assertEquals(ClientEvent.Closed, seen.receive())
            assertTrue(seen.isEmpty, "Closed is the last event")
        }
    }

    @Test
    fun `each failed reconnect attempt is an event, and every events() call gets every event`(): Unit = runBlocking {
        Broker().use { broker ->
            val client = BlipMQ.connect(broker.addr)
            val first = client.events()
            val second = client.events()
            val collected = launch { first.collect {} }
            broker.stop()
            val failures = mutableListOf<ClientEvent.ReconnectFailed>()
            val all = withTimeout(10.seconds) {
                val until = mutableListOf<ClientEvent>()
                second.collect { event ->
                    until += event
                    if (event is ClientEvent.ReconnectFailed) failures += event
                    if (failures.size == 2) client.closeAndWait()
                }
                until
            }
            assertTrue(all.first() is ClientEvent.ServerError, "$all")
            assertTrue(all[1] is ClientEvent.Disconnected, "$all")
            assertEquals(listOf(1, 2), failures.map { it.attempt })
            assertEquals(ClientEvent.Closed, all.last())
            assertEquals(ConnectionStatus.CLOSED, client.status)
            withTimeout(5.seconds) { collected.join() }
            assertThrows<IllegalStateException> { first.toList() }
        }
    }
}
