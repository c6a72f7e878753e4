import Synchronization

/// A value behind a lock, in a class so escaping closures and tasks can share it.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }

    var value: Value { mutex.withLock { $0 } }
}

/// Polls `condition` every 20 ms until it holds; a harness error naming `what` after `seconds`.
func waitUntil(_ what: String, seconds: Double, _ condition: () -> Bool) async throws {
    let deadline = MonotonicClock.nanos() + UInt64(seconds * 1e9)
    while !condition() {
        guard MonotonicClock.nanos() < deadline else { throw HarnessError("timed out after \(seconds) s waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}
