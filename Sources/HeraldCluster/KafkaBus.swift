import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// The cluster's bus: a unicast or control message goes to its owner's partition of the
/// unicast topic, keyed by client ID; a group or system message goes once to the broadcast
/// topic, which every node reads. `publish` answers after Kafka's acknowledgement.
public final class KafkaBus: Bus {
    private let producer: KafkaProducer
    private let settings: ClusterSettings
    private let failures = Atomic<Int>(0)
    /// The broadcast topic's partitions as the broker reports them (the setting until then).
    let broadcastPartitions: Atomic<Int32>

    init(producer: KafkaProducer, settings: ClusterSettings) {
        self.producer = producer
        self.settings = settings
        self.broadcastPartitions = Atomic(settings.broadcastPartitions)
    }

    public func publish(_ message: BusMessage) async throws(HeraldError) -> Placement {
        let topic: String
        let partition: Int32
        let key: String
        switch (message.target, message.body) {
        case (.client, .bind(let group, _, _)), (.client, .unbind(let group)):
            // Membership changes travel on their group's broadcast partition, so they are in
            // one total order with that group's messages: a send made after a bind answered
            // reaches the member, one after an unbind does not (docs/architecture.md).
            key = "\(message.systemId)/\(group)"
            (topic, partition) = (settings.broadcastTopic, Self.partition(for: key, count: broadcastPartitions.load(ordering: .relaxed)))
        case (.client(let id, let raw), _):
            (topic, partition, key) = (settings.unicastTopic, Int32(id.slot), raw)
        case (.group(let name), _):
            key = "\(message.systemId)/\(name)"
            (topic, partition) = (settings.broadcastTopic, Self.partition(for: key, count: broadcastPartitions.load(ordering: .relaxed)))
        case (.system, _):
            key = message.systemId
            (topic, partition) = (settings.broadcastTopic, Self.partition(for: key, count: broadcastPartitions.load(ordering: .relaxed)))
        }
        let keyBytes = Array(key.utf8)
        let value = WireFormat.encode(message)
        let headers = Self.headers(of: message)
        // Measured before producing: a record the producer would refuse is the sender's doing
        // (413), not an outage, and must not turn the node unready.
        let size = Self.recordSize(key: keyBytes, value: value, headers: headers)
        guard size <= settings.maxRecordBytes else { throw .recordTooLarge(size, limit: settings.maxRecordBytes) }
        do {
            let placed = try await producer.send(topic: topic, partition: partition, key: keyBytes, value: value, headers: headers)
            failures.store(0, ordering: .relaxed)
            return Placement(topic: topic, partition: placed.partition, offset: placed.offset)
        } catch let error as KafkaError where error.isTooLarge {
            throw .recordTooLarge(size, limit: settings.maxRecordBytes)
        } catch let error as KafkaError where error.persistence != .notPersisted {
            // Timed out or purged after it was sent: Kafka may have it (librdkafka's message
            // status), so "nothing was sent" would not be true.
            failures.add(1, ordering: .relaxed)
            throw .outcomeUnknown("Kafka did not acknowledge in time: \(error)")
        } catch {
            failures.add(1, ordering: .relaxed)
            throw .unavailable("Kafka did not take it: \(error)")
        }
    }

    /// What librdkafka counts against `message.max.bytes` for one record, with room for the
    /// record's own framing.
    static func recordSize(key: [UInt8], value: [UInt8], headers: [KafkaHeader]) -> Int {
        headers.reduce(key.count + value.count + recordOverhead) { $0 + $1.key.utf8.count + $1.value.count + 8 }
    }

    static let recordOverhead = 64

    /// Whether the last send went through (a cut Kafka path shows here before any probe).
    public var lastSendFailed: Bool { failures.load(ordering: .relaxed) > 0 }

    public func shutdown() async {
        await producer.shutdown()
    }

