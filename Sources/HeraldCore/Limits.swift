import DequeModule
import Synchronization

/// Sizes of the API's fields (answered 4000 naming the field past them), defined once.
public enum FieldLimits {
    /// Client IDs are at most 128 characters (API.md). A longer value is answered 4001 like any
    /// other foreign ID up to this size, and 4000 past it; records keep only a prefix of it.
    public static let clientIdBytes = 1_024
    /// What trace and journal records keep of a raw client ID the fabric did not issue.
    public static let recordedClientIdBytes = 128
    public static let clientIdsPerSend = 1_000
    public static let groupNameBytes = 256
    public static let userIdBytes = 256
    public static let extendBytes = 4_096
    public static let secretBytes = 1_024
    public static let idempotencyKeyBytes = 128
    /// Groups one client may be bound to.
    public static let groupsPerClient = 256
}

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
/// returns the first answer and sends nothing again. Concurrent repeats wait for the first. A
/// repeat whose request differs (another `fingerprint`) is refused rather than answered with
/// another request's result. Bounded by entries and by the bytes its keys and answers hold.
public actor IdempotencyCache<Answer: Sendable> {
    /// What a call with a key gets.
    public enum Outcome: Sendable {
        case answered(Answer)
        /// The key was used within the window for a different request.
        case conflict
    }

    struct Entry {
        var task: Task<Answer, Never>
        var storedAt: Int64
        var fingerprint: [UInt8]
        var bytes: Int
    }

    private let ttl: Int64
    private let capacity: Int
    private let capacityBytes: Int
    private let weight: @Sendable (Answer) -> Int
    /// Keyed by bytes: an Idempotency-Key is an identifier (see `ExactString`).
    private var entries: [ExactString: Entry] = [:]
    private var storedBytes = 0
    /// Insertion order with the time of each insertion; a key stored again leaves a stale
    /// record behind, which eviction recognises by its time and skips.
    private var order = Deque<(key: ExactString, storedAt: Int64)>()

    public init(
        ttlMillis: Int64 = 600_000, capacity: Int = 100_000, capacityBytes: Int = 64 << 20,
        weight: @escaping @Sendable (Answer) -> Int = { _ in 0 }
    ) {
        self.ttl = ttlMillis
        self.capacity = capacity
        self.capacityBytes = capacityBytes
        self.weight = weight
    }

    public var count: Int { entries.count }
    public var bytes: Int { storedBytes }

    /// Answers the remembered answer for `key`, or runs `work` once and remembers its answer.
    /// Repeats that arrive while `work` runs share its answer. An answer `keep` refuses (one worth
    /// retrying, like "the fabric is unavailable") is forgotten once given, so a retry runs again.
    public func answer(
        for key: String, fingerprint: [UInt8] = [], now: Int64 = Clock.nowMillis(),
        keep: @Sendable (Answer) -> Bool = { _ in true },
        work: @escaping @Sendable () async -> Answer
    ) async -> Outcome {
        let key = ExactString(key)
        if let entry = entries[key], now - entry.storedAt < ttl {
            guard entry.fingerprint == fingerprint else { return .conflict }
            return .answered(await entry.task.value)
        }
        let task = Task { await work() }
        let keyBytes = key.value.utf8.count + fingerprint.count + 64
        if let old = entries[key] { storedBytes -= old.bytes }
        entries[key] = Entry(task: task, storedAt: now, fingerprint: fingerprint, bytes: keyBytes)
        storedBytes += keyBytes
        order.append((key, now))
        evict(now: now)
        let answer = await task.value
        // Only this call's own entry is dropped or weighed, not one stored for the key since.
        if let entry = entries[key], entry.task == task {
            if !keep(answer) {
                entries[key] = nil
                storedBytes -= entry.bytes
            } else {
                let answerBytes = weight(answer)
                entries[key]?.bytes += answerBytes
                storedBytes += answerBytes
                evict(now: now)
            }
        }
        return .answered(answer)
    }

    /// The plain answer (no fingerprint): for callers that never reuse keys across requests.
    public func answer(
        for key: String, now: Int64 = Clock.nowMillis(), keep: @Sendable (Answer) -> Bool = { _ in true },
        work: @escaping @Sendable () async -> Answer
    ) async -> Answer {
        switch await answer(for: key, fingerprint: [], now: now, keep: keep, work: work) {
        case .answered(let answer): return answer
        case .conflict: return await work()  // unreachable: every call has the same fingerprint
        }
    }

    private func evict(now: Int64) {
        while let oldest = order.first {
            guard let entry = entries[oldest.key], entry.storedAt == oldest.storedAt else {
                order.removeFirst()  // stale: the key was stored again later
                continue
            }
            guard entries.count > capacity || storedBytes > capacityBytes || now - entry.storedAt >= ttl else { break }
            order.removeFirst()
            entries[oldest.key] = nil
            storedBytes -= entry.bytes
        }
    }
}
