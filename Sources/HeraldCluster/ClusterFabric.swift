import AsyncHTTPClient
import HeraldCore
import HeraldEtcd
import HeraldKafka
import Logging
import Synchronization

/// Everything a node needs to be part of a cluster: the Kafka bus and consumer, the etcd
/// membership and system directory, and the peer queries for presence. Given the node's
/// registry at init, it builds the delivery that applies consumed records to it.
public final class ClusterFabric: Sendable {
    public let settings: ClusterSettings
    public let membership: ClusterMembership
    public let bus: KafkaBus
    /// Applies the records this node consumes to its own connections.
    public let delivery: Delivery
    /// Who is online: this node's registry, and every other live node asked in parallel.
    public let presence: ClusterPresence
    public let systems: EtcdSystemDirectory
    /// Idempotency-Keys shared by every node.
    public let idempotency: EtcdIdempotency
    /// Delivery events of this node, sent to the events topic.
    public let trace: KafkaTraceRecorder
    /// Replay and trace over Kafka, for /admin.
    public let replay: ClusterReplay
    /// Lifecycle events of this node's clients, sent to `herald.lifecycle`.
    public let lifecycle: KafkaLifecycleRecorder
    /// Snapshots of this node's live connections, the start of a `node_lost` report.
    let snapshots: LifecycleSnapshotWriter
    /// Reports the clients of nodes that died (`node_lost`).
    let lostNodes: LostNodeReporter
    /// Resumes: what a reconnecting client missed, read back from Kafka.
    private let recovery: ClusterRecovery
    private let codec: ClientIDCodec
    private let admin: KafkaAdmin
    private let membershipHTTP: HTTPClient
    private let consumer: FabricConsumer
    private let registry: ConnectionRegistry
    private let logger: Logger
    private let kafkaReachable = Atomic<Bool>(false)
    /// What is wrong with Herald's topics on the broker, if anything (missing, or emptied).
    private let topicsProblem = Mutex<String?>(nil)

