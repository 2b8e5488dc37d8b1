// The conformance testee for the Kotlin SDK (dev.blipmq:blipmq).
//
// Speaks the testee contract of conformance-tests/README.md: one JSON
// request per stdin line, one reply per request on stdout, in order; logs on
// stderr. Requests are handled one at a time with the SDK's suspend API. It
// never judges anything. At the end of stdin every client is closed and the
// process exits 0.
package dev.blipmq.testee

import dev.blipmq.BlipMQ
import dev.blipmq.BlipMQException
import dev.blipmq.Client
import dev.blipmq.ClientEvent
import dev.blipmq.Header
import dev.blipmq.Message
import dev.blipmq.Qos
import dev.blipmq.Subscription
import java.io.FileDescriptor
import java.io.FileOutputStream
import java.util.Base64
import kotlin.time.Duration.Companion.milliseconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeoutOrNull
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonArray
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.put

private const val INVALID_ARGUMENT = 301
private const val CLIENT_CLOSED = 603

/** The longest `receive` wait honoured (about 49 days). */
private const val MAX_RECEIVE_WAIT_MS = 0xFFFF_FFFFL

/** An `err` reply: a wire code and a message. */
private class Failure(val code: Int, override val message: String) : Exception(message)

private fun invalid(message: String) = Failure(INVALID_ARGUMENT, message)

/** A request's `args`; a missing or mistyped argument answers 301. */
private class Args(private val args: JsonObject) {
    fun optStr(name: String): String? = when (val value = args[name]) {
        null, JsonNull -> null
        is JsonPrimitive -> if (value.isString) value.content else throw invalid("`$name` must be a string")
        else -> throw invalid("`$name` must be a string")
    }

    fun str(name: String): String = optStr(name) ?: throw invalid("missing `$name`")

    fun optStrList(name: String): List<String>? = when (val value = args[name]) {
        null, JsonNull -> null
        is JsonArray -> value.map { item ->
            (item as? JsonPrimitive)?.takeIf { it.isString }?.content ?: throw invalid("`$name` must be a list of strings")
        }
        else -> throw invalid("`$name` must be a list of strings")
    }

    fun optUint(name: String): Long? = when (val value = args[name]) {
        null, JsonNull -> null
        is JsonPrimitive -> value.takeUnless { it.isString }?.content?.toLongOrNull()?.takeIf { it >= 0 }
            ?: throw invalid("`$name` must be a non-negative integer")
        else -> throw invalid("`$name` must be a non-negative integer")
    }

    fun uint(name: String): Long = optUint(name) ?: throw invalid("missing `$name`")

    fun flag(name: String): Boolean = when (val value = args[name]) {
        null, JsonNull -> false
        is JsonPrimitive -> value.takeUnless { it.isString }?.content?.toBooleanStrictOrNull()
            ?: throw invalid("`$name` must be true or false")
        else -> throw invalid("`$name` must be true or false")
    }

    fun bytes(name: String): ByteArray = decode(str(name), name)

    fun qos(): Qos = when (val qos = optUint("qos")) {
        null, 0L -> Qos.AT_MOST_ONCE
        1L -> Qos.AT_LEAST_ONCE
        else -> throw invalid("qos $qos is not 0 or 1")
    }

    fun headers(): List<Header> = when (val entries = args["headers"]) {
        null, JsonNull -> emptyList()
        is JsonArray -> entries.map { entry ->
            val header = Args(entry as? JsonObject ?: throw invalid("`headers` must be a list of {key, value}"))
            Header(header.str("key"), header.bytes("value"))
        }
        else -> throw invalid("`headers` must be a list of {key, value}")
    }
}

private fun decode(text: String, name: String): ByteArray =
    try {
        Base64.getDecoder().decode(text)
    } catch (e: IllegalArgumentException) {
        throw invalid("`$name` is not base64: ${e.message}")
    }

private fun encode(bytes: ByteArray): String = Base64.getEncoder().encodeToString(bytes)

/**
 * What a subscription's `onDrop` has been told since the current `receive`
 * began: the SDK calls it on the receiving coroutine, in order with the
 * messages.
 */
private class DropTally {
    var count = 0L

    /** Set by a `receive` to hear of each report (it may have what it wants). */
    var onReport: (() -> Unit)? = null