    /// The record headers of `message` (the bench's Kafka-path row sends the same ones).
    public static func headers(of message: BusMessage) -> [KafkaHeader] {
        var headers = [
            KafkaHeader("messageId", message.messageId),
            KafkaHeader("systemId", message.systemId),
            KafkaHeader("kind", message.kind.rawValue),
            KafkaHeader("acceptedAt", String(message.acceptedAt)),
            KafkaHeader("acceptedBy", message.acceptedBy),
            KafkaHeader("target", message.target.description),
        ]
        if message.redelivered { headers.append(KafkaHeader("redelivered", "true")) }
        return headers
    }

    /// FNV-1a: the same group always lands on the same partition, on every node and build.
    static func partition(for key: String, count: Int32) -> Int32 {
        var hash: UInt32 = 2_166_136_261
        for byte in key.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return Int32(hash % UInt32(max(1, count)))
    }
}

/// Reads this node's unicast partition and every broadcast partition and hands each
/// message to delivery. Re-assigns when the node takes a new slot.
final class FabricConsumer: Sendable {
    private let settings: ClusterSettings
    private let admin: KafkaAdmin
    private let codec: ClientIDCodec
    private let delivery: Delivery
    private let logger: Logger
    /// The epoch whose partitions are assigned: until then the node must not hand out IDs,
    /// or a message sent to a brand-new client could land before the consumer's start.
    private let consumingEpoch = Atomic<UInt64>(0)
    /// The next offset to deliver, per topic and partition, of the current assignment.
    private let positions = Mutex<[String: Int64]>([:])
    /// Set to have the consumer assigned again, from the start of every partition (the
    /// broker lost its log: what it holds now was all written since).
    private let restartRequested = Atomic<Bool>(false)
    private let current = Mutex<KafkaConsumer?>(nil)
    /// The cut just past the last record handed to delivery; held while one is delivered.
    private let stream = Mutex(LogCut(slot: 0, epoch: 0, unicast: 0, broadcast: [], at: 0))

    /// Runs `body` between two deliveries and answers the cut it ran at: every record before
    /// it was delivered before `body`, every later one after. Nil when not consuming `epoch`.
    func betweenRecords(epoch: UInt64, _ body: () -> Void) -> LogCut? {
        stream.withLock { cut in
            guard cut.epoch == epoch, isConsuming(epoch: epoch) else { return nil }
            body()
            return cut
        }
    }

    /// The next offset to deliver on `partition` of `topic`, if it is assigned.
    func position(topic: String, partition: Int32) -> Int64? {
        positions.withLock { $0["\(topic)/\(partition)"] }
    }

    /// Reads every partition again from its start: for a broker that came back empty.
    func restartFromStart() {
        restartRequested.store(true, ordering: .relaxed)
        current.withLock { $0 }?.close()
    }

    /// Whether the record at `offset` of `topic`/`partition` has been delivered here.
    func hasDelivered(topic: String, partition: Int32, offset: Int64) -> Bool {
        positions.withLock { ($0["\(topic)/\(partition)"] ?? -1) > offset }
    }

    func isConsuming(epoch: UInt64) -> Bool {
        epoch != 0 && consumingEpoch.load(ordering: .acquiring) == epoch
    }

    init(settings: ClusterSettings, admin: KafkaAdmin, codec: ClientIDCodec, delivery: Delivery, logger: Logger) {
        self.settings = settings
        self.admin = admin
        self.codec = codec
        self.delivery = delivery
        self.logger = logger
    }

    /// Consumes for each identity the membership takes, until cancelled. `onNewEpoch` is called
    /// when the node had to take a new slot (its clients' IDs then name a dead epoch).
    func run(identities: AsyncStream<NodeIdentity>, onNewEpoch: @escaping @Sendable (NodeIdentity) -> Void) async {
        var current: Task<Void, Never>?
        for await identity in identities {
            if current != nil { onNewEpoch(identity) }
            current?.cancel()
            await current?.value
            current = Task { await self.consume(as: identity) }
        }
        current?.cancel()
        await current?.value
    }

