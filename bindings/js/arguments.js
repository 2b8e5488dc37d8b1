// Argument checks and the conversion of native errors, as both packages
// apply them before anything crosses into their native module.

import { BlipMQError, codedError } from './errors.js'

/**
 * A native module's failure as the BlipMQError of its code: both native
 * modules reject with an Error carrying `code` (a number) and `codeName`
 * (Node's src/error.rs, the browser's src/error.rs). Anything else (a
 * TypeError of a native argument check, a bug) passes through unchanged.
 */
export function convertError(error) {
  if (error instanceof BlipMQError || !(error instanceof Error) || typeof error.code !== 'number') return error
  return codedError(error.code, typeof error.codeName === 'string' ? error.codeName : undefined, error.message, error)
}

/** `operation()` awaited, its failure converted. */
export async function call(operation) {
  try {
    return await operation()
  } catch (error) {
    throw convertError(error)
  }
}

export const MAX_U32 = 0xffffffff

export const isTtlMs = (value) => Number.isInteger(value) && value >= 0 && value <= MAX_U32

/** A TTL in ms, or undefined; out of range is 301 InvalidArgument, as the broker would say. */
export function ttlOption(ttlMs) {
  if (ttlMs == null) return undefined
  if (!isTtlMs(ttlMs)) {
    throw codedError(301, 'InvalidArgument', `ttlMs must be a whole number of milliseconds from 0 to ${MAX_U32}, not ${ttlMs}`)
  }
  return ttlMs
}

export function qosOption(qos) {
  if (qos === undefined) return undefined
  if (!Number.isInteger(qos) || qos < 0 || qos > 255) throw new TypeError('qos must be 0 or 1')
  return qos
}

export function uint32(value, what) {
  if (value === undefined) return undefined
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new TypeError(`${what} must be an integer from 0 to ${MAX_U32}`)
  }
  return value
}

export function optionalString(value, what) {
  if (value !== undefined && typeof value !== 'string') throw new TypeError(`${what} must be a string`)
  return value
}

/**
 * A number, or undefined. Its range is judged below (a negative or
 * non-finite one by the native module, as in every SDK; bounds by the
 * broker): both answer 301 InvalidArgument.
 */
export function optionalNumber(value, what) {
  if (value !== undefined && typeof value !== 'number') throw new TypeError(`${what} must be a number`)
  return value
}

/** The delay of `message.nak({ delayMs })`, in ms (0 when not given). */
export function nakDelayMs(options) {
  return optionalNumber(options?.delayMs, 'delayMs') ?? 0
}

function optionalFunction(value, what) {
  if (value != null && typeof value !== 'function') throw new TypeError(`${what} must be a function`)
  return value ?? undefined
}

/**
 * The broker addresses `connect` takes, checked: one address (which may
 * list several separated by commas) or an array of them, tried in order.
 */
export function addressList(value, what) {
  if (typeof value === 'string') return [value]
  if (!Array.isArray(value) || value.some((one) => typeof one !== 'string')) {
    throw new TypeError(`${what} must be a string or an array of strings`)
  }
  return value
}

/** The connect options both packages take, checked (each adds its own). */
export function connectOptions(options) {
  return {
    apiKey: optionalString(options.apiKey, 'apiKey'),
    name: optionalString(options.name, 'name'),
    reconnect: options.reconnect !== false,
    connectTimeoutMs: uint32(options.connectTimeoutMs, 'connectTimeoutMs'),
    requestTimeoutMs: uint32(options.requestTimeoutMs, 'requestTimeoutMs'),
    subscriptionCapacity: uint32(options.subscriptionCapacity, 'subscriptionCapacity'),
  }
}

/** The subscribe options, checked: what goes to the native module, and the callbacks. */
export function subscribeOptions(options) {
  return {
    native: {
      qos: qosOption(options.qos),
      durable: optionalString(options.durable, 'durable'),
      group: optionalString(options.group, 'group'),
      ackTimeoutMs: optionalNumber(options.ackTimeoutMs, 'ackTimeoutMs'),
      maxDeliveries: uint32(options.maxDeliveries, 'maxDeliveries'),
    },
    onMessage: optionalFunction(options.onMessage, 'onMessage'),
    onError: optionalFunction(options.onError, 'onError'),
    onDrop: optionalFunction(options.onDrop, 'onDrop'),
  }
}
