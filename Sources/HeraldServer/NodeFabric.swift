import HeraldCluster
import HeraldCore
import Synchronization

/// What makes a node standalone or part of a cluster: how messages travel (the bus), who holds
/// which slot, where traces, systems and presence live, what can be replayed, and the work that
/// keeps it running. A node has exactly one. Given the node's registry at init, each kind builds
/// the delivery that applies messages to it; routes and sessions ask the fabric, never which
/// kind it is.
protocol NodeFabric: Sendable {
    var membership: any Membership { get }
    var bus: any Bus { get }
    var delivery: Delivery { get }
    var trace: any TraceRecorder { get }
    /// Where the clients' lifecycle events go (docs/lifecycle.md).
    var lifecycle: any LifecycleRecorder { get }
    var systems: any SystemDirectory { get }
    var presence: any PresenceDirectory { get }
    /// Idempotency-Keys every node sees; nil when this node's own cache is the whole truth.
    var sharedIdempotency: EtcdIdempotency? { get }
    /// Whether the node can take clients: it holds (and can prove) a slot to address them by.
    var acceptsClients: Bool { get }
    /// Why the fabric is not ready, or nil when it is.
    var problem: String? { get }
    /// The live nodes; `localConnections` is this node's own count.
    func liveNodes(localConnections: Int) -> [NodeInfo]
    /// What the fabric carried that matches `filter`, oldest first, as replay lines.
    func replayLines(_ filter: ReplayFilter) async throws(HeraldError) -> [ReplayLine]
    /// The same messages, to send again.
    func replayMessages(_ filter: ReplayFilter, codec: ClientIDCodec) async throws(HeraldError) -> [BusMessage]
    /// Answers, within `timeout`, whether this node has applied the record at `placement`.
    func awaitApplied(_ placement: Placement, timeout: Duration) async -> Bool
    /// A resume: runs `attach` (the new connection registers and joins the token's groups)
    /// where no message can slip between live delivery and recovery, then gives the push
    /// messages after `since` for the token's old client ID, groups or system, oldest first,
    /// each with the cut just past it; or why not (nothing is then recovered).
    func recover(_ token: SessionToken, since: LogCut, limits: ResumeLimits, attach: () -> Void) async -> ResumeRecovery
    /// Runs `attach` (a new connection registers) between two deliveries and answers the cut it
    /// ran at (nil when the fabric is not consuming): what the connection's first session frame
    /// names as `pos`.
    func join(_ attach: () -> Void) -> LogCut?
    /// The fabric's own work (membership, consumption, probes), until cancelled.
    func run() async
    /// Metrics only this kind of fabric has, in Prometheus text format ("" when none).
    var metricsText: String { get }
    /// Hands every lifecycle event that is this node's to deliver to `deliver` (with a callback
    /// for when it is done with), until cancelled: standalone, its own events; in a cluster,
    /// its share of `herald.lifecycle` (docs/lifecycle.md, "Webhooks").
    func feedWebhooks(_ deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async
}

/// A node alone: slot 0 under an epoch of its own start, a journal for replay, traces in memory,
/// and a bus that applies each message before it answers.
final class StandaloneFabric: NodeFabric {
    let membership: any Membership
    let bus: any Bus
    let delivery: Delivery
    let trace: any TraceRecorder
    let lifecycle: any LifecycleRecorder
    let systems: any SystemDirectory = InMemorySystemDirectory()
    let presence: any PresenceDirectory
    var sharedIdempotency: EtcdIdempotency? { nil }
    private let journal: MessageJournal
    /// Where recorded events go for webhooks, once `feedWebhooks` runs.
    private let webhookFeed = WebhookTap()

    init(configuration: HeraldConfiguration, registry: ConnectionRegistry) {
        let membership = StandaloneMembership(
            nodeId: configuration.nodeId ?? "standalone-\(configuration.advertisedAddress)",
            address: configuration.advertisedAddress)
        let trace = InMemoryTrace(capacity: configuration.traceCapacity)
        let journal = MessageJournal(capacity: configuration.journalCapacity)
        let tap = webhookFeed
        let lifecycle = InMemoryLifecycle(onRecord: { event in tap.sink.withLock { $0 }?(event) })
        let delivery = Delivery(
            registry: registry, membership: membership, trace: trace, presence: configuration.groupPresence, lifecycle: lifecycle)
        self.lifecycle = lifecycle
        let bus = LocalBus(journal: journal, delivery: delivery, slot: membership.local.slot)
        delivery.announce(through: bus)
        self.membership = membership
        self.trace = trace
        self.journal = journal
        self.delivery = delivery
        self.bus = bus
        self.presence = LocalPresence(registry: registry, membership: membership)
    }

    var acceptsClients: Bool { true }
    var problem: String? { nil }

