import Crypto
import Foundation
import HeraldCluster
import HeraldCore
import Hummingbird
import Logging
import Synchronization

/// The parts of one node that routes share: the fabric, the registry, limits, metrics.
final class HeraldNodeServices: Sendable {
    let configuration: HeraldConfiguration
    let logger: Logger
    let registry: ConnectionRegistry
    /// Standalone or cluster: the one place that differs.
    let fabric: any NodeFabric
    let router: MessageRouter
    let tokens: TokenVerifier
    let rateLimiter: RateLimiter
    let idempotency = IdempotencyCache<APIAnswer>(weight: { $0.body.count })
    let metrics = HeraldMetrics()
    let serials = Atomic<UInt64>(0)
    /// Where WebSocket sessions queue their frames, one per event loop.
    let outboxes = LoopOutboxes()
    /// POSTs lifecycle events to the systems' webhooks.
    let webhooks: WebhookDispatcher
    private let draining = Atomic<Bool>(false)
    private let adminTokenDigest: SHA256.Digest?

    init(configuration: HeraldConfiguration, codec: ClientIDCodec, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let registry = ConnectionRegistry()
        let fabric: any NodeFabric =
            configuration.isCluster
            ? ClusterNodeFabric(
                cluster: try ClusterFabric(
                    settings: configuration.clusterSettings, codec: codec, registry: registry,
                    groupPresence: configuration.groupPresence, logger: logger))
            : StandaloneFabric(configuration: configuration, registry: registry)
        self.registry = registry
        self.fabric = fabric
        self.router = MessageRouter(
            codec: codec, membership: fabric.membership, bus: fabric.bus, registry: registry, trace: fabric.trace,
            presence: fabric.presence)
        self.webhooks = WebhookDispatcher(
            settings: configuration.webhookSettings, systems: fabric.systems, codec: codec,
            nodeId: { [membership = fabric.membership] in membership.local.nodeId }, logger: logger)
        self.tokens = TokenVerifier(codec: codec)
        self.rateLimiter = RateLimiter(perSecond: configuration.rateLimit)
        self.adminTokenDigest = configuration.adminToken.flatMap { $0.isEmpty ? nil : SHA256.hash(data: Data($0.utf8)) }
    }

    var membership: any Membership { fabric.membership }

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func startDraining() { draining.store(true, ordering: .relaxed) }

    var isReady: Bool { notReadyReason == nil }

    /// Why the node is not ready, if it is not.
    var notReadyReason: String? {
        if isDraining { return "shutting down" }
        return fabric.problem
    }

    /// Whether the node can take clients: it holds a slot to address them by.
    var holdsSlot: Bool { fabric.acceptsClients }

    /// Whether the request carries the admin token. Compared as digests, in constant time.
    func isAdmin(_ request: Request) -> Bool {
        guard let expected = adminTokenDigest else { return configuration.dev }
        guard let token = request.bearerToken else { return false }
        let given = SHA256.hash(data: Data(token.utf8))
        return zip(expected, given).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

extension HeraldConfiguration {
    var webhookSettings: WebhookSettings {
        var settings = WebhookSettings()
        settings.timeout = .milliseconds(Int64(webhookTimeout * 1000))
        settings.retryHorizon = .milliseconds(Int64(webhookRetryHorizon * 1000))
        settings.queueEvents = webhookQueueEvents
        return settings
    }

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
        settings.lifecycleTopic = lifecycleTopic
        settings.lifecycleSnapshotInterval = .milliseconds(Int64(lifecycleSnapshotInterval * 1000))
        settings.etcdPrefix = etcdPrefix
        return settings
    }
}
