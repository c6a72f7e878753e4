import DequeModule
import HeraldCore
import NIOCore
import Synchronization

/// One WebSocket client's outbound side: a bounded queue of frames drained by a single
/// writer task. A client that lets the queue fill is closed with 1013 and its backlog is
/// dropped, so a slow reader never costs unbounded memory.
final class ClientConnection: ClientSink {
    enum Item: Sendable {
        case frame(String)
        case close(code: UInt16, reason: String)
    }

    private struct State {
        var queue = Deque<String>()
        var waiter: CheckedContinuation<Item?, Never>?
        var pendingClose: (code: UInt16, reason: String)?
        var finished = false
        var lastInbound: ContinuousClock.Instant
    }

    let serial: UInt64
    let clientId: String
    private let limit: Int
    private let channel: any Channel
    private let hardCloseAfter: TimeAmount
    private let state: Mutex<State>
    private let onSlowConsumer: @Sendable () -> Void

    init(
        serial: UInt64, clientId: String, limit: Int, channel: any Channel, hardCloseAfter: TimeAmount,
        onSlowConsumer: @escaping @Sendable () -> Void
    ) {
        self.serial = serial
        self.clientId = clientId
        self.limit = limit
        self.channel = channel
        self.hardCloseAfter = hardCloseAfter
        self.onSlowConsumer = onSlowConsumer
        self.state = Mutex(State(lastInbound: .now))
    }

    @discardableResult
    func push(_ frame: String) -> Bool {
        enum Outcome { case queued, handed(CheckedContinuation<Item?, Never>), refused, overflowed }
        let outcome: Outcome = state.withLock { state in
            guard state.pendingClose == nil, !state.finished else { return .refused }
            if let waiter = state.waiter {
                state.waiter = nil
                return .handed(waiter)
            }
            guard state.queue.count < limit else {
                state.queue.removeAll()
                state.pendingClose = (1013, "client is too slow to keep up")
                return .overflowed
            }
            state.queue.append(frame)
            return .queued
        }
        switch outcome {
        case .queued: return true
        case .handed(let waiter):
            waiter.resume(returning: .frame(frame))
            return true
        case .refused: return false
        case .overflowed:
            onSlowConsumer()
            scheduleHardClose()
            return false
        }
    }

    /// Closes after the frames already queued have been written. The reason is cut to fit
    /// a close frame (125 bytes, two of them the code).
    func close(code: UInt16, reason longReason: String) {
        var reason = longReason
        while reason.utf8.count > 123 { reason.removeLast() }
        let waiter: CheckedContinuation<Item?, Never>? = state.withLock { state in
            guard state.pendingClose == nil, !state.finished else { return nil }
            state.pendingClose = (code, reason)
            guard let waiter = state.waiter else { return nil }
            // The writer is idle, so the close is handed over now and the connection is done.
            state.waiter = nil
            state.finished = true
            return waiter
        }
        waiter?.resume(returning: .close(code: code, reason: reason))
        scheduleHardClose()
    }

    /// The next thing for the writer to do; nil once the connection is over.
    func next() async -> Item? {
        await withCheckedContinuation { continuation in
            let item: Item?? = state.withLock { state in
                if let frame = state.queue.popFirst() { return .some(.frame(frame)) }
                if state.finished { return .some(nil) }
                if let close = state.pendingClose {
                    state.finished = true
                    return .some(.close(code: close.code, reason: close.reason))
                }
                state.waiter = continuation
                return .none
            }
            if let item { continuation.resume(returning: item) }
        }
    }

    /// Ends the writer: the client went away.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            state.queue.removeAll()
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    func touch() {
        state.withLock { $0.lastInbound = .now }
    }

    var lastInbound: ContinuousClock.Instant { state.withLock { $0.lastInbound } }

    var isClosing: Bool { state.withLock { $0.pendingClose != nil || $0.finished } }

    /// If the close handshake cannot finish (a client that stopped reading), drop the socket.
    private func scheduleHardClose() {
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: hardCloseAfter) {
            channel.close(promise: nil)
        }
    }
}
