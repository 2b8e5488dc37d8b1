// Hand-written, unlike the rest of Sources/: how a Swift application hears
// of the messages the broker discarded for a subscription (full queue,
// expired TTL, memory budget). The generated `NativeSubscription` hands each
// gap over once, in a message's `droppedBefore` or a batch's `droppedAfter`;
// `Subscription` passes it to an `onDrop` closure, in order with the
// messages, and never drops it silently (a warning on standard error without
// one). Kept to the generated API's types, as the Kotlin layer does.
//
// Not compiled on this project's machines (no Swift toolchain).

import Foundation

extension NativeClient {
    /// Subscribe as `subscribe(pattern:options:)` does, with each gap in the
    /// messages passed to `onDrop` (see `Subscription`); `nil` logs a warning
    /// per gap instead. Throws `BlipMQError`.
    public func subscribe(
        pattern: String,
        options: SubscribeOptions,
        onDrop: (@Sendable (UInt64) -> Void)?
    ) async throws -> Subscription {
        do {
            let native = try await subscribe(pattern: pattern, options: options)
            return Subscription(native, onDrop: onDrop)
        } catch let error as NativeError {
            throw BlipMQError(error)
        }
    }
}

/// Messages matching a pattern, with the gaps the broker left by discarding
/// some: each gap is passed to `onDrop` once, in order with the messages —
/// before the batch holding the message after it is returned, or, when no
/// message has followed yet, as soon as the broker reports it while
/// `nextBatch` waits (which then waits on: a gap is not a timeout). A gap
/// after the last message a call returned is passed at the start of the next
/// call, after the caller has seen those messages. `dropped` is the running
/// total.
public final class Subscription: @unchecked Sendable {
    /// The generated handle underneath.
    public let native: NativeSubscription
    private let onDrop: @Sendable (UInt64) -> Void
    /// Guards `pendingGap` (touched only in the synchronous helpers below).
    private let lock = NSLock()
    /// A gap after the last message returned, with none after it yet.
    private var pendingGap: UInt64 = 0

    /// `native` with its gaps passed to `onDrop`, or logged as warnings when it is `nil`.
    public init(_ native: NativeSubscription, onDrop: (@Sendable (UInt64) -> Void)? = nil) {
        self.native = native
        let pattern = native.pattern()
        self.onDrop = onDrop ?? { count in warnOfDrops(count, pattern: pattern) }
    }

    /// The topic or pattern it was made with.
    public var pattern: String { native.pattern() }

    /// How many messages the broker has reported discarded for this
    /// subscription so far (counted as each report arrives).
    public var dropped: UInt64 { native.dropped() }

    /// The next message, waiting at most `timeoutMs` (for ever when `nil`):
    /// `nil` when the time passes or once the subscription has ended.
    public func next(timeoutMs: UInt32? = nil) async -> ReceivedMessage? {
        await nextBatch(max: 1, timeoutMs: timeoutMs)?.first
    }

    /// Wait for one message (at most `timeoutMs`), then take up to `max` in
    /// all from what is already buffered: `[]` when the time passes, `nil`
    /// once the subscription has ended.
    public func nextBatch(max: UInt32, timeoutMs: UInt32? = nil) async -> [ReceivedMessage]? {
        report(takePendingGap())
        let deadline = timeoutMs.map { DispatchTime.now().uptimeNanoseconds + UInt64($0) * 1_000_000 }
        var wait = timeoutMs
        while true {
            guard let batch = await native.nextBatch(max: max, timeoutMs: wait) else { return nil }
            if batch.messages.isEmpty {
                // The time passed, or a gap with no message after it.
                if batch.droppedAfter == 0 { return [] }
                report(batch.droppedAfter)
                if let deadline {
                    let now = DispatchTime.now().uptimeNanoseconds
                    wait = UInt32((deadline > now ? deadline - now : 0) / 1_000_000)
                }
                continue
            }
            for message in batch.messages {
                report(message.droppedBefore)
            }
            addPendingGap(batch.droppedAfter)
            return batch.messages
        }
    }

    /// Stop the subscription and wait for the broker's confirm; buffered
    /// messages are discarded and a durable subscription is deleted.
    public func unsubscribe() async throws {
        do {
            try await native.unsubscribe()
        } catch let error as NativeError {
            throw BlipMQError(error)
        }
    }

    /// Stop receiving without deleting anything: a durable subscription
    /// keeps its unacked messages for the next subscribe with its name.
    public func detach() {
        native.detach()
    }

    private func report(_ count: UInt64) {
        if count > 0 { onDrop(count) }
    }

    private func takePendingGap() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        let gap = pendingGap
        pendingGap = 0
        return gap
    }

    private func addPendingGap(_ count: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        pendingGap += count
    }
}

/// The `onDrop` of a subscription made without one: no discard is silent.
private func warnOfDrops(_ count: UInt64, pattern: String) {
    let line = "blipmq: warning: the broker discarded \(count) message(s) for subscription '\(pattern)'"
        + " (full queue, expired TTL or memory budget); pass onDrop to subscribe to handle discards\n"
    FileHandle.standardError.write(Data(line.utf8))
}
