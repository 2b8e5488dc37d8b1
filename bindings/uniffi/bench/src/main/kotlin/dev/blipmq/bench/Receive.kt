// The Kotlin SDK's receive path alone: `count` QoS 0 messages are published
// and flushed while a subscription buffers them (the broker's queue and the
// client's), then the subscription is collected as a Flow and timed. Prints
// delivered msgs/s and the client's CPU µs per message while receiving.
//
//   java -cp ... dev.blipmq.bench.ReceiveKt HOST:PORT [count] [size]
//
// The broker must hold `count` messages for one subscriber (its defaults
// hold 1,048,576 or 64 MiB).
package dev.blipmq.bench

import dev.blipmq.BlipMQ
import java.lang.management.ManagementFactory
import java.util.Locale
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.runBlocking

fun main(argv: Array<String>): Unit = runBlocking {
    val addr = argv[0]
    val count = argv.getOrNull(1)?.toInt() ?: 1_000_000
    val size = argv.getOrNull(2)?.toInt() ?: 16
    val cpu = ManagementFactory.getOperatingSystemMXBean() as com.sun.management.OperatingSystemMXBean
    BlipMQ.connect(addr, subscriptionCapacity = count).use { subscriber ->
        val subscription = subscriber.subscribe("bench.receive")
        BlipMQ.connect(addr).use { publisher ->
            val payload = ByteArray(size)
            repeat(count) { publisher.publish("bench.receive", payload) }
            publisher.flush()
        }
        val cpuStart = cpu.processCpuTime
        val started = System.nanoTime()
        var received = 0
        subscription.take(count).collect { received++ }
        val seconds = (System.nanoTime() - started) / 1e9
        val cpuUs = (cpu.processCpuTime - cpuStart) / 1e3 / received
        println(String.format(Locale.ROOT, "received %d of %d B in %.3f s: %.0f msg/s, %.2f µs client CPU per message", received, size, seconds, received / seconds, cpuUs))
    }
}
