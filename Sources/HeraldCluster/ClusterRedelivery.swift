import Foundation
import HeraldCore
import HeraldEtcd
import HeraldKafka
import Logging

/// Sends replayed messages again, marked as redeliveries, to those targets that are online
/// now: a client whose slot is still held by the same epoch, or a group or system (whose
/// online members get it). For `herald replay --redeliver`, outside any node.
public struct ClusterRedelivery: Sendable {
    let settings: ClusterSettings
    let codec: ClientIDCodec
    let logger: Logger

    public init(settings: ClusterSettings, codec: ClientIDCodec, logger: Logger) {
        self.settings = settings
        self.codec = codec
        self.logger = logger
    }

    /// Answers how many were sent and how many skipped (target gone, or not a push).
    public func redeliver(_ matches: [ClusterReplay.Match]) async throws -> (sent: Int, skipped: Int) {
        let slots = try await liveSlots()
        var config = settings.kafkaBase
        config["acks"] = "all"
        config["message.timeout.ms"] = "10000"
        config["allow.auto.create.topics"] = "false"
        let producer = try KafkaProducer(config: config, logger: logger)
        let bus = KafkaBus(producer: producer, settings: settings)
        var sent = 0
        var skipped = 0
        for match in matches {
            guard var message = WireFormat.decode(match.record.value, codec: codec), !message.redelivered,
                case .push = message.body
            else {
                skipped += 1
                continue
            }
            if case .client(let id, _) = message.target, slots[id.slot] != id.epoch {
                skipped += 1
                continue
            }
            message.redelivered = true
            message.acceptedAt = Clock.nowMillis()
            message.acceptedBy = "herald-replay"
            let placement = try await bus.publish(message)
            // The trace shows why the message arrived again.
            let event = TraceEvent(
                messageId: message.messageId, step: TraceStep(.redelivered, node: "herald-replay", placement: placement))
            _ = try? await producer.send(
                topic: settings.eventsTopic, partition: -1, key: Array(message.messageId.utf8),
                value: Array(try JSONEncoder().encode(event)), headers: [])
            sent += 1
        }
        await producer.shutdown()
        return (sent, skipped)
    }

    private func liveSlots() async throws -> [UInt32: UInt64] {
        let etcd = EtcdClient(endpoints: settings.etcd, logger: logger)
        let keys = settings.etcdKeys
        let (kvs, _) = try await etcd.getPrefix(keys.slots)
        var slots: [UInt32: UInt64] = [:]
        for kv in kvs {
            if case .slot(let slot) = keys.parse(kv.key) { slots[slot] = UInt64(kv.createRevision) }
        }
        return slots
    }
}

/// The live nodes as etcd knows them, for `herald nodes`.
public enum ClusterDirectory {
    public static func liveNodes(etcd endpoints: [String], prefix: String = "/herald/", logger: Logger) async throws -> [NodeRecord] {
        let etcd = EtcdClient(endpoints: endpoints, logger: logger)
        let (kvs, _) = try await etcd.getPrefix(prefix)
        var slots: [UInt32: UInt64] = [:]
        var nodes: [NodeRecord] = []
        let keys = EtcdKeys(root: prefix)
        for kv in kvs {
            switch keys.parse(kv.key) {
            case .slot(let slot): slots[slot] = UInt64(kv.createRevision)
            case .node: if let node = try? JSONDecoder().decode(NodeRecord.self, from: Data(kv.value)) { nodes.append(node) }
            case .system, .logGeneration, .other: break
            }
        }
        return nodes.filter { slots[$0.slot] == $0.epoch }.sorted { $0.slot < $1.slot }
    }
}
