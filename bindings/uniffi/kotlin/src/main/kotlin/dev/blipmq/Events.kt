package dev.blipmq

import dev.blipmq.ffi.NativeEvents
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow

/**
 * A change of a client's connection, from [Client.events]. The client
 * reconnects by itself (with backoff, subscribing again) after a lost
 * connection; these say what it went through.
 */
public sealed class ClientEvent {
    /**
     * Connected again, with the subscriptions sent again: whatever the client sends from now on
     * (a [Client.flush], say) reaches the broker after them. [connectionId] is the broker's id of
     * the new connection, [address] its broker address as given to [BlipMQ.connect].
     */
    public data class Reconnected(val connectionId: ULong, val address: String) : ClientEvent()

    /**
     * The connection was lost; the client reconnects with backoff unless reconnecting is off.
     * [reason] says why for people, [kind] why to act on ([DisconnectKind.BROKER_CLOSED],
     * [DisconnectKind.IO] or [DisconnectKind.PROTOCOL]); [code] is the wire code that goes with it,
     * the one calls cut short by the disconnect fail with (100 `MalformedFrame` for `PROTOCOL`,
     * else 602 `ConnectionClosed`); [ioKind], for `IO`, is the I/O error's kind in snake case
     * (`connection_reset`, `timed_out`, ...).
     */
    public data class Disconnected(
        val reason: String,
        val kind: DisconnectKind,
        val code: Int,
        val ioKind: String?,
    ) : ClientEvent()

    /** Reconnect attempt [attempt] (from 1) failed; the next follows after a backoff. */
    public data class ReconnectFailed(val attempt: Int, val error: String) : ClientEvent()

    /** The broker sent an error that answers no call, e.g. `ShuttingDown` before it stops. */
    public data class ServerError(val error: BlipMQException) : ClientEvent()

    /** The client has closed: the last event. */
    public data object Closed : ClientEvent()
}

/**
 * What ended a connection: the broker closed it (a restart, a limit, an unanswered keepalive),
 * reading or writing failed, or the broker sent bytes that are not frames.
 */
public typealias DisconnectKind = dev.blipmq.ffi.DisconnectKind

/** The events of [native] as a [Flow] collected at most once; it frees the handle when done. */
internal fun eventFlow(native: NativeEvents): Flow<ClientEvent> {
    val collected = AtomicBoolean(false)
    return flow {
        check(collected.compareAndSet(false, true)) { "the events of one events() call can be collected only once" }
        native.use {
            while (true) emit(it.next()?.toPublic() ?: break)
        }
    }
}

private fun dev.blipmq.ffi.ClientEvent.toPublic(): ClientEvent = when (this) {
    is dev.blipmq.ffi.ClientEvent.Reconnected -> ClientEvent.Reconnected(connectionId, address)
    is dev.blipmq.ffi.ClientEvent.Disconnected -> ClientEvent.Disconnected(reason, kind, code.toInt(), ioKind)
    is dev.blipmq.ffi.ClientEvent.ReconnectFailed -> ClientEvent.ReconnectFailed(attempt.toInt(), error)
    is dev.blipmq.ffi.ClientEvent.ServerError -> ClientEvent.ServerError(error.toPublic())
    dev.blipmq.ffi.ClientEvent.Closed -> ClientEvent.Closed
}
