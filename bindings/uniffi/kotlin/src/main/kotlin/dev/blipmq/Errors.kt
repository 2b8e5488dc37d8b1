package dev.blipmq

import dev.blipmq.ffi.BlipMqException

/**
 * Every error this SDK raises for a failed operation. [code] is the wire code
 * from the protocol's error table (`schema/SPEC.md`), whether the broker
 * refused something or the client gave up (codes 6xx); [codeName] is its
 * stable name (e.g. `"InvalidTopic"`) and [detail] the human-readable
 * reason (from the broker when it refused).
 *
 * The subclass follows the code; codes without a subclass of their own
 * (e.g. 305 DurableInUse, 405 StorageFull) are [Other].
 */
public sealed class BlipMQException(
    public val code: Int,
    public val codeName: String,
    public val detail: String,
    cause: Throwable? = null,
) : Exception("$codeName ($code): $detail", cause) {
    /** 200: the broker refused the API key. */
    public class AuthFailed internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 300: a topic or pattern breaks the topic rules. */
    public class InvalidTopic internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 301: an argument is out of range. */
    public class InvalidArgument internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 303: the broker does not offer this QoS (QoS 1 subscriptions need a durable name). */
    public class UnsupportedQos internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 304: a header key breaks the header rules. */
    public class InvalidHeader internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 400: the payload is over the broker's limit; nothing was sent. */
    public class MessageTooLarge internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 404: too many headers, a key too long or too many header bytes. */
    public class HeadersTooLarge internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 600: the broker could not be reached. */
    public class ConnectFailed internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 601: no answer in time. */
    public class Timeout internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 602: the connection closed before the answer came. */
    public class ConnectionClosed internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** 603: the client is closed. */
    public class ClientClosed internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)

    /** Any other code of the table; see [code]. */
    public class Other internal constructor(code: Int, name: String, detail: String, cause: Throwable?) :
        BlipMQException(code, name, detail, cause)
}

/** The public exception for the generated one, keeping it as the cause. */
internal fun BlipMqException.toPublic(): BlipMQException = when (this) {
    is BlipMqException.AuthFailed -> BlipMQException.AuthFailed(code.toInt(), codeName, detail, this)
    is BlipMqException.InvalidTopic -> BlipMQException.InvalidTopic(code.toInt(), codeName, detail, this)
    is BlipMqException.InvalidArgument -> BlipMQException.InvalidArgument(code.toInt(), codeName, detail, this)
    is BlipMqException.UnsupportedQos -> BlipMQException.UnsupportedQos(code.toInt(), codeName, detail, this)
    is BlipMqException.InvalidHeader -> BlipMQException.InvalidHeader(code.toInt(), codeName, detail, this)
    is BlipMqException.MessageTooLarge -> BlipMQException.MessageTooLarge(code.toInt(), codeName, detail, this)
    is BlipMqException.HeadersTooLarge -> BlipMQException.HeadersTooLarge(code.toInt(), codeName, detail, this)
    is BlipMqException.ConnectFailed -> BlipMQException.ConnectFailed(code.toInt(), codeName, detail, this)
    is BlipMqException.Timeout -> BlipMQException.Timeout(code.toInt(), codeName, detail, this)
    is BlipMqException.ConnectionClosed -> BlipMQException.ConnectionClosed(code.toInt(), codeName, detail, this)
    is BlipMqException.ClientClosed -> BlipMQException.ClientClosed(code.toInt(), codeName, detail, this)
    is BlipMqException.Other -> BlipMQException.Other(code.toInt(), codeName, detail, this)
}

/** 301 InvalidArgument, for an argument this layer cannot pass on. */
internal fun invalidArgument(detail: String): BlipMQException =
    BlipMQException.InvalidArgument(301, "InvalidArgument", detail, null)

/** Run a call into the native layer, raising its errors as [BlipMQException]s. */
internal inline fun <T> native(call: () -> T): T =
    try {
        call()
    } catch (e: BlipMqException) {
        throw e.toPublic()
    }