    /// `groupPresence` false: no 1001/1002 frames to a group's members (every node must agree).
    public init(
        settings: ClusterSettings, codec: ClientIDCodec, registry: ConnectionRegistry, groupPresence: Bool,
        logger: Logger, peerHTTP: HTTPClient = .shared
    ) throws {
        self.settings = settings
        self.registry = registry
        self.logger = logger
        var producerConfig = settings.kafkaBase
        let timeout = settings.produceTimeout.components.seconds * 1000 + settings.produceTimeout.components.attoseconds / 1_000_000_000_000_000
        producerConfig["message.timeout.ms"] = String(max(1, timeout))
        producerConfig["acks"] = "all"
        // A millisecond of lingering lets a busy node send many messages per produce request
        // (one request per message costs the broker far more); an idle one pays 1 ms.
        producerConfig["linger.ms"] = "1"
        producerConfig["queue.buffering.max.messages"] = "100000"
        producerConfig["message.max.bytes"] = String(settings.maxRecordBytes)
        // A send to a topic the broker lost fails (5030) instead of creating the topic with the
        // broker's default layout; the Kafka probe creates it again as configured.
        producerConfig["allow.auto.create.topics"] = "false"
        // Retries inside librdkafka never duplicate or reorder a record (the broker dedupes by
        // producer id and sequence); an outcome that stays unknown is answered 5031.
        producerConfig["enable.idempotence"] = settings.idempotentProducer ? "true" : "false"
        let producer = try KafkaProducer(config: producerConfig.merging(settings.kafkaProperties) { $1 }, logger: logger)
        let admin = try KafkaAdmin(config: settings.kafkaBase, logger: logger)
        // Membership (lease keepalive, slot claims, the watch) has a connection pool of its own,
        // so no amount of request traffic (system lookups) can delay a lease renewal.
        let membershipHTTP = HTTPClient(eventLoopGroupProvider: .singleton)
        self.membershipHTTP = membershipHTTP
        let membership = ClusterMembership(
            settings: settings, etcd: EtcdClient(endpoints: settings.etcd, httpClient: membershipHTTP, logger: logger),
            admin: admin, logger: logger)
        let etcd = EtcdClient(endpoints: settings.etcd, logger: logger)
        let replay = ClusterReplay(
            kafka: settings.kafka, logger: logger, unicastTopic: settings.unicastTopic,
            broadcastTopic: settings.broadcastTopic, eventsTopic: settings.eventsTopic)
        self.replay = replay
        let trace = KafkaTraceRecorder(producer: producer, replay: replay, nodeKey: settings.nodeId)
        self.trace = trace
        let lifecycle = KafkaLifecycleRecorder(
            producer: producer, scanner: KafkaScanner(kafka: settings.kafka, logger: logger), topic: settings.lifecycleTopic,
            logger: logger)
        self.lifecycle = lifecycle
        self.snapshots = LifecycleSnapshotWriter(
            producer: producer, admin: admin, registry: registry, membership: membership, lifecycle: lifecycle,
            lifecycleTopic: settings.lifecycleTopic, interval: settings.lifecycleSnapshotInterval, logger: logger)
        self.lostNodes = LostNodeReporter(
            settings: settings, etcd: etcd, membership: membership, lifecycle: lifecycle, admin: admin,
            scanner: KafkaScanner(kafka: settings.kafka, logger: logger), logger: logger)
        self.admin = admin
        self.membership = membership
        let bus = KafkaBus(producer: producer, settings: settings)
        self.bus = bus
        let delivery = Delivery(
            registry: registry, membership: membership, trace: trace, presence: groupPresence, lifecycle: lifecycle)
        delivery.announce(through: bus)
        self.delivery = delivery
        self.idempotency = EtcdIdempotency(
            etcd: etcd, keys: settings.etcdKeys, pendingTimeout: settings.produceTimeout + .seconds(2))
        self.systems = EtcdSystemDirectory(
            etcd: etcd, membership: membership, keys: settings.etcdKeys, lookups: SystemLookupGuard())
        let consumer = FabricConsumer(settings: settings, admin: admin, codec: codec, delivery: delivery, logger: logger)
        self.consumer = consumer
        self.codec = codec
        self.recovery = ClusterRecovery(
            scanner: KafkaScanner(kafka: settings.kafka, logger: logger), admin: admin, codec: codec,
            unicastTopic: settings.unicastTopic, broadcastTopic: settings.broadcastTopic, logger: logger)
        self.presence = ClusterPresence(
            local: LocalPresence(registry: registry, membership: membership), membership: membership, settings: settings,
            http: peerHTTP,
            delivered: { consumer.hasDelivered(topic: $0.topic, partition: $0.partition, offset: $0.offset) })
    }

    /// Whether this node's consumer has delivered the record at `placement`.
    public func hasDelivered(_ placement: Placement) -> Bool {
        consumer.hasDelivered(topic: placement.topic, partition: placement.partition, offset: placement.offset)
    }

    /// A resume (docs/architecture.md, "Resume"): once this node's stream has passed the
    /// client's position on its partitions, `attach` runs between two deliveries (from then on
    /// the connection gets its messages live), and what lies between the position and that
    /// moment is read back from Kafka. Refusals run no `attach`.
    public func recover(_ token: SessionToken, since: LogCut, limits: ResumeLimits, attach: () -> Void) async -> ResumeRecovery {
        guard Clock.nowMillis() - since.at <= limits.windowMillis else { return .refused("window exceeded") }
        // The position must be the old connection's own (its slot and epoch), or a recovered
        // frame's on this fabric; the layout of the broadcast topic must not have changed.
        guard let old = try? codec.open(token.clientId), old.belongs(to: token.systemId) else { return .refused("bad token") }
        guard since.slot == old.slot, since.epoch == old.epoch else { return .refused("bad position") }
        let count = since.broadcast.count
        guard count > 0, (0..<Int32(count)).allSatisfy({ consumer.position(topic: settings.broadcastTopic, partition: $0) != nil }),
            consumer.position(topic: settings.broadcastTopic, partition: Int32(count)) == nil
        else { return .refused("the log's layout changed") }
        let partitions = ClusterRecovery.partitions(of: token, count: count)
        // This node may be behind the old one on a partition: what it has not delivered yet
        // would reach the connection live although the client had it already.
        let waitUntil = ContinuousClock.now + Self.catchUpTimeout
        while !partitions.allSatisfy({ (consumer.position(topic: settings.broadcastTopic, partition: $0) ?? 0) >= since.broadcast[Int($0)] }) {
            guard ContinuousClock.now < waitUntil else { return .unavailable("this node is behind the log; retry") }
            try? await Task.sleep(for: .milliseconds(5))
        }
        let local = membership.local
        guard let upto = consumer.betweenRecords(epoch: local.epoch, attach) else { return .unavailable("not consuming; retry") }
        return await recovery.recover(token, since: since, upto: upto, partitions: partitions, limits: limits)
    }

