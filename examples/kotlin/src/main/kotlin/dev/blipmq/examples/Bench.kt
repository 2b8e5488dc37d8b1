// Throughput through the Kotlin SDK, bounded in count and time: one
// publisher client and one subscriber client on one topic at QoS 0 (only
// delivered messages count), then QoS 1 publishes confirmed by the broker
// with many in flight.
//
//     mvn -q compile exec:java -Dexec.mainClass=dev.blipmq.examples.BenchKt \
//         -Dexec.args="127.0.0.1:7878 200000 16"
//
// Arguments: broker address, messages (default 200000), payload bytes
// (default 16). Run the broker with BLIPMQ_QUEUES_OVERFLOW_POLICY=block so
// that a slow subscriber slows the publisher instead of losing messages.
package dev.blipmq.examples

import dev.blipmq.BlipMQ
import dev.blipmq.Qos
import java.lang.management.ManagementFactory
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull

/** The longest a phase may take. */
private val LIMIT = 60.seconds

/** QoS 1 publishes in flight at once. */
private const val IN_FLIGHT = 64

fun main(args: Array<String>): Unit = runBlocking {
    val addr = args.getOrElse(0) { "127.0.0.1:7878" }
    val count = args.getOrNull(1)?.toInt() ?: 200_000
    val size = args.getOrNull(2)?.toInt() ?: 16
    val payload = ByteArray(size) { it.toByte() }
    BlipMQ.connect(addr).use { subscriber ->
        BlipMQ.connect(addr).use { publisher ->
            val publishStarted = Stopwatch()
            withTimeoutOrNull(LIMIT) { repeat(count) { publisher.publish("bench.nobody", payload) } }
            publisher.flush()
            publishStarted.report("QoS 0 publishes, no subscriber, $size B: $count", count)

            val subscription = subscriber.subscribe("bench.kotlin")
            val started = Stopwatch()
            val delivered = async(Dispatchers.Default) {
                var n = 0
                withTimeoutOrNull(LIMIT) { subscription.take(count).collect { n++ } }
                n
            }
            launch(Dispatchers.Default) {
                withTimeoutOrNull(LIMIT) { repeat(count) { publisher.publish("bench.kotlin", payload) } }
            }
            val received = delivered.await()
            started.report("QoS 0, 1 -> 1, $size B: $received of $count delivered", received)

            val confirmed = (count / 10 / IN_FLIGHT) * IN_FLIGHT
            val qos1Started = Stopwatch()
            withTimeoutOrNull(LIMIT) {
                coroutineScope {
                    repeat(IN_FLIGHT) {
                        launch(Dispatchers.Default) {
                            repeat(confirmed / IN_FLIGHT) { publisher.publish("bench.kotlin.q1", payload, qos = Qos.AT_LEAST_ONCE) }
                        }
                    }
                }
            } ?: error("QoS 1 publishes did not finish in $LIMIT")
            qos1Started.report("QoS 1 publishes confirmed ($IN_FLIGHT in flight), $size B: $confirmed", confirmed)
        }
    }
}

/** Wall time and this process's CPU time (the SDK's cost: the broker runs
 * in its own process) since it was made. */
private class Stopwatch {
    private val wall = System.nanoTime()
    private val cpu = cpuNanos()

    fun report(what: String, messages: Int) {
        val seconds = (System.nanoTime() - wall) / 1e9
        val cpuMicros = (cpuNanos() - cpu) / 1e3 / messages
        println("%s in %.2f s: %.0f msg/s, %.1f µs client CPU per message".format(what, seconds, messages / seconds, cpuMicros))
    }

    private fun cpuNanos(): Long =
        (ManagementFactory.getOperatingSystemMXBean() as com.sun.management.OperatingSystemMXBean).processCpuTime
}
