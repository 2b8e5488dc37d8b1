// Hand-written, unlike the generated BlipMQ.swift: the Swift SDK's own
// surface over the generated types, as the Kotlin SDK is over the same
// library. `Client.connect` returns a `Client` whose methods are `async`
// and throw `BlipMQError` (typed: `kind` per wire code); a `Subscription`
// is an `AsyncSequence` of messages (`for try await`-free: it ends, it does
// not fail), with discards passed to `onDrop` (see Subscription.swift).
//
//     let client = try await Client.connect("127.0.0.1:7878")
//     let orders = try await client.subscribe("orders.*")
//     try await client.publish("orders.created", "order #1")
//     for await message in orders { print(message.topic, message.payload) }
//
// Not compiled on this project's machines (no Swift toolchain): kept to the
// generated API's types by reading, as the README says.

import Foundation

extension Client {
    /// Connect to the broker at `addr` (`host:port`, or `tls://host:port`);
    /// returns once the handshake is done. `apiKey` is needed when the
    /// broker has users. `connectTimeout` (default 5 s) bounds reaching the
    /// broker and the handshake, `requestTimeout` (default 10 s) the wait for
    /// an answer. With `reconnect` (the default) a lost connection is made
    /// again with backoff and subscriptions renewed. `tls` speaks TLS (a
    /// CA, a client certificate, a server name); every TLS failure is a
    /// `BlipMQError` of kind `.connect` (600) saying why. `addr` may list
    /// several addresses separated by commas (see the overload taking an
    /// array).
    public static func connect(
        _ addr: String,
        apiKey: String? = nil,
        name: String? = nil,
        reconnect: Bool = true,
        connectTimeout: TimeInterval? = nil,
        requestTimeout: TimeInterval? = nil,
        subscriptionCapacity: UInt32? = nil,
        tls: TlsOptions? = nil
    ) async throws -> Client {
        try await connect(
            [addr], apiKey: apiKey, name: name, reconnect: reconnect,
            connectTimeout: connectTimeout, requestTimeout: requestTimeout,
            subscriptionCapacity: subscriptionCapacity, tls: tls)
    }

    /// Connect to the first of several brokers that answers: `addresses`
    /// are tried in order, and when none answers the error names each
    /// one's failure. After a lost connection the client tries them in turn
    /// again, from the one it was connected to, after a random wait up to
    /// its backoff. The other parameters are those of the overload taking
    /// one address.
    public static func connect(
        _ addresses: [String],
        apiKey: String? = nil,
        name: String? = nil,
        reconnect: Bool = true,
        connectTimeout: TimeInterval? = nil,
        requestTimeout: TimeInterval? = nil,
        subscriptionCapacity: UInt32? = nil,
        tls: TlsOptions? = nil
    ) async throws -> Client {
        let connectTimeoutMs = try milliseconds(connectTimeout, "connectTimeout")
        let requestTimeoutMs = try milliseconds(requestTimeout, "requestTimeout")
        let options = ConnectOptions(
            apiKey: apiKey,
            name: name,
            reconnect: reconnect,
            connectTimeoutMs: connectTimeoutMs,
            requestTimeoutMs: requestTimeoutMs,
            subscriptionCapacity: subscriptionCapacity,
            tls: tls
        )
        let native = try await translated { try await nativeConnect(addresses, options) }
        return Client(native)
    }
}

/// The generated free function `connect(addresses:options:)`, under a name
/// that `Client.connect` does not shadow inside its own body.
private func nativeConnect(_ addresses: [String], _ options: ConnectOptions) async throws -> NativeClient {
    try await connect(addresses: addresses, options: options)
}

/// A connection to a broker. Every method may be called from any task.
public final class Client: @unchecked Sendable {
    /// The generated handle underneath.
    public let native: NativeClient

    public init(_ native: NativeClient) {
        self.native = native
    }

    /// Connected, reconnecting or closed.
    public var status: ConnectionStatus { native.status() }

    /// The largest payload the broker accepts.
    public var maxMessageSize: UInt64 { native.maxMessageSize() }

