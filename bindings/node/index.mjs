// The ES module entry: the same objects as the CommonJS entry (one copy of
// the native addon and of every class, whichever way the package is loaded).
import blipmq from './index.js'

export const {
  connect,
  Client,
  Subscription,
  Message,
  Headers,
  BlipMQError,
  AuthError,
  InvalidTopicError,
  InvalidArgumentError,
  UnsupportedQosError,
  InvalidHeaderError,
  MessageTooLargeError,
  ConnectionError,
  TimeoutError,
  ConnectionClosedError,
  ClientClosedError,
} = blipmq
export default blipmq
