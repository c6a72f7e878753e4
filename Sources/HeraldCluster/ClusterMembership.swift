import Foundation
import HeraldCore
import HeraldEtcd
import HeraldKafka
import Logging
import Synchronization

/// A node as it publishes itself in etcd under `<prefix>nodes/<nodeId>`.
public struct NodeRecord: Sendable, Hashable, Codable {
    public var nodeId: String
    public var address: String
    public var slot: UInt32
    public var epoch: UInt64
    public var startedAt: Int64
    public var connections: Int
    public var version: String

    /// Whether `other` is this node in the same slot and epoch (nil: the record is gone).
    func sameEpoch(as other: NodeRecord?) -> Bool {
        other.map { $0.slot == slot && $0.epoch == epoch } ?? false
    }
}

/// Membership through etcd: claims a slot (a partition of the unicast topic) under a lease,
/// publishes this node, and watches the prefix to keep a view of every slot, node and system.
/// When etcd is unreachable the last view stays in force and the node reports itself unready.
public final class ClusterMembership: Membership {
    struct State {
        var identity: NodeIdentity?
        var slots: [UInt32: UInt64] = [:]
        var nodes: [String: NodeRecord] = [:]
        var systems: [String: SystemRecord] = [:]
        var etcdReachable = false
        var problem: String? = "joining the cluster"
        var lease: Int64?
        /// Until when this node can prove it holds its slot: its last successful keepalive's
        /// send time plus the TTL etcd granted, minus a margin. Past it, etcd may have given
        /// the slot to another node, so this one admits no clients and takes no sends for it.
        var leaseProvenUntil: ContinuousClock.Instant?
        /// The mod revision of `EtcdKeys.logGeneration` (0 while it was never written).
        var logGeneration: Int64 = 0
    }

    private let settings: ClusterSettings
    private let etcd: EtcdClient
    private let admin: KafkaAdmin
    private let logger: Logger
    private let startedAt = Clock.nowMillis()
    private let state = Mutex(State())
    private let changes: AsyncStream<NodeIdentity>.Continuation
    /// Every identity this node takes: the first claim, and each re-claim after a lost lease.
    public let identityChanges: AsyncStream<NodeIdentity>
    private let newGenerations: AsyncStream<Int64>.Continuation
    /// Each new generation of the Kafka log some node announced after it was seen while this
    /// node watched: the broker lost its log, and what it holds now was all written since.
    public let logGenerations: AsyncStream<Int64>
    private let departed: AsyncStream<NodeRecord>.Continuation
    /// Each other node this one saw leave: its record gone from etcd (its lease ended, by a
    /// crash or a clean shutdown), or replaced by one with another slot or epoch (it came back
    /// as a new epoch). The record is the one it had, naming the epoch that ended.
    public let departures: AsyncStream<NodeRecord>

