import Synchronization

/// A message as the fabric carried it: where, when, and what.
public struct JournalRecord: Sendable, Hashable {
    public var placement: Placement
    /// Milliseconds since the epoch when the fabric took it.
    public var timestamp: Int64
    public var message: BusMessage

    public init(placement: Placement, timestamp: Int64, message: BusMessage) {
        self.placement = placement
        self.timestamp = timestamp
        self.message = message
    }
}

/// The standalone node's stand-in for Kafka's topics: a bounded, in-memory log of every
/// message carried, oldest dropped first, with per-partition offsets that keep counting.
public final class MessageJournal: Sendable {
    struct State {
        var records: [JournalRecord] = []
        var head = 0
        var nextOffset: [String: Int64] = [:]
    }

    private let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int = 100_000) {
        self.capacity = max(1, capacity)
    }

    public func append(_ message: BusMessage, topic: String, partition: Int32, at timestamp: Int64) -> Placement {
        state.withLock { state in
            let key = "\(topic)/\(partition)"
            let offset = state.nextOffset[key, default: 0]
            state.nextOffset[key] = offset + 1
            let placement = Placement(topic: topic, partition: partition, offset: offset)
            state.records.append(JournalRecord(placement: placement, timestamp: timestamp, message: message))
            if state.records.count - state.head > capacity {
                state.head += 1
                if state.head >= capacity {
                    state.records.removeFirst(state.head)
                    state.head = 0
                }
            }
            return placement
        }
    }

    /// The records matching `filter`, oldest first, at most `filter.limit`.
    public func records(matching filter: ReplayFilter) -> [JournalRecord] {
        state.withLock { state in
            var result: [JournalRecord] = []
            for record in state.records[state.head...] where filter.matches(record) {
                result.append(record)
                if let limit = filter.limit, result.count >= limit { break }
            }
            return result
        }
    }

    public var count: Int { state.withLock { $0.records.count - $0.head } }
}
