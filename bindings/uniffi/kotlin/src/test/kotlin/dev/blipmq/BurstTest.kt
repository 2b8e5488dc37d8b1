package dev.blipmq

import java.nio.ByteBuffer
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test

/** Messages in the burst: the case from the issue that found silent drops. */
private const val BURST = 200_000

/**
 * The README's loop loses nothing on the broker's defaults: a burst of
 * 200,000 16-byte messages, one `publish` each, collected as a Flow on a
 * second client in the same process, all arrives in order with nothing
 * reported dropped. The broker runs with no configuration at all.
 */
class BurstTest {
    @Test
    fun `the README loop loses nothing on a burst at the broker defaults`(): Unit = runBlocking {
        Broker().use { broker ->
            BlipMQ.connect(broker.addr).use { consumer ->
                BlipMQ.connect(broker.addr).use { producer ->
                    val drops = mutableListOf<Long>()
                    val subscription = consumer.subscribe("burst", onDrop = { drops += it })
                    val reading = async {
                        var received = 0
                        subscription.take(BURST).collect { message ->
                            assertEquals(received, ByteBuffer.wrap(message.payload).getInt(0), "in order")
                            received++
                        }
                        received
                    }
                    for (i in 0 until BURST) {
                        producer.publish("burst", ByteBuffer.allocate(16).putInt(0, i).array())
                    }
                    producer.flush()
                    assertEquals(BURST, withTimeout(120.seconds) { reading.await() })
                    assertEquals(emptyList<Long>(), drops)
                    assertEquals(0L, subscription.dropped)
                }
            }
        }
    }
}
