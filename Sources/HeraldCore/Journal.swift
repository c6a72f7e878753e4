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
        var sizes: [Int] = []
        var head = 0
        var bytes = 0
        var nextOffset: [String: Int64] = [:]
    }

    private let capacity: Int
    private let capacityBytes: Int
    private let state = Mutex(State())

    /// At most `capacity` records and about `capacityBytes` of them; the oldest go first.
    public init(capacity: Int = 100_000, capacityBytes: Int = 256 << 20) {
        self.capacity = max(1, capacity)
        self.capacityBytes = max(1024, capacityBytes)
    }

    public var bytes: Int { state.withLock { $0.bytes } }

    /// Roughly what a record holds in memory.
    static func approximateBytes(_ message: BusMessage) -> Int {
        var bytes = 256 + message.messageId.utf8.count + message.systemId.utf8.count + message.target.description.utf8.count
        switch message.body {
        case .push(let push): bytes += push.data.text.utf8.count + push.msg.utf8.count + push.sendUserId.utf8.count
        case .bind(let group, let userId, let extend): bytes += group.utf8.count + userId.utf8.count + extend.utf8.count
        case .unbind(let group): bytes += group.utf8.count
        case .presence(_, let info): bytes += info.clientId.utf8.count + info.userId.utf8.count + info.extend.utf8.count
        case .close: break
        }
        return bytes
    }

    public func append(_ message: BusMessage, topic: String, partition: Int32, at timestamp: Int64) -> Placement {
        state.withLock { state in
            let key = "\(topic)/\(partition)"
            let offset = state.nextOffset[key, default: 0]
            state.nextOffset[key] = offset + 1
            let placement = Placement(topic: topic, partition: partition, offset: offset)
            state.records.append(JournalRecord(placement: placement, timestamp: timestamp, message: message))
            let size = Self.approximateBytes(message)
            state.sizes.append(size)
            state.bytes += size
            while state.records.count - state.head > capacity
                || (state.bytes > capacityBytes && state.records.count - state.head > 1)
            {
                state.bytes -= state.sizes[state.head]
                state.head += 1
            }
            if state.head > capacity / 2 + 1 {
                state.records.removeFirst(state.head)
                state.sizes.removeFirst(state.head)
                state.head = 0
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
