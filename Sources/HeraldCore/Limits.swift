import DequeModule
import Synchronization

/// A token bucket per system: `rate` requests a second, bursts up to `rate`.
public final class RateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var updatedAt: Int64
    }

    private let rate: Double
    private let buckets = Mutex<[String: Bucket]>([:])

    /// `rate` 0 turns limiting off.
    public init(perSecond rate: Int) {
        self.rate = Double(rate)
    }

    public func allow(_ key: String, now: Int64 = Clock.nowMillis()) -> Bool {
        guard rate > 0 else { return true }
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: rate, updatedAt: now)
            bucket.tokens = min(rate, bucket.tokens + Double(now - bucket.updatedAt) * rate / 1000)
            bucket.updatedAt = now
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[key] = bucket
            return allowed
        }
    }
}

/// Remembers the answers to sends made with an `Idempotency-Key` for a while, so a repeat
/// returns the first answer and sends nothing again. Concurrent repeats wait for the first.
public actor IdempotencyCache<Answer: Sendable> {
    struct Entry {
        var task: Task<Answer, Never>
        var storedAt: Int64
    }

    private let ttl: Int64
    private let capacity: Int
    private var entries: [String: Entry] = [:]
    /// Insertion order with the time of each insertion; a key stored again leaves a stale
    /// record behind, which eviction recognises by its time and skips.
    private var order = Deque<(key: String, storedAt: Int64)>()

    public init(ttlMillis: Int64 = 600_000, capacity: Int = 100_000) {
        self.ttl = ttlMillis
        self.capacity = capacity
    }

    /// Answers the remembered answer for `key`, or runs `work` once and remembers its answer.
    /// Repeats that arrive while `work` runs share its answer. An answer `keep` refuses (one worth
    /// retrying, like "the fabric is unavailable") is forgotten once given, so a retry runs again.
    public func answer(
        for key: String, now: Int64 = Clock.nowMillis(), keep: @Sendable (Answer) -> Bool = { _ in true },
        work: @escaping @Sendable () async -> Answer
    ) async -> Answer {
        if let entry = entries[key], now - entry.storedAt < ttl {
            return await entry.task.value
        }
        let task = Task { await work() }
        entries[key] = Entry(task: task, storedAt: now)
        order.append((key, now))
        evict(now: now)
        let answer = await task.value
        // Only this call's own entry is dropped, not one stored for the key since.
        if !keep(answer), let entry = entries[key], entry.task == task {
            entries[key] = nil
        }
        return answer
    }

    private func evict(now: Int64) {
        while let oldest = order.first {
            guard let entry = entries[oldest.key], entry.storedAt == oldest.storedAt else {
                order.removeFirst()  // stale: the key was stored again later
                continue
            }
            guard entries.count > capacity || now - entry.storedAt >= ttl else { break }
            order.removeFirst()
            entries[oldest.key] = nil
        }
    }
}
