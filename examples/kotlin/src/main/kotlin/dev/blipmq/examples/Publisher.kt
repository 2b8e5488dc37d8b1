// Publish numbered orders to a topic:
//
//     mvn -q compile exec:java -Dexec.mainClass=dev.blipmq.examples.PublisherKt \
//         -Dexec.args="127.0.0.1:7878 orders.created 3"
//
// Arguments: broker address, topic, and how many messages (default 3). The
// last one is published at QoS 1, so the program ends once the broker has
// stored it (QoS 1 needs the broker's write-ahead log).
package dev.blipmq.examples

import dev.blipmq.BlipMQ
import dev.blipmq.BlipMQException
import dev.blipmq.Header
import dev.blipmq.Qos
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>): Unit = runBlocking {
    val addr = args.getOrElse(0) { "127.0.0.1:7878" }
    val topic = args.getOrElse(1) { "orders.created" }
    val count = args.getOrNull(2)?.toInt() ?: 3
    try {
        BlipMQ.connect(addr, apiKey = System.getenv("BLIPMQ_API_KEY")).use { client ->
            val headers = listOf(Header("content-type", "text/plain"), Header("x-tenant", "acme"))
            for (i in 1 until count) client.publish(topic, "order #$i", headers = headers)
            val id = client.publish(topic, "order #$count", qos = Qos.AT_LEAST_ONCE, headers = headers)
            println("published $count messages to $topic; the last is stored as #$id")
        }
    } catch (e: BlipMQException) {
        // e.g. "ConnectFailed (600): ..." or "InvalidTopic (300): ..."
        System.err.println("publish failed: ${e.message}")
        exitProcess(1)
    }
}
