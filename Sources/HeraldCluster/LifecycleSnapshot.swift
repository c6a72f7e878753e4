import Foundation
import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// A node's live connections at one moment, with where `herald.lifecycle` stood just before:
/// the start a survivor needs to tell which clients a dead node still held (its snapshot, plus
/// that node's events from `lifecycleOffsets` on). Kept in `<lifecycle topic>.snapshots`, one
/// partition, compacted; a snapshot too large for one record is split into `parts`, each keyed
/// `<nodeId>/<epoch>/<part>` (docs/lifecycle.md, "node_lost").
struct LifecycleSnapshot: Sendable, Codable, Hashable {
    typealias Client = HeldClients.Client

    var node: String
    var slot: UInt32
    var epoch: UInt64
    /// Counts up per snapshot of one epoch: the newest complete one wins.
    var seq: Int
    var part: Int
    var parts: Int
    var takenAt: Int64
    /// The next offset of each partition of `herald.lifecycle` (by index), read before the
    /// connections were: every event after the snapshot is at or past these.
    var lifecycleOffsets: [Int64]
    var clients: [Client]

    /// The record key: one per node epoch and part, so compaction keeps each epoch's newest.
    static func key(node: String, epoch: UInt64, part: Int) -> String { "\(node)/\(epoch)/\(part)" }
    static func keyPrefix(node: String, epoch: UInt64) -> String { "\(node)/\(epoch)/" }

    /// Bytes of clients per record, well under Kafka's 1 MiB default.
    static let partBytes = 256 << 10

    /// The topic that holds the snapshots of lifecycle topic `lifecycleTopic`.
    static func topic(for lifecycleTopic: String) -> String { lifecycleTopic + ".snapshots" }
}

/// Writes this node's snapshot when it joins (so every epoch has one) and then every `interval`
/// while its clients change (and at least every ten intervals, so the newest stays near the end
/// of the topic).
final class LifecycleSnapshotWriter: Sendable {
    private let producer: KafkaProducer
    private let admin: KafkaAdmin
    private let registry: ConnectionRegistry
    private let membership: ClusterMembership
    private let lifecycle: KafkaLifecycleRecorder
    private let lifecycleTopic: String
    private let interval: Duration
    private let logger: Logger
    private let written = Atomic<Int>(0)

    init(
        producer: KafkaProducer, admin: KafkaAdmin, registry: ConnectionRegistry, membership: ClusterMembership,
        lifecycle: KafkaLifecycleRecorder, lifecycleTopic: String, interval: Duration, logger: Logger
    ) {
        self.producer = producer
        self.admin = admin
        self.registry = registry
        self.membership = membership
        self.lifecycle = lifecycle
        self.lifecycleTopic = lifecycleTopic
        self.interval = interval
        self.logger = logger
    }

    /// Snapshots written so far (a metric, and what tests wait on).
    var snapshotsWritten: Int { written.load(ordering: .relaxed) }

    func run() async {
        var last: (epoch: UInt64, seq: Int, events: Int, at: ContinuousClock.Instant)? = nil
        while !Task.isCancelled {
            let identity = membership.local
            let events = lifecycle.recordedEvents
            let due: Bool
            if identity.slot == .max {
                due = false
            } else if let last, last.epoch == identity.epoch {
                due = last.events != events || ContinuousClock.now - last.at >= interval * 10
            } else {
                due = true
            }
            if due {
                let seq = last.map { $0.epoch == identity.epoch ? $0.seq + 1 : 0 } ?? 0
                if await write(identity, seq: seq) {
                    last = (identity.epoch, seq, events, .now)
                    written.add(1, ordering: .relaxed)
                }
            }
            // Soon after a join (the first snapshot of an epoch), then every interval.
            try? await Task.sleep(for: last?.epoch == identity.epoch ? interval : .milliseconds(200))
        }
    }

    private func write(_ identity: NodeIdentity, seq: Int) async -> Bool {
        let topic = LifecycleSnapshot.topic(for: lifecycleTopic)
        do {
            // Offsets first, connections second: whatever happens after the connections are
            // read is recorded at or past these offsets (see LifecycleSnapshot.lifecycleOffsets).
            guard let count = try await admin.partitionCount(lifecycleTopic) else { return false }
            var offsets: [Int64] = []
            for partition in 0..<count { offsets.append(try await admin.watermarks(lifecycleTopic, partition: partition).high) }
            let clients = registry.allConnections().map {
                LifecycleSnapshot.Client(clientId: $0.clientId, systemId: $0.systemId, userId: $0.userId)
            }
            var chunks: [[LifecycleSnapshot.Client]] = [[]]
            var bytes = 0
            for client in clients {
                let size = client.clientId.utf8.count + client.systemId.utf8.count + client.userId.utf8.count + 48
                if bytes + size > LifecycleSnapshot.partBytes, !(chunks.last?.isEmpty ?? true) {
                    chunks.append([])
                    bytes = 0
                }
                chunks[chunks.count - 1].append(client)
                bytes += size
            }
            let takenAt = Clock.nowMillis()
            let encoder = JSONEncoder()
            let records = try chunks.enumerated().map { part, clients in
                let snapshot = LifecycleSnapshot(
                    node: identity.nodeId, slot: identity.slot, epoch: identity.epoch, seq: seq, part: part, parts: chunks.count,
                    takenAt: takenAt, lifecycleOffsets: offsets, clients: clients)
                return OutgoingRecord(
                    topic: topic, partition: 0,
                    key: Array(LifecycleSnapshot.key(node: identity.nodeId, epoch: identity.epoch, part: part).utf8),
                    value: Array(try encoder.encode(snapshot)))
            }
            guard await producer.sendInOrder(records).allSatisfy({ $0 }) else {
                logger.warning("cannot write this node's lifecycle snapshot; retrying", metadata: ["topic": .string(topic)])
                return false
            }
            return true
        } catch {
            logger.warning("cannot write this node's lifecycle snapshot; retrying", metadata: ["error": "\(error)"])
            return false
        }
    }
}
