import Crypto
import Foundation
import HeraldCluster
import HeraldCore
import Hummingbird
import Logging
import Synchronization

/// The parts of one node that routes share: domain objects, limits, metrics.
final class HeraldNodeServices: Sendable {
    let configuration: HeraldConfiguration
    let logger: Logger
    let registry: ConnectionRegistry
    let membership: any Membership
    let router: MessageRouter
    let delivery: Delivery
    let trace: any TraceRecorder
    let systems: any SystemDirectory
    /// The standalone node's journal; a cluster replays from Kafka instead.
    let journal: MessageJournal?
    /// Set in cluster mode.
    let cluster: ClusterFabric?
    let tokens: TokenVerifier
    let rateLimiter: RateLimiter
    let idempotency = IdempotencyCache<APIAnswer>(weight: { $0.body.count })
    let metrics = HeraldMetrics()
    let serials = Atomic<UInt64>(0)
    /// Where WebSocket sessions queue their frames, one per event loop.
    let outboxes = LoopOutboxes()
    private let draining = Atomic<Bool>(false)
    private let adminTokenDigest: SHA256.Digest?

    init(configuration: HeraldConfiguration, codec: ClientIDCodec, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let registry = ConnectionRegistry()
        let trace: any TraceRecorder
        let membership: any Membership
        let bus: any Bus
        let delivery: Delivery
        let presence: any PresenceDirectory
        if configuration.isCluster {
            let cluster = try ClusterFabric(settings: configuration.clusterSettings, codec: codec, logger: logger)
            trace = cluster.trace
            membership = cluster.membership
            delivery = Delivery(registry: registry, membership: membership, trace: trace, presence: configuration.groupPresence)
            bus = cluster.bus
            presence = cluster.presence(local: LocalPresence(registry: registry, membership: membership))
            self.cluster = cluster
            self.systems = cluster.systems
            self.journal = nil
        } else {
            trace = InMemoryTrace(capacity: configuration.traceCapacity)
            let nodeId = configuration.nodeId ?? "standalone-\(configuration.advertisedAddress)"
            membership = StandaloneMembership(nodeId: nodeId, address: configuration.advertisedAddress)
            let journal = MessageJournal(capacity: configuration.journalCapacity)
            delivery = Delivery(registry: registry, membership: membership, trace: trace, presence: configuration.groupPresence)
            bus = LocalBus(journal: journal, delivery: delivery, slot: membership.local.slot)
            presence = LocalPresence(registry: registry, membership: membership)
            self.cluster = nil
            self.systems = InMemorySystemDirectory()
            self.journal = journal
        }
        delivery.announce(through: bus)
        self.registry = registry
        self.membership = membership
        self.trace = trace
        self.delivery = delivery
        self.router = MessageRouter(
            codec: codec, membership: membership, bus: bus, registry: registry, trace: trace, presence: presence)
        self.tokens = TokenVerifier(codec: codec)
        self.rateLimiter = RateLimiter(perSecond: configuration.rateLimit)
        self.adminTokenDigest = configuration.adminToken.flatMap { $0.isEmpty ? nil : SHA256.hash(data: Data($0.utf8)) }
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func startDraining() { draining.store(true, ordering: .relaxed) }

    var isReady: Bool { !isDraining && (cluster?.isReady ?? membership.isReady) }

    /// Why the node is not ready, if it is not.
    var notReadyReason: String? {
        if isDraining { return "shutting down" }
        return cluster?.problem
    }

    /// Whether the node can take clients: it holds a slot to address them by.
    var holdsSlot: Bool {
        cluster?.acceptsClients ?? membership.holds(slot: membership.local.slot, epoch: membership.local.epoch)
    }

    /// Whether the request carries the admin token. Compared as digests, in constant time.
    func isAdmin(_ request: Request) -> Bool {
        guard let expected = adminTokenDigest else { return configuration.dev }
        guard let token = request.bearerToken else { return false }
        let given = SHA256.hash(data: Data(token.utf8))
        return zip(expected, given).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

extension HeraldConfiguration {
    var clusterSettings: ClusterSettings {
        var settings = ClusterSettings(
            kafka: kafka ?? "", etcd: (etcd ?? "").split(separator: ",").map { String($0) },
            nodeId: nodeId ?? advertisedAddress, advertise: advertisedAddress, internalToken: adminToken ?? "")
        settings.leaseTTL = Int64(leaseTTL)
        settings.produceTimeout = .milliseconds(Int64(produceTimeout * 1000))
        settings.unicastPartitions = Int32(unicastPartitions)
        settings.broadcastPartitions = Int32(broadcastPartitions)
        settings.peerTimeout = .milliseconds(Int64(peerTimeout * 1000))
        settings.fetchWaitMillis = fetchWaitMillis
        settings.idempotentProducer = kafkaIdempotence
        settings.replicationFactor = Int16(replicationFactor)
        settings.minInsyncReplicas = minInsyncReplicas
        settings.unicastTopic = unicastTopic
        settings.broadcastTopic = broadcastTopic
        settings.eventsTopic = eventsTopic
        settings.etcdPrefix = etcdPrefix
        return settings
    }
}
