// BlipMQ from Kotlin: publish and subscribe, then a QoS 1 publish that the
// broker confirms once it is on disk, received and acked.
//
//     mvn -q compile exec:java -Dexec.mainClass=dev.blipmq.examples.QuickstartKt \
//         -Dexec.args="127.0.0.1:7878"
package dev.blipmq.examples

import dev.blipmq.BlipMQ
import dev.blipmq.Qos
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>): Unit = runBlocking {
    BlipMQ.connect(args.getOrElse(0) { "127.0.0.1:7878" }).use { client ->
        // QoS 0: subscribe (resumes once the broker has it), publish, receive.
        client.subscribe("orders.*").use { orders ->
            client.publish("orders.created", "order #1")
            val order = checkNotNull(orders.next(10.seconds)) { "no order within 10 s" }
            println("received ${order.topic}: ${order.payloadText()}")
        }

        // QoS 1: the publish resumes once the broker has stored the message;
        // the subscriber acks it, or it is delivered again.
        client.subscribe("jobs.>", qos = Qos.AT_LEAST_ONCE).use { jobs ->
            client.publish("jobs.resize", "img-1", qos = Qos.AT_LEAST_ONCE)
            println("confirmed jobs.resize")
            val job = checkNotNull(jobs.next(10.seconds)) { "no job within 10 s" }
            job.ack()
            println("acked ${job.topic}: ${job.payloadText()}")
        }
    }
}