    private func consume(as identity: NodeIdentity) async {
        var fromStart = false
        while !Task.isCancelled {
            do {
                let consumer = try await makeConsumer(for: identity, fromStart: fromStart)
                current.withLock { $0 = consumer }
                consumingEpoch.store(identity.epoch, ordering: .releasing)
                logger.info("consuming", metadata: ["slot": "\(identity.slot)", "epoch": "\(identity.epoch)"])
                // Where the one stream of records stands on each partition: the `pos` of each frame.
                let start = startingCut(for: identity)
                stream.withLock { $0 = start }
                await withTaskCancellationHandler {
                    for await record in consumer.records {
                        defer {
                            positions.withLock { $0["\(record.topic)/\(record.partition)"] = record.offset + 1 }
                        }
                        let placement = Placement(topic: record.topic, partition: record.partition, offset: record.offset)
                        let message = WireFormat.decode(record.value, codec: codec)
                        // Delivered under the stream lock: a resume joins the stream between two
                        // records, at a cut it knows (`betweenRecords`).
                        stream.withLock { current in
                            current.advance(
                                past: placement, at: record.timestamp, unicastTopic: settings.unicastTopic,
                                broadcastTopic: settings.broadcastTopic)
                            if let message { delivery.deliver(message, cut: current) }
                        }
                        if message == nil {
                            logger.warning(
                                "skipping a record that is not a Herald message",
                                metadata: ["topic": .string(record.topic), "offset": "\(record.offset)"])
                        }
                    }
                } onCancel: {
                    consumer.close()
                }
                consumer.close()
                current.withLock { $0 = nil }
                if !Task.isCancelled, restartRequested.exchange(false, ordering: .relaxed) {
                    logger.warning("reading every partition again from its start: the broker lost its log")
                    fromStart = true
                    continue
                }
                return
            } catch {
                logger.error("cannot start consuming; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// The cut at the assignment's start: the offsets the consumer was assigned from.
    private func startingCut(for identity: NodeIdentity) -> LogCut {
        positions.withLock { positions in
            let broadcast = positions.keys.filter { $0.hasPrefix(settings.broadcastTopic + "/") }.count
            return LogCut(
                slot: identity.slot, epoch: identity.epoch,
                unicast: positions["\(settings.unicastTopic)/\(identity.slot)"] ?? 0,
                broadcast: (0..<broadcast).map { positions["\(settings.broadcastTopic)/\($0)"] ?? 0 }, at: Clock.nowMillis())
        }
    }

    /// Assigned from the ends seen now: this slot's older messages were for earlier epochs,
    /// and no local client was in any group before this moment.
    private func makeConsumer(for identity: NodeIdentity, fromStart: Bool = false) async throws -> KafkaConsumer {
        var assignments: [(topic: String, partition: Int32, offset: KafkaOffset)] = []
        let slot = Int32(identity.slot)
        func start(_ topic: String, _ partition: Int32) async throws -> Int64 {
            let marks = try await admin.watermarks(topic, partition: partition)
            return fromStart ? marks.low : marks.high
        }
        assignments.append((settings.unicastTopic, slot, .at(try await start(settings.unicastTopic, slot))))
        let broadcastPartitions = try await admin.partitionCount(settings.broadcastTopic) ?? settings.broadcastPartitions
        for partition in 0..<broadcastPartitions {
            assignments.append((settings.broadcastTopic, partition, .at(try await start(settings.broadcastTopic, partition))))
        }
        positions.withLock { positions in
            positions = [:]
            for assignment in assignments {
                if case .at(let offset) = assignment.offset { positions["\(assignment.topic)/\(assignment.partition)"] = offset }
            }
        }
        var config = settings.kafkaBase
        config["group.id"] = "herald-\(identity.nodeId)-\(identity.epoch)"
        config["enable.auto.commit"] = "false"
        config["fetch.wait.max.ms"] = String(settings.fetchWaitMillis)
        config["fetch.error.backoff.ms"] = "100"
        // An assigned offset past the end means the broker lost the log: read what it has now
        // from its start rather than wait for offsets that will never come again.
        config["auto.offset.reset"] = "earliest"
        // Contiguous: a batch a broker serves late is fetched again, not stepped over (OffsetGapGuard).
        return try KafkaConsumer(config: config, assignments: assignments, logger: logger, contiguous: true)
    }
}