    /// Publish `payload` to `topic`. At `.atMostOnce` (the default) returns
    /// `nil` once the message is queued; at `.atLeastOnce` returns the
    /// broker's message id once it has stored the message. Publishes leave
    /// in call order. `ttlMs` 0 is the broker's default TTL.
    @discardableResult
    public func publish(
        _ topic: String,
        _ payload: Data,
        qos: Qos = .atMostOnce,
        ttlMs: UInt32 = 0,
        headers: [Header] = []
    ) async throws -> UInt64? {
        let options = PublishOptions(ttlMs: ttlMs, qos: qos, headers: headers)
        return try await translated {
            try await native.publish(topic: topic, payload: payload, options: options)
        }
    }

    /// Publish a UTF-8 text payload; see the other `publish`.
    @discardableResult
    public func publish(
        _ topic: String,
        _ text: String,
        qos: Qos = .atMostOnce,
        ttlMs: UInt32 = 0,
        headers: [Header] = []
    ) async throws -> UInt64? {
        try await publish(topic, Data(text.utf8), qos: qos, ttlMs: ttlMs, headers: headers)
    }

    /// Subscribe to a topic or pattern (`*` one token, `>` the rest);
    /// returns once the broker has confirmed. At `.atLeastOnce` with a
    /// `durable` name the subscription keeps messages until each is acked;
    /// members of a `group` share the messages. Each gap the broker leaves
    /// by discarding messages goes to `onDrop`, in order with the messages
    /// (a warning on standard error without one). At QoS 1, `ackTimeout`
    /// (seconds, 0.01 to 3600) and `maxDeliveries` (1 to 10000) replace the
    /// broker's defaults for this subscription; a message's `nak`, `term`
    /// and `inProgress` (on its `handle`) steer its redelivery.
    public func subscribe(
        _ pattern: String,
        qos: Qos = .atMostOnce,
        durable: String? = nil,
        group: String? = nil,
        ackTimeout: TimeInterval? = nil,
        maxDeliveries: UInt32? = nil,
        onDrop: (@Sendable (UInt64) -> Void)? = nil
    ) async throws -> Subscription {
        let options = SubscribeOptions(
            qos: qos, durable: durable, group: group,
            ackTimeoutMs: ackTimeout.map { $0 * 1000 }, maxDeliveries: maxDeliveries)
        return try await native.subscribe(pattern: pattern, options: options, onDrop: onDrop)
    }

    /// Returns once the broker has handled everything sent before.
    public func flush() async throws {
        try await translated { try await native.flush() }
    }

    /// Send what is queued and close; subscriptions end, and later calls
    /// throw `.clientClosed` (603).
    public func close() async {
        await native.shutdown()
    }
}

/// A subscription's messages, one at a time: `for await message in
/// subscription`. The sequence ends when the subscription does
/// (unsubscribe, detach, close, a connection lost for good).
extension Subscription: AsyncSequence {
    public typealias Element = ReceivedMessage

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: Subscription
        var buffered: [ReceivedMessage] = []

        public mutating func next() async -> ReceivedMessage? {
            // Messages come over in batches: one call across the library
            // boundary for up to 256 of them.
            while buffered.isEmpty {
                guard let batch = await subscription.nextBatch(max: 256, timeoutMs: nil) else {
                    return nil
                }
                buffered = batch.reversed()
            }
            return buffered.popLast()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(subscription: self)
    }
}

/// Run `body`, throwing the generated `NativeError` as the SDK's
/// `BlipMQError`.
func translated<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as NativeError {
        throw BlipMQError(error)
    }
}

/// Seconds as whole milliseconds for the generated options; `nil` stays
/// `nil`. A negative, non-finite or too long duration is `.invalidArgument`.
private func milliseconds(_ seconds: TimeInterval?, _ name: String) throws -> UInt32? {
    guard let seconds else { return nil }
    let ms = (seconds * 1000).rounded()
    guard ms.isFinite, ms >= 0, ms <= Double(UInt32.max) else {
        throw BlipMQError(
            code: 301,
            codeName: "InvalidArgument",
            detail: "\(name) must be between 0 and \(UInt32.max / 1000) seconds"
        )
    }
    return UInt32(ms)
}
