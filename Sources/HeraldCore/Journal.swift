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
        /// The oldest offset still kept, per partition (records before it were dropped).
        var firstKept: [String: Int64] = [:]
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
            Self.append(&state, message, topic: topic, partition: partition, at: timestamp, capacity: capacity, capacityBytes: capacityBytes)
        }
    }

    /// Appends, then hands the message to `deliver` with the cut just past it (for a node of
    /// `slot` and `epoch`), under the same lock: records reach delivery in journal order, so
    /// every cut a frame carries is exact.
    public func append(
        _ message: BusMessage, topic: String, partition: Int32, at timestamp: Int64, slot: UInt32, epoch: UInt64,
        deliver: (LogCut) -> Void
    ) -> Placement {
        state.withLock { state in
            let placement = Self.append(
                &state, message, topic: topic, partition: partition, at: timestamp, capacity: capacity, capacityBytes: capacityBytes)
            deliver(Self.cut(state, slot: slot, epoch: epoch, at: timestamp))
            return placement
        }
    }

    /// The cut after everything appended so far, for a node of `slot` and `epoch` (unicast
    /// partition `slot`, broadcast partition 0: the standalone node's two partitions).
    public func cut(slot: UInt32, epoch: UInt64) -> LogCut {
        state.withLock { Self.cut($0, slot: slot, epoch: epoch, at: $0.records.last?.timestamp ?? 0) }
    }

    /// Runs `attach` under the append lock and answers the cut it ran at, as of now (a new
    /// connection's first session `pos`: nothing before it is for the connection).
    public func join(slot: UInt32, epoch: UInt64, _ attach: () -> Void) -> LogCut {
        state.withLock { state in
            attach()
            return Self.cut(state, slot: slot, epoch: epoch, at: Clock.nowMillis())
        }
    }

    static func cut(_ state: State, slot: UInt32, epoch: UInt64, at: Int64) -> LogCut {
        LogCut(
            slot: slot, epoch: epoch, unicast: state.nextOffset["\(Topics.unicast)/\(slot)", default: 0],
            broadcast: [state.nextOffset["\(Topics.broadcast)/0", default: 0]], at: at)
    }

    public enum Recovery: Sendable {
        /// The records after the cut that matched, oldest first, each with the cut just past it.
        case records([(record: JournalRecord, cut: LogCut)])
        /// More than the limit matched.
        case tooMany
        /// Records after the cut were dropped already (or the cut is from another epoch).
        case notKept
    }

    /// Under the append lock: runs `attach` (the new connection joins its groups, so what
    /// follows reaches it live), then collects what `matches` after `since` up to this moment.
    /// Nothing is both recovered and live, nothing neither.
    public func recover(
        since: LogCut, slot: UInt32, epoch: UInt64, limits: ResumeLimits, matching: (JournalRecord) -> Bool, attach: () -> Void
    ) -> Recovery {
        state.withLock { state in
            attach()
            let unicastKey = "\(Topics.unicast)/\(slot)"
            let broadcastKey = "\(Topics.broadcast)/0"
            guard since.slot == slot, since.epoch == epoch, since.broadcast.count == 1,
                since.unicast <= state.nextOffset[unicastKey, default: 0],
                since.broadcast[0] <= state.nextOffset[broadcastKey, default: 0],
                state.firstKept[unicastKey, default: 0] <= since.unicast,
                state.firstKept[broadcastKey, default: 0] <= since.broadcast[0]
            else { return .notKept }
            var cut = since
            var found: [(record: JournalRecord, cut: LogCut)] = []
            var bytes = 0
            for record in state.records[state.head...] {
                let p = record.placement
                let after: Bool
                switch p.topic {
                case Topics.unicast: after = p.partition == Int32(bitPattern: slot) && p.offset >= since.unicast
                case Topics.broadcast: after = p.partition == 0 && p.offset >= since.broadcast[0]
                default: after = false
                }
                guard after else { continue }
                cut.advance(past: p, at: record.timestamp, unicastTopic: Topics.unicast, broadcastTopic: Topics.broadcast)
                guard matching(record) else { continue }
                bytes += ResumeRecovery.size(of: record.message)
                if found.count == limits.maxMessages || bytes > limits.maxBytes { return .tooMany }
                found.append((record, cut))
            }
            return .records(found)
        }
    }

    private static func append(
        _ state: inout State, _ message: BusMessage, topic: String, partition: Int32, at timestamp: Int64, capacity: Int,
        capacityBytes: Int
    ) -> Placement {
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
            let dropped = state.records[state.head].placement
            state.firstKept["\(dropped.topic)/\(dropped.partition)"] = dropped.offset + 1
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