    init(settings: ClusterSettings, etcd: EtcdClient, admin: KafkaAdmin, logger: Logger) {
        self.settings = settings
        self.etcd = etcd
        self.admin = admin
        self.logger = logger
        (identityChanges, changes) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(4))
        (logGenerations, newGenerations) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (departures, departed) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
    }

    /// The generation of the Kafka log in this node's view; pass it to `announceNewLog`.
    public var logGeneration: Int64 { state.withLock { $0.logGeneration } }

    /// Tells every node (this one included, through the watch) that the broker lost its log,
    /// unless another node already did since `seen`: of the nodes that saw the same loss,
    /// one announces it. False when etcd could not be asked.
    public func announceNewLog(after seen: Int64) async -> Bool {
        do {
            let value = Array("\(settings.nodeId) \(Clock.nowMillis())".utf8)
            _ = try await etcd.put(settings.etcdKeys.logGeneration, value: value, ifModRevision: seen)
            return true
        } catch {
            logger.error("cannot announce the broker's new log in etcd", metadata: ["error": "\(error)"])
            return false
        }
    }

    // MARK: Membership

    public var local: NodeIdentity {
        state.withLock { $0.identity }
            ?? NodeIdentity(nodeId: settings.nodeId, address: settings.advertise, slot: .max, epoch: 0, startedAt: startedAt)
    }

    public func holds(slot: UInt32, epoch: UInt64) -> Bool {
        state.withLock { $0.slots[slot] == epoch }
    }

    public var isReady: Bool {
        state.withLock { $0.identity != nil && $0.etcdReachable } && provesOwnSlot
    }

    /// Whether the lease is still provably alive (see `State.leaseProvenUntil`).
    public var provesOwnSlot: Bool {
        state.withLock { state in
            guard state.identity != nil, let until = state.leaseProvenUntil else { return false }
            return ContinuousClock.now < until
        }
    }

    /// Why the node is not ready, if it is not.
    public var problem: String? {
        let proven = provesOwnSlot
        return state.withLock { state in
            if let problem = state.problem { return problem }
            if state.identity != nil, !proven {
                return "the lease could not be renewed in time: this node no longer serves its slot until etcd answers"
            }
            return state.etcdReachable ? nil : "etcd is unreachable; serving from the last view"
        }
    }

    public var liveNodes: [NodeRecord] {
        state.withLock { state in
            state.nodes.values.filter { state.slots[$0.slot] == $0.epoch }.sorted { $0.slot < $1.slot }
        }
    }

    /// The lease this node holds now, if it has joined.
    var currentLease: Int64? {
        state.withLock { $0.identity != nil ? $0.lease : nil }
    }

    func cachedSystem(_ id: String) -> SystemRecord? {
        state.withLock { $0.systems[id] }
    }

    func remember(_ system: SystemRecord) {
        state.withLock { $0.systems[system.systemId] = system }
    }

    // MARK: Running

    /// Joins, then keeps the lease, the view and this node's record current, until cancelled.
    /// A lost lease (etcd says it is gone) leads to a new claim with a new epoch. On the way
    /// out, `beforeLeaving` runs with the last identity, before the lease is revoked.
    public func run(
        connections: @escaping @Sendable () -> Int, beforeLeaving: @escaping @Sendable (NodeIdentity) async -> Void = { _ in }
    ) async {
        while !Task.isCancelled {
            do {
                let (lease, revision) = try await join(connections: connections())
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.keepAlive(lease) }
                    group.addTask { await self.watch(from: revision + 1) }
                    group.addTask { await self.refreshRecord(lease: lease, connections: connections) }
                    // Only the keepalive returns by itself: the lease is gone.
                    _ = await group.next()
                    group.cancelAll()
                }
                guard !Task.isCancelled else { break }
                logger.warning("lease lost; claiming a slot again")
                state.withLock {
                    $0.identity = nil
                    $0.problem = "lease lost; re-joining"
                }
            } catch {
                state.withLock {
                    $0.problem = "\(error)"
                    if error is EtcdError { $0.etcdReachable = false }
                }
                logger.error("cannot join the cluster", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        changes.finish()
        departed.finish()
        if let identity = state.withLock({ $0.identity }) {
            // Detached: the running task is cancelled, and this must still reach etcd.
            await Task.detached { await beforeLeaving(identity) }.value
        }
        await leave()
    }

    /// Grants a lease, claims the lowest free slot, publishes this node, loads the view.
    private func join(connections: Int) async throws -> (lease: Int64, revision: Int64) {
        let grantedAt = ContinuousClock.now
        let lease = try await etcd.grantLease(ttl: settings.leaseTTL).id
        let margin = max(Duration.seconds(settings.leaseTTL) / 10, .milliseconds(200))
        state.withLock {
            $0.lease = lease
            $0.etcdReachable = true
            $0.leaseProvenUntil = grantedAt + .seconds(settings.leaseTTL) - margin
        }
        let identity: NodeIdentity
        let kvs: [EtcdKeyValue]
        let revision: Int64
        do {
            let (slot, epoch) = try await claimSlot(lease: lease)
            identity = NodeIdentity(
                nodeId: settings.nodeId, address: settings.advertise, slot: slot, epoch: epoch, startedAt: startedAt)
            try await publish(identity, connections: connections, lease: lease)
            (kvs, revision) = try await etcd.getPrefix(settings.etcdPrefix)
        } catch {
            // Give back whatever this attempt claimed: a slot held by a lease nobody keeps alive
            // would stay taken for a TTL per retry, and grow the topic.
            try? await etcd.revokeLease(lease)
            throw error
        }
        state.withLock { state in
            state.slots = [:]
            state.nodes = [:]
            for kv in kvs { apply(kv, deleted: false, to: &state) }
            state.identity = identity
            state.problem = nil
        }
        logger.info("joined the cluster", metadata: ["slot": "\(identity.slot)", "epoch": "\(identity.epoch)"])
        changes.yield(identity)
        return (lease, revision)
    }

    private func claimSlot(lease: Int64) async throws -> (UInt32, UInt64) {
        let value = Array(settings.nodeId.utf8)
        var count = try await admin.partitionCount(settings.unicastTopic) ?? settings.unicastPartitions
        var slot: Int32 = 0
        while true {
            while slot < count {
                let (created, kv) = try await etcd.createIfAbsent(settings.etcdKeys.slot(UInt32(slot)), value: value, lease: lease)
                if created, let kv { return (UInt32(slot), UInt64(kv.createRevision)) }
                slot += 1
            }
            // Every slot is held: grow the topic, where the broker allows it.
            let total = count + max(4, count / 2)
            do {
                try await admin.createPartitions(settings.unicastTopic, total: total)
                logger.notice("grew \(settings.unicastTopic)", metadata: ["partitions": "\(total)"])
                count = total
            } catch {
                throw ClusterError.noFreeSlot(
                    "all \(count) slots of \(settings.unicastTopic) are held and the broker refused to add partitions (\(error)); "
                        + "create \(settings.unicastTopic) with more partitions (--unicast-partitions) or add them on the broker")
            }
        }
    }

    private func publish(_ identity: NodeIdentity, connections: Int, lease: Int64) async throws {
        let record = NodeRecord(
            nodeId: identity.nodeId, address: identity.address, slot: identity.slot, epoch: identity.epoch,
            startedAt: identity.startedAt, connections: connections, version: settings.version)
        try await etcd.put(settings.etcdKeys.node(identity.nodeId), value: Array(try JSONEncoder().encode(record)), lease: lease)
    }

    /// Renews the lease every TTL/10 (at least every 500 ms apart), and retries a failed renewal
    /// every 250 ms, so a path cut shorter than the TTL costs nothing. Each success moves the
    /// local deadline (`leaseProvenUntil`); past it the node stops serving its slot until etcd
    /// answers again. Returns only when etcd says the lease is gone (the node then re-joins).
    private func keepAlive(_ lease: Int64) async {
        let clock = ContinuousClock()
        let ttl = Duration.seconds(settings.leaseTTL)
        let period = max(ttl / 10, .milliseconds(500))
        let margin = max(ttl / 10, .milliseconds(200))
        let retry = Duration.milliseconds(250)
        var next = clock.now + period
        while !Task.isCancelled {
            do {
                try await Task.sleep(until: next, clock: clock)
            } catch {
                return
            }
            let sentAt = clock.now
            do {
                guard let remaining = try await etcd.keepAliveOnce(lease: lease) else { return }
                state.withLock { $0.leaseProvenUntil = sentAt + .seconds(remaining) - margin }
                if markReachable(true) { logger.notice("etcd reachable again; lease renewed") }
                next = sentAt + period
            } catch {
                if markReachable(false) { logger.warning("etcd unreachable", metadata: ["error": "\(error)"]) }
                next = clock.now + retry
            }
        }
    }

    /// Follows every change under the prefix; after a broken watch, reloads the view and
    /// watches again from there.
    private func watch(from start: Int64) async {
        var next = start
        while !Task.isCancelled {
            do {
                for try await event in etcd.watchPrefix(settings.etcdPrefix, startRevision: next) {
                    let (generation, gone) = state.withLock { state -> (Int64?, NodeRecord?) in
                        let before = state.logGeneration
                        let gone = apply(event.kv, deleted: event.kind == .delete, to: &state)
                        return (state.logGeneration > before ? state.logGeneration : nil, gone)
                    }
                    if let generation { newGenerations.yield(generation) }
                    if let gone { departed.yield(gone) }
                    next = max(next, event.kv.modRevision + 1, event.revision + 1)
                }
            } catch {
                if Task.isCancelled { return }
                markReachable(false)
            }
            try? await Task.sleep(for: .seconds(1))
            guard !Task.isCancelled else { return }
            do {
                let (kvs, revision) = try await etcd.getPrefix(settings.etcdPrefix)
                let (generation, gone) = state.withLock { state -> (Int64?, [NodeRecord]) in
                    let before = state.logGeneration
                    let known = state.nodes
                    state.slots = [:]
                    state.nodes = [:]
                    for kv in kvs { apply(kv, deleted: false, to: &state) }
                    // Nodes that left while the watch was broken.
                    let gone = known.values.filter { old in
                        old.nodeId != settings.nodeId
                            && !old.sameEpoch(as: state.nodes[old.nodeId])
                    }
                    return (state.logGeneration > before ? state.logGeneration : nil, gone)
                }
                if let generation { newGenerations.yield(generation) }
                for record in gone { departed.yield(record) }
                next = revision + 1
                markReachable(true)
            } catch {
                markReachable(false)
            }
        }
    }

    /// Keeps the published connection count roughly current.
    private func refreshRecord(lease: Int64, connections: @escaping @Sendable () -> Int) async {
        var published = -1
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(5))
            let count = connections()
            guard count != published, let identity = state.withLock({ $0.identity }) else { continue }
            if (try? await publish(identity, connections: count, lease: lease)) != nil { published = count }
        }
    }

    /// Answers whether reachability changed.
    @discardableResult
    private func markReachable(_ reachable: Bool) -> Bool {
        state.withLock { state in
            defer { state.etcdReachable = reachable }
            return state.etcdReachable != reachable
        }
    }

    /// Applies one change to the view; answers the other node it ended, if it ended one.
    @discardableResult
    private func apply(_ kv: EtcdKeyValue, deleted: Bool, to state: inout State) -> NodeRecord? {
        switch settings.etcdKeys.parse(kv.key) {
        case .slot(let slot):
            state.slots[slot] = deleted ? nil : UInt64(kv.createRevision)
        case .node(let nodeId):
            let old = state.nodes[nodeId]
            let new = deleted ? nil : try? JSONDecoder().decode(NodeRecord.self, from: Data(kv.value))
            state.nodes[nodeId] = new
            if let old, nodeId != settings.nodeId, !old.sameEpoch(as: new) {
                return old
            }
        case .system(let systemId):
            state.systems[systemId] = deleted ? nil : try? JSONDecoder().decode(SystemRecord.self, from: Data(kv.value))
        case .logGeneration:
            if !deleted { state.logGeneration = max(state.logGeneration, kv.modRevision) }
        case .other:
            break
        }
        return nil
    }

    /// On shutdown: give the slot back at once rather than after the TTL.
    private func leave() async {
        guard let lease = state.withLock({ $0.lease }) else { return }
        let etcd = self.etcd
        // Detached: the running task is already cancelled, and the revoke must still go out.
        await Task.detached { try? await etcd.revokeLease(lease) }.value
    }
}