    fun add(dropped: Long) {
        count += dropped
        onReport?.invoke()
    }
}

private data class Subscribed(val subscription: Subscription, val drops: DropTally)

private class Actor(val client: Client, scope: CoroutineScope) {
    val subscriptions = HashMap<String, Subscribed>()

    /** Received QoS 1 messages not acked yet: (sub, delivery id) -> message. */
    val unacked = HashMap<Pair<String, ULong>, Message>()

    /** An event a timed-out wait took from [events] before it was cancelled. */
    val undelivered = ArrayDeque<JsonObject>()

    /** The client's events from the connect on, for `events` (failed reconnect attempts left out). */
    val events = Channel<JsonObject>(Channel.UNLIMITED) { undelivered.addLast(it) }

    private val collector: Job = client.events().let { flow ->
        scope.launch {
            flow.collect { event ->
                val json = when (event) {
                    is ClientEvent.ServerError -> buildJsonObject {
                        put("kind", "server_error")
                        put("code", event.error.code)
                    }
                    is ClientEvent.Disconnected -> buildJsonObject { put("kind", "disconnected") }
                    is ClientEvent.Reconnected -> buildJsonObject { put("kind", "reconnected") }
                    ClientEvent.Closed -> buildJsonObject { put("kind", "closed") }
                    is ClientEvent.ReconnectFailed -> null
                }
                if (json != null) events.send(json)
            }
        }
    }

    fun subscription(name: String): Subscribed = subscriptions[name] ?: throw invalid("no subscription `$name`")

    suspend fun close() {
        client.closeAndWait()
        subscriptions.values.forEach { it.subscription.close() }
        collector.cancel()
    }
}

private class Testee(private val scope: CoroutineScope) {
    private val actors = HashMap<String, Actor>()

    /** The reply fields for one request: `ok`, `err` or `skipped`. */
    suspend fun handle(op: String, actorName: String?, args: Args): Pair<String, JsonElement> {
        if (op == "send_raw" || op == "read_frame") {
            return "skipped" to JsonPrimitive("`$op` needs raw protocol access, which the Kotlin SDK does not expose")
        }
        if (op !in OPERATIONS) return "skipped" to JsonPrimitive("unknown op `$op`")
        if (op == "hello") return "ok" to hello()
        val name = actorName ?: throw invalid("`$op` needs an `actor`")
        val result = when (op) {
            "connect" -> connect(name, args)
            "close" -> {
                val actor = actors.remove(name) ?: throw noClient(name)
                actor.close()
                JsonObject(emptyMap())
            }
            else -> {
                val actor = actors[name] ?: throw noClient(name)
                when (op) {
                    "publish" -> publish(actor, args)
                    "subscribe" -> subscribe(actor, args)
                    "unsubscribe" -> unsubscribe(actor, args)
                    "receive" -> receive(actor, args)
                    "ack" -> ack(actor, args)
                    "nak", "term", "in_progress" -> settle(actor, op, args)
                    "events" -> events(actor, args)
                    else -> {
                        actor.client.flush()
                        JsonObject(emptyMap())
                    }
                }
            }
        }
        return "ok" to result
    }

    suspend fun closeAll() {
        actors.values.forEach { it.close() }
        actors.clear()
    }

    private fun noClient(name: String) = Failure(CLIENT_CLOSED, "actor `$name` has no client")

    private fun hello() = buildJsonObject {
        put("sdk", "kotlin")
        put("version", BlipMQ.VERSION)
        put("capabilities", buildJsonArray { listOf("pubsub", "headers", "qos1", "events", "addresses", "job_queue").forEach { add(JsonPrimitive(it)) } })
    }

    private suspend fun connect(name: String, args: Args): JsonObject {
        // A list of addresses to try in order, or the one broker.
        val addresses = args.optStrList("addresses") ?: listOf(args.str("addr"))
        val apiKey = args.optStr("api_key")
        val clientName = args.optStr("name")
        val capacity = args.optUint("subscription_capacity")
        actors.remove(name)?.close()
        val client = BlipMQ.connect(
            addresses,
            apiKey = apiKey,
            name = clientName,
            reconnect = args.flag("reconnect"),
            subscriptionCapacity = capacity?.coerceIn(1, Int.MAX_VALUE.toLong())?.toInt(),
        )
        actors[name] = Actor(client, scope)
        return JsonObject(emptyMap())
    }

