// Print the messages published to a pattern:
//
//     mvn -q compile exec:java -Dexec.mainClass=dev.blipmq.examples.SubscriberKt \
//         -Dexec.args="127.0.0.1:7878 'orders.>' 3"
//
// Arguments: broker address, pattern, and how many messages to wait for
// (default: forever). Set BLIPMQ_API_KEY when the broker requires a key.
package dev.blipmq.examples

import dev.blipmq.BlipMQ
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.runBlocking

fun main(args: Array<String>): Unit = runBlocking {
    val addr = args.getOrElse(0) { "127.0.0.1:7878" }
    val pattern = args.getOrElse(1) { "orders.>" }
    val count = args.getOrNull(2)?.toInt() ?: Int.MAX_VALUE
    BlipMQ.connect(addr, apiKey = System.getenv("BLIPMQ_API_KEY")).use { client ->
        val orders = client.subscribe(pattern)
        println("subscribed to $pattern")
        // `take` ends the flow after `count` messages, which unsubscribes.
        orders.take(count).collect { message ->
            val tenant = message.header("x-tenant")?.decodeToString() ?: "-"
            println("${message.topic} #${message.id} tenant=$tenant: ${message.payloadText()}")
        }
    }
}
