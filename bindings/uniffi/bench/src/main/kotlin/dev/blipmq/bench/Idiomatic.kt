// One idiomatic burst through the Kotlin SDK or through jnats, each
// written the way its README shows, nothing tuned:
// - blipmq: `client.publish(topic, payload)` (suspend) in a loop on one
//   client, `subscription.take(count).collect { }` on a second client;
// - jnats: `nc.publish(subject, payload)` in a loop on one connection,
//   `sub.nextMessage(timeout)` in a loop on a second (the synchronous
//   subscription, the first way its README shows to receive; its default
//   pending limits kept).
// The subscriber is subscribed (BlipMQ: confirmed by the broker; jnats: a
// `flush` round trip after the SUB) and receiving before the first
// publish; after the loop the publisher flushes. The run ends at the last
// message, or `quiet` seconds after publishing ended without a new receipt
// (messages lost), or at `limit` seconds. Prints one JSON line.
//
//   java -cp ... dev.blipmq.bench.IdiomaticKt blipmq|nats HOST:PORT [count] [size] [quiet s] [limit s]
//
// Run by scripts/bench-idiomatic.sh.
package dev.blipmq.bench

import dev.blipmq.BlipMQ
import io.nats.client.Nats
import java.lang.management.ManagementFactory
import java.time.Duration
import java.util.Locale
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlin.concurrent.thread

private const val TOPIC = "bench.idiomatic"

private class Tally {
    @Volatile var received = 0L
    @Volatile var last = 0L
    @Volatile var done = false
    var reported = 0L
    var atPublishEnd = 0L
}

private fun cpuNanos(): Long =
    (ManagementFactory.getOperatingSystemMXBean() as com.sun.management.OperatingSystemMXBean).processCpuTime

private class Args(argv: Array<String>) {
    val system = argv[0]
    val addr = argv[1]
    val count = argv.getOrNull(2)?.toLong() ?: 200_000L
    val size = argv.getOrNull(3)?.toInt() ?: 16
    val quietNanos = ((argv.getOrNull(4)?.toDouble() ?: 3.0) * 1e9).toLong()
    val limitNanos = ((argv.getOrNull(5)?.toDouble() ?: 120.0) * 1e9).toLong()
}

/** Whether to stop waiting: quiet since publishing ended, or past the limit. */
private fun quietOrLate(tally: Tally, publishedAt: Long, deadline: Long, args: Args): Boolean {
    val now = System.nanoTime()
    return now - maxOf(tally.last, publishedAt) > args.quietNanos || now > deadline
}

private fun runBlipmq(args: Args): String = runBlocking {
    val payload = ByteArray(args.size)
    val tally = Tally()
    BlipMQ.connect(args.addr).use { subscriber ->
        BlipMQ.connect(args.addr).use { client ->
            val subscription = subscriber.subscribe(TOPIC)
            val consumer = launch(Dispatchers.Default) {
                subscription.take(args.count.toInt()).collect {
                    tally.received++
                    tally.last = System.nanoTime()
                }
                tally.done = true
            }
            val cpu = cpuNanos()
            val started = System.nanoTime()
            var published = 0L
            repeat(args.count.toInt()) {
                client.publish(TOPIC, payload)
                published++
            }
            client.flush()
            val publishedAt = System.nanoTime()
            tally.atPublishEnd = tally.received
            val deadline = started + args.limitNanos
            while (!tally.done && !quietOrLate(tally, publishedAt, deadline, args)) delay(20)
            val used = cpuNanos() - cpu
            tally.reported = subscription.dropped
            consumer.cancel()
            finish("blipmq", "blipmq Kotlin SDK 0.1.0 (this tree)", args, published, tally, started, publishedAt, used)
        }
    }
}

private fun runNats(args: Args): String {
    val payload = ByteArray(args.size)
    val tally = Tally()
    val subscriber = Nats.connect("nats://${args.addr}")
    val nc = Nats.connect("nats://${args.addr}")
    try {
        val sub = subscriber.subscribe(TOPIC)
        subscriber.flush(Duration.ofSeconds(10)) // the server has the SUB before the first publish
        val consumer = thread(name = "subscriber") {
            while (!tally.done && tally.received < args.count) {
                val msg = sub.nextMessage(Duration.ofMillis(100)) ?: continue
                tally.received++
                tally.last = System.nanoTime()
            }
        }
        val cpu = cpuNanos()
        val started = System.nanoTime()
        var published = 0L
        repeat(args.count.toInt()) {
            nc.publish(TOPIC, payload)
            published++
        }
        nc.flush(Duration.ofSeconds(60))
        val publishedAt = System.nanoTime()
        tally.atPublishEnd = tally.received
        val deadline = started + args.limitNanos
        while (consumer.isAlive && !quietOrLate(tally, publishedAt, deadline, args)) Thread.sleep(20)
        val used = cpuNanos() - cpu
        tally.done = true
        consumer.join()
        tally.reported = sub.droppedCount
        return finish("nats", "jnats ${Nats.CLIENT_VERSION}", args, published, tally, started, publishedAt, used)
    } finally {
        nc.close()
        subscriber.close()
    }
}

private fun finish(
    system: String, client: String, args: Args, published: Long, tally: Tally,
    started: Long, publishedAt: Long, cpuNanos: Long,
): String {
    val end = if (tally.received > 0) tally.last else publishedAt
    val seconds = (end - started) / 1e9
    val rate = if (seconds > 0) Math.round(tally.received / seconds) else 0
    val runtime = "${System.getProperty("java.vm.name")} ${System.getProperty("java.version")}, Kotlin ${KotlinVersion.CURRENT}"
    return """{"sdk":"kotlin","system":"$system","client":"$client","runtime":"$runtime",""" +
        """"count":${args.count},"size":${args.size},"published":$published,"received":${tally.received},""" +
        """"lost":${published - tally.received},"reported_drops":${tally.reported},""" +
        """"received_at_publish_end":${tally.atPublishEnd},""" +
        """"seconds":${fmt(6, seconds)},"publish_seconds":${fmt(6, (publishedAt - started) / 1e9)},""" +
        """"rate":$rate,"cpu_us_per_msg":${fmt(3, cpuNanos / 1e3 / maxOf(tally.received, 1L))}}"""
}

private fun fmt(digits: Int, x: Double): String = String.format(Locale.ROOT, "%.${digits}f", x)

fun main(argv: Array<String>) {
    val args = Args(argv)
    val line = when (args.system) {
        "blipmq" -> runBlipmq(args)
        "nats" -> runNats(args)
        else -> error("system: blipmq or nats")
    }
    println(line)
    System.exit(0)
}