    private suspend fun publish(actor: Actor, args: Args): JsonObject {
        val ttl = args.optUint("ttl_ms") ?: 0
        if (ttl > 0xFFFF_FFFFL) throw invalid("ttl_ms $ttl does not fit in 32 bits")
        val id = actor.client.publish(
            args.str("topic"),
            args.bytes("payload"),
            qos = args.qos(),
            ttl = ttl.milliseconds,
            headers = args.headers(),
        )
        return buildJsonObject { if (id != null) put("message_id", id.toString()) }
    }

    private suspend fun subscribe(actor: Actor, args: Args): JsonObject {
        val sub = args.str("sub")
        val drops = DropTally()
        val subscription = actor.client.subscribe(
            args.str("pattern"),
            qos = args.qos(),
            durable = args.optStr("durable"),
            group = args.optStr("group"),
            onDrop = drops::add,
            ackTimeout = args.optUint("ack_timeout_ms")?.milliseconds,
            maxDeliveries = args.optUint("max_deliveries")?.let { if (it > Int.MAX_VALUE) Int.MAX_VALUE else it.toInt() },
        )
        // A name used again names the new subscription; the old one ends.
        actor.subscriptions.put(sub, Subscribed(subscription, drops))?.subscription?.close()
        return JsonObject(emptyMap())
    }

    private suspend fun unsubscribe(actor: Actor, args: Args): JsonObject {
        val sub = args.str("sub")
        val subscription = actor.subscription(sub).subscription
        actor.subscriptions.remove(sub)
        subscription.unsubscribe()
        return JsonObject(emptyMap())
    }

    /**
     * Up to `count` messages within `timeout_ms` in all; what is already
     * buffered is returned even once the time is up, and a message is taken
     * only when returned. Never acks (capability `qos1`). `dropped` is what
     * the subscription's `onDrop` was told meanwhile; with `count_dropped`
     * it counts towards `count`, and the receive ends as soon as the two
     * make `count`, even while it waits (it is cancelled from `onDrop`,
     * which the SDK allows without losing a message).
     */
    private suspend fun receive(actor: Actor, args: Args): JsonObject {
        val sub = args.str("sub")
        val (subscription, drops) = actor.subscription(sub)
        val count = args.uint("count")
        val countDropped = args.flag("count_dropped")
        val deadline = System.nanoTime() + args.uint("timeout_ms").coerceAtMost(MAX_RECEIVE_WAIT_MS) * 1_000_000
        val messages = mutableListOf<JsonObject>()
        val counted = { messages.size + if (countDropped) drops.count else 0 }
        drops.count = 0
        try {
            coroutineScope {
                val reader = launch {
                    while (counted() < count) {
                        val remaining = ((deadline - System.nanoTime()) / 1_000_000).coerceAtLeast(0)
                        val max = (count - counted()).coerceAtMost(Int.MAX_VALUE.toLong()).toInt()
                        // null: the subscription ended and its buffer is drained.
                        val batch = subscription.nextBatch(max, remaining.milliseconds) ?: break
                        for (message in batch) {
                            messages += describe(message)
                            if (message.deliveryId != 0uL) actor.unacked[sub to message.deliveryId] = message
                        }
                        if (batch.isEmpty()) break
                    }
                }
                if (countDropped) drops.onReport = { if (counted() >= count) reader.cancel() }
                reader.join()
            }
        } finally {
            drops.onReport = null
        }
        return buildJsonObject {
            put("messages", JsonArray(messages))
            put("dropped", drops.count)
            put("dropped_total", subscription.dropped)
        }
    }

    private fun describe(message: Message) = buildJsonObject {
        put("topic", message.topic)
        put("payload", encode(message.payload))
        put("id", message.id.toString())
        put("timestamp_ms", message.timestampMs.toString())
        put("delivery_count", message.deliveryCount)
        put("delivery_id", message.deliveryId.toString())
        put(
            "headers",
            JsonArray(message.headers.map { buildJsonObject { put("key", it.key); put("value", encode(it.value)) } }),
        )
        put("dropped_before", message.droppedBefore)
    }

