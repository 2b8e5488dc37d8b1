package dev.blipmq

import dev.blipmq.ffi.NativeException

// Calls into the generated layer, with its one error record turned into the
// public BlipMQException subclass of its code (Errors.kt, generated from the
// protocol's error table).

/** The public exception for the generated one, keeping it as the cause. */
internal fun NativeException.toPublic(): BlipMQException = when (this) {
    is NativeException.Failed -> BlipMQException.of(code.toInt(), codeName, detail, this)
}

/** 301 InvalidArgument, for an argument this layer cannot pass on. */
internal fun invalidArgument(detail: String): BlipMQException = BlipMQException.of(301, "InvalidArgument", detail)

/** Run a call into the native layer, raising its errors as [BlipMQException]s. */
internal inline fun <T> native(call: () -> T): T =
    try {
        call()
    } catch (e: NativeException) {
        throw e.toPublic()
    }