    func liveNodes(localConnections: Int) -> [NodeInfo] {
        [NodeInfo(identity: membership.local, connections: localConnections)]
    }

    func replayLines(_ filter: ReplayFilter) async throws(HeraldError) -> [ReplayLine] {
        journal.records(matching: filter).map(ReplayLine.init)
    }

    func replayMessages(_ filter: ReplayFilter, codec: ClientIDCodec) async throws(HeraldError) -> [BusMessage] {
        journal.records(matching: filter).map(\.message)
    }

    func join(_ attach: () -> Void) -> LogCut? {
        let identity = membership.local
        return journal.join(slot: identity.slot, epoch: identity.epoch, attach)
    }

    /// The local bus applies a message before `publish` returns.
    func awaitApplied(_ placement: Placement, timeout: Duration) async -> Bool { true }

    func recover(_ token: SessionToken, since: LogCut, limits: ResumeLimits, attach: () -> Void) async -> ResumeRecovery {
        let identity = membership.local
        let groups = Set(token.groups.map(\.group))
        guard Clock.nowMillis() - since.at <= limits.windowMillis else { return .refused("window exceeded") }
        let outcome = journal.recover(
            since: since, slot: identity.slot, epoch: identity.epoch, limits: limits,
            matching: { record in ResumeRecovery.isFor(token, groups: groups, record.message) }, attach: attach)
        switch outcome {
        case .records(let found): return .recovered(found.map { ($0.record.message, $0.cut) }, from: since)
        case .tooMany: return .refused("too many messages")
        case .notKept: return .refused("messages no longer kept")
        }
    }

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
    }

    var metricsText: String { "" }

    func feedWebhooks(_ deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async {
        webhookFeed.sink.withLock { $0 = { deliver(WebhookFeedItem(event: $0, json: nil, done: {})) } }
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        webhookFeed.sink.withLock { $0 = nil }
    }
}

/// Where a standalone node's recorded events go for webhooks, once they are fed.
final class WebhookTap: Sendable {
    let sink = Mutex<(@Sendable (LifecycleEvent) -> Void)?>(nil)
}

/// A cluster node: Kafka carries the messages, etcd tells who holds which slot.
struct ClusterNodeFabric: NodeFabric {
    let cluster: ClusterFabric

    var membership: any Membership { cluster.membership }
    var bus: any Bus { cluster.bus }
    var delivery: Delivery { cluster.delivery }
    var trace: any TraceRecorder { cluster.trace }
    var lifecycle: any LifecycleRecorder { cluster.lifecycle }
    var systems: any SystemDirectory { cluster.systems }
    var presence: any PresenceDirectory { cluster.presence }
    var sharedIdempotency: EtcdIdempotency? { cluster.idempotency }
    var acceptsClients: Bool { cluster.acceptsClients }
    var problem: String? { cluster.isReady ? nil : cluster.problem ?? "starting" }
    var metricsText: String { cluster.metricsText }

    func feedWebhooks(_ deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async {
        await cluster.feedWebhooks(deliver)
    }

    func recover(_ token: SessionToken, since: LogCut, limits: ResumeLimits, attach: () -> Void) async -> ResumeRecovery {
        await cluster.recover(token, since: since, limits: limits, attach: attach)
    }

    func join(_ attach: () -> Void) -> LogCut? {
        cluster.join(attach)
    }

    func liveNodes(localConnections: Int) -> [NodeInfo] {
        let me = cluster.membership.local.nodeId
        return cluster.membership.liveNodes.map {
            NodeInfo(
                identity: NodeIdentity(nodeId: $0.nodeId, address: $0.address, slot: $0.slot, epoch: $0.epoch, startedAt: $0.startedAt),
                connections: $0.nodeId == me ? localConnections : $0.connections)
        }
    }

    func replayLines(_ filter: ReplayFilter) async throws(HeraldError) -> [ReplayLine] {
        try await matches(filter).map(\.line)
    }

    func replayMessages(_ filter: ReplayFilter, codec: ClientIDCodec) async throws(HeraldError) -> [BusMessage] {
        try await matches(filter).compactMap { WireFormat.decode($0.record.value, codec: codec) }
    }

    private func matches(_ filter: ReplayFilter) async throws(HeraldError) -> [ClusterReplay.Match] {
        do {
            return try await cluster.replay.matches(filter)
        } catch {
            throw HeraldError.unavailable("cannot read Kafka: \(error)")
        }
    }

    func awaitApplied(_ placement: Placement, timeout: Duration) async -> Bool {
        let cluster = self.cluster
        return await ClusterPresence.awaitDelivered(placement, timeout: timeout, delivered: { cluster.hasDelivered($0) })
    }

    func run() async {
        await cluster.run()
    }
}