    /// Runs `attach` between two deliveries of this node's stream; the cut it ran at, or nil (not
    /// consuming: `attach` is not run).
    public func join(_ attach: () -> Void) -> LogCut? {
        // As of now: the position is current for the connection, whatever the last record's age.
        guard var cut = consumer.betweenRecords(epoch: membership.local.epoch, attach) else { return nil }
        cut.at = Clock.nowMillis()
        return cut
    }

    /// This node's share of `herald.lifecycle`, for webhooks, until cancelled.
    public func feedWebhooks(_ deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async {
        await LifecycleWebhookFeed(settings: settings, logger: logger).run(deliver: deliver)
    }

    /// The cluster's own counters, in Prometheus text format.
    public var metricsText: String {
        """
        # TYPE herald_lifecycle_snapshots_total counter
        herald_lifecycle_snapshots_total \(snapshots.snapshotsWritten)
        # TYPE herald_lifecycle_node_lost_reported_total counter
        herald_lifecycle_node_lost_reported_total \(lostNodes.eventsReported)

        """
    }

    /// How long a resume waits for this node to reach the client's position.
    static let catchUpTimeout: Duration = .seconds(3)

    /// Ready: holds a slot, consumes its partitions, etcd answers, and Kafka answers.
    public var isReady: Bool {
        acceptsClients && membership.isReady && kafkaReachable.load(ordering: .relaxed) && !bus.lastSendFailed
            && topicsProblem.withLock({ $0 }) == nil
    }

    /// Whether new clients can be given IDs: the slot is held and its partition is being read.
    public var acceptsClients: Bool {
        let local = membership.local
        return membership.holds(slot: local.slot, epoch: local.epoch) && membership.provesOwnSlot
            && consumer.isConsuming(epoch: local.epoch)
    }

    /// Why the node is not ready, if it is not.
    public var problem: String? {
        if let problem = membership.problem { return problem }
        if !acceptsClients { return "not yet consuming this node's partitions" }
        if let problem = topicsProblem.withLock({ $0 }) { return problem }
        if !kafkaReachable.load(ordering: .relaxed) || bus.lastSendFailed { return "Kafka is unreachable" }
        return nil
    }

    /// Creates Herald's topics if missing, then keeps membership, consumption and the Kafka
    /// probe running until cancelled.
    public func run() async {
        await ensureTopics()
        let registry = self.registry
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.membership.run(connections: { registry.count }) { identity in
                    // Leaving cleanly: once this node's last events are sent (its clients'
                    // node_shutdown among them), it marks itself said goodbye to, so no survivor
                    // reports its clients node_lost.
                    let until = ContinuousClock.now + .seconds(5)
                    while !self.lifecycle.isFinished, ContinuousClock.now < until { try? await Task.sleep(for: .milliseconds(20)) }
                    if self.lifecycle.isFinished { await self.lostNodes.markReportedBySelf(identity) }
                }
            }
            group.addTask {
                await self.consumer.run(identities: self.membership.identityChanges) { identity in
                    // IDs of the clients here name the old epoch: they must reconnect for new ones.
                    let sinks = registry.allSinks()
                    logger.warning(
                        "took a new slot; closing local clients", metadata: ["slot": "\(identity.slot)", "clients": "\(sinks.count)"])
                    for sink in sinks { sink.close(code: 1012, reason: "node re-joined the cluster; reconnect") }
                }
            }
            group.addTask { await self.probeKafka() }
            group.addTask {
                for await _ in self.membership.logGenerations {
                    self.consumer.restartFromStart()
                }
            }
            group.addTask { await self.trace.run() }
            group.addTask { await self.lifecycle.run() }
            group.addTask { await self.snapshots.run() }
            group.addTask { await self.lostNodes.run() }
            await group.waitForAll()
        }
        await bus.shutdown()
        try? await membershipHTTP.shutdown()
    }

    private var snapshotTopic: String { LifecycleSnapshot.topic(for: settings.lifecycleTopic) }

    private func ensureTopics() async {
        let configs = ["min.insync.replicas": String(settings.minInsyncReplicas)]
        while !Task.isCancelled {
            do {
                for (topic, partitions) in [
                    (settings.unicastTopic, settings.unicastPartitions), (settings.broadcastTopic, settings.broadcastPartitions),
                    (settings.eventsTopic, settings.broadcastPartitions), (settings.lifecycleTopic, settings.broadcastPartitions),
                    (snapshotTopic, 1),
                ] {
                    // Snapshots: only each node epoch's newest matters (LifecycleSnapshot).
                    let compacted = topic == snapshotTopic ? ["cleanup.policy": "compact"] : [:]
                    try await admin.createTopic(
                        topic, partitions: partitions, replicationFactor: settings.replicationFactor,
                        configs: configs.merging(compacted) { $1 })
                    guard let layout = try await admin.layout(topic) else { continue }
                    if layout.replicationFactor < Int(settings.replicationFactor) {
                        logger.warning(
                            "topic \(topic) has replication factor \(layout.replicationFactor), weaker than the configured \(settings.replicationFactor): acks=all guarantees only what its replicas do",
                            metadata: ["topic": .string(topic)])
                    }
                    if topic == settings.broadcastTopic {
                        // Keys are spread over the partitions the topic has, whatever the setting says.
                        if layout.partitions != settings.broadcastPartitions {
                            logger.notice(
                                "\(topic) has \(layout.partitions) partitions (--broadcast-partitions says \(settings.broadcastPartitions)); using the topic's")
                        }
                        bus.broadcastPartitions.store(layout.partitions, ordering: .relaxed)
                    }
                }
                kafkaReachable.store(true, ordering: .relaxed)
                return
            } catch {
                logger.error("cannot create Herald's topics; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func probeKafka() async {
        while !Task.isCancelled {
            let reachable = (try? await admin.watermarks(settings.broadcastTopic, partition: 0, timeout: .seconds(2))) != nil
            if kafkaReachable.exchange(reachable, ordering: .relaxed) != reachable {
                logger.notice(reachable ? "Kafka reachable" : "Kafka unreachable")
            }
            if reachable { await checkTopics() }
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// A broker that came back empty (a wiped or replaced Kafka, Tansu's memory storage after
    /// a restart) has lost Herald's topics: the node turns unready naming them, creates them
    /// again, and announces a new generation of the log in etcd. Every node, on seeing it,
    /// reads every partition from the start of the new log (all of it written since), exactly
    /// once per loss: nodes whose probes saw the same loss announce it once between them.
    /// (Nodes never create topics by producing or fetching: `allow.auto.create.topics` is off,
    /// so a missing topic stays missing until a probe sees it.) A fetch past a partition's end
    /// on a broker that answers it out of range is caught by the consumer too
    /// (`auto.offset.reset`); Tansu answers such fetches with nothing, and ListOffsets is not
    /// used to tell: Tansu answers it below the true end.
    private func checkTopics() async {
        let generation = membership.logGeneration
        var missing: [String] = []
        for topic in [settings.unicastTopic, settings.broadcastTopic, settings.eventsTopic, settings.lifecycleTopic, snapshotTopic] {
            do {
                if try await admin.layout(topic) == nil { missing.append(topic) }
            } catch {
                return  // the broker did not answer: the next probe asks again
            }
        }
        guard !missing.isEmpty else {
            topicsProblem.withLock { $0 = nil }
            return
        }
        let problem = "topics missing on the broker: \(missing.joined(separator: ", ")); creating them again"
        let previous = topicsProblem.withLock { old -> String? in
            let before = old
            old = problem
            return before
        }
        if previous != problem { logger.error("\(problem)") }
        await ensureTopics()
        // Without etcd the other nodes cannot be told; this one at least reads the new log.
        if await !membership.announceNewLog(after: generation) { consumer.restartFromStart() }
    }
}
