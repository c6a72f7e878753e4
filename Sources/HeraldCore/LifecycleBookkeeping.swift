import Foundation

/// Which offsets of each partition are done with, so that the committed offset never passes
/// one that is not. Bounded by what the dispatcher holds (its queues are).
public struct CommitProgress: Sendable {
    struct Partition {
        /// Offsets handed out and not done yet, and done ones not yet below the lowest pending.
        var open: [Int64: Bool] = [:]
        var order: [Int64] = []
        var head = 0
        /// Everything before this is done.
        var next: Int64 = 0
        var committed: Int64 = -1
    }

    var partitions: [Int32: Partition] = [:]

    public init() {}

    /// Offsets tracked, every partition together (bounded: done ones below the lowest pending go).
    public var trackedOffsets: Int { partitions.values.reduce(0) { $0 + $1.order.count - $1.head } }

    public mutating func arrived(partition: Int32, offset: Int64) {
        var p = partitions[partition] ?? Partition()
        // A partition that came back from a rebalance starts over from the committed offset.
        if let last = p.order.last, offset <= last { p = Partition() }
        // Where it starts is where the group already is: nothing to commit until it moves.
        if p.order.isEmpty, p.committed < 0 {
            p.next = offset
            p.committed = offset
        }
        p.open[offset] = false
        p.order.append(offset)
        partitions[partition] = p
    }

    public mutating func finished(partition: Int32, offset: Int64) {
        guard var p = partitions[partition], p.open[offset] != nil else { return }
        p.open[offset] = true
        while p.head < p.order.count, p.open[p.order[p.head]] == true {
            p.open[p.order[p.head]] = nil
            p.next = p.order[p.head] + 1
            p.head += 1
        }
        if p.head > 1024, p.head * 2 > p.order.count {
            p.order.removeFirst(p.head)
            p.head = 0
        }
        partitions[partition] = p
    }

    /// The offsets to commit now: each partition's `next`, where it moved since the last commit.
    public mutating func committable() -> [(partition: Int32, next: Int64)] {
        var result: [(partition: Int32, next: Int64)] = []
        for (partition, p) in partitions where p.next > p.committed {
            result.append((partition, p.next))
            partitions[partition]?.committed = p.next
        }
        return result
    }
}

/// Which clients a node epoch still held: its newest snapshot, then its lifecycle events since,
/// in the order of their partition (one client's events are in one partition, keyed by its
/// system): `connected` and `resumed` add, `disconnected` removes. Applying an event twice
/// ends the same, so a start a little before the snapshot (its offsets are read first) is safe.
public struct HeldClients: Sendable {
    public struct Client: Sendable, Codable, Hashable {
        public var clientId: String
        public var systemId: String
        public var userId: String

        public init(clientId: String, systemId: String, userId: String) {
            self.clientId = clientId
            self.systemId = systemId
            self.userId = userId
        }
    }

    public let nodeId: String
    public let epoch: UInt64
    public private(set) var clients: [String: Client] = [:]

    public init(nodeId: String, epoch: UInt64, snapshot: [Client] = []) {
        self.nodeId = nodeId
        self.epoch = epoch
        for client in snapshot { clients[client.clientId] = client }
    }

    /// Applies one event (others' nodes and epochs change nothing).
    public mutating func apply(_ event: LifecycleEvent) {
        guard event.node == nodeId, event.epoch == epoch else { return }
        switch event.event {
        case .connected, .resumed:
            clients[event.clientId] = Client(clientId: event.clientId, systemId: event.systemId, userId: event.userId)
        case .disconnected:
            clients[event.clientId] = nil
        case .bound, .unbound:
            break
        }
    }
}