    /** The events since the connect or the last `events`, up to the first of kind `until` or until `timeout_ms` passes. */
    private suspend fun events(actor: Actor, args: Args): JsonObject {
        val until = args.str("until")
        val timeout = args.uint("timeout_ms").coerceAtMost(MAX_RECEIVE_WAIT_MS)
        val taken = ArrayList<JsonObject>()
        withTimeoutOrNull(timeout.milliseconds) {
            while (true) {
                val event = actor.undelivered.removeFirstOrNull() ?: actor.events.receive()
                taken += event
                if ((event["kind"] as JsonPrimitive).content == until) break
            }
        }
        return buildJsonObject { put("events", JsonArray(taken)) }
    }

    private suspend fun ack(actor: Actor, args: Args): JsonObject {
        val sub = args.str("sub")
        val deliveryId = args.str("delivery_id").toULongOrNull()
            ?: throw invalid("`delivery_id` must be a decimal string")
        val message = actor.unacked.remove(sub to deliveryId)
            ?: throw invalid("no unacked delivery $deliveryId on `$sub`")
        message.ack()
        return JsonObject(emptyMap())
    }

    /**
     * `nak` (with `delay_ms`), `term` or `in_progress` of a message `receive`
     * returned. After a nak or a term the message is not this consumer's any
     * more (a redelivery comes back through `receive`); in progress, it still is.
     */
    private suspend fun settle(actor: Actor, op: String, args: Args): JsonObject {
        val sub = args.str("sub")
        val deliveryId = args.str("delivery_id").toULongOrNull()
            ?: throw invalid("`delivery_id` must be a decimal string")
        val key = sub to deliveryId
        val message = (if (op == "in_progress") actor.unacked[key] else actor.unacked.remove(key))
            ?: throw invalid("no unacked delivery $deliveryId on `$sub`")
        when (op) {
            "nak" -> message.nak((args.optUint("delay_ms") ?: 0L).milliseconds)
            "term" -> message.term()
            else -> message.inProgress()
        }
        return JsonObject(emptyMap())
    }

    companion object {
        val OPERATIONS = setOf(
            "hello", "connect", "close", "publish", "subscribe", "unsubscribe", "receive", "ack",
            "nak", "term", "in_progress", "flush", "events",
        )
    }
}

private fun log(text: String) = System.err.println("blipmq-testee-kotlin: $text")

fun main(): Unit = runBlocking {
    val testee = Testee(this)
    val input = System.`in`.bufferedReader()
    val output = FileOutputStream(FileDescriptor.out).bufferedWriter()
    try {
        while (true) {
            val line = withContext(Dispatchers.IO) { input.readLine() } ?: break
            if (line.isBlank()) continue
            var id: JsonElement = JsonNull
            val reply: Pair<String, JsonElement> = try {
                val request = Json.parseToJsonElement(line) as? JsonObject ?: throw invalid("a request is a JSON object")
                id = request["id"] ?: JsonNull
                if (!(id is JsonPrimitive && (id as JsonPrimitive).isString)) throw invalid("`id` must be a string")
                val op = (request["op"] as? JsonPrimitive)?.takeIf { it.isString }?.content ?: throw invalid("`op` must be a string")
                val actor = (request["actor"] as? JsonPrimitive)?.takeIf { it.isString }?.content
                val args = when (val a = request["args"]) {
                    null, JsonNull -> JsonObject(emptyMap())
                    is JsonObject -> a
                    else -> throw invalid("`args` must be an object")
                }
                testee.handle(op, actor, Args(args))
            } catch (e: BlipMQException) {
                // The SDK's own errors name their class, which the runner checks.
                "err" to error(e.code, e.detail, e::class.simpleName)
            } catch (e: Failure) {
                "err" to error(e.code, e.message)
            } catch (e: kotlinx.serialization.SerializationException) {
                "err" to error(INVALID_ARGUMENT, "not JSON: ${e.message}")
            }
            if (reply.first == "err") log("$id ${reply.second}")
            output.write(JsonObject(mapOf("id" to id, reply)).toString())
            output.newLine()
            output.flush()
        }
    } finally {
        testee.closeAll()
    }
}

private fun error(code: Int, message: String, errorClass: String? = null) = buildJsonObject {
    put("code", code)
    put("message", message)
    if (errorClass != null) put("class", errorClass)
}
