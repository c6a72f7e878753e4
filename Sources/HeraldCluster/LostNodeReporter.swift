import Foundation
import HeraldCore
import HeraldEtcd
import HeraldKafka
import Logging
import Synchronization

/// Says goodbye for a node that could not: when another node's lease ends, this node tries to
/// become its one reporter (a create-if-absent of `EtcdKeys.lostReport` under its own lease),
/// works out from the log which clients that epoch still held (its newest snapshot plus its
/// events since), sends `disconnected` / `node_lost` for each, and marks the report done. A
/// reporter that dies half-way loses its claim with its lease, and another survivor starts over;
/// the events' IDs are stable, so a second report only repeats what consumers deduplicate.
final class LostNodeReporter: Sendable {
    private let settings: ClusterSettings
    private let etcd: EtcdClient
    private let membership: ClusterMembership
    private let lifecycle: KafkaLifecycleRecorder
    private let admin: KafkaAdmin
    private let scanner: KafkaScanner
    private let logger: Logger
    private let reported = Atomic<Int>(0)

    /// How long one survivor keeps trying to see a dead node reported.
    static let horizon: Duration = .seconds(600)
    /// How long a done marker is kept in etcd.
    static let doneTTL: Int64 = 86_400
    /// The most departures handled at once.
    static let concurrency = 4

    init(
        settings: ClusterSettings, etcd: EtcdClient, membership: ClusterMembership, lifecycle: KafkaLifecycleRecorder,
        admin: KafkaAdmin, scanner: KafkaScanner, logger: Logger
    ) {
        self.settings = settings
        self.etcd = etcd
        self.membership = membership
        self.lifecycle = lifecycle
        self.admin = admin
        self.scanner = scanner
        self.logger = logger
    }

    /// `node_lost` events this node has sent.
    var eventsReported: Int { reported.load(ordering: .relaxed) }

    /// Handles every departure the membership reports, until it ends.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for await node in membership.departures {
                if running >= Self.concurrency {
                    await group.next()
                    running -= 1
                }
                group.addTask { await self.see(reported: node) }
                running += 1
            }
        }
    }

    /// A node shutting down cleanly has said goodbye itself (`node_shutdown`): it marks its epoch
    /// reported, so no survivor reports it again.
    func markReportedBySelf(_ identity: NodeIdentity) async {
        let key = settings.etcdKeys.lostReport(nodeId: identity.nodeId, epoch: identity.epoch)
        do {
            let lease = try await etcd.grantLease(ttl: Self.doneTTL).id
            _ = try await etcd.put(key, string: "reported \(identity.nodeId) shutdown", lease: lease)
        } catch {
            logger.warning("cannot mark this node's clients as said goodbye to in etcd", metadata: ["error": "\(error)"])
        }
    }

    /// Until `node`'s epoch is reported, by this node or another.
    private func see(reported node: NodeRecord) async {
        let key = settings.etcdKeys.lostReport(nodeId: node.nodeId, epoch: node.epoch)
        let giveUp = ContinuousClock.now + Self.horizon
        while !Task.isCancelled, ContinuousClock.now < giveUp {
            do {
                guard let lease = membership.currentLease else {
                    try await Task.sleep(for: .milliseconds(250))
                    continue
                }
                let claim = try await etcd.createIfAbsent(key, value: Array("reporting \(settings.nodeId)".utf8), lease: lease)
                if claim.created {
                    do {
                        let count = try await report(node)
                        let done = try await etcd.grantLease(ttl: Self.doneTTL).id
                        _ = try await etcd.put(key, string: "reported \(settings.nodeId) \(count)", lease: done)
                        logger.notice(
                            "reported the clients of a lost node", metadata: ["node": .string(node.nodeId), "epoch": "\(node.epoch)", "clients": "\(count)"])
                        return
                    } catch {
                        // Give the claim back so that this node or another tries again.
                        _ = try? await etcd.delete(key)
                        throw error
                    }
                }
                // Another node has it: wait until it is done, or its claim went with its lease.
                while !Task.isCancelled {
                    guard let kv = try await etcd.get(key) else { break }
                    if String(decoding: kv.value, as: UTF8.self).hasPrefix("reported ") { return }
                    try await Task.sleep(for: .milliseconds(500))
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning(
                    "cannot report a lost node's clients yet; retrying", metadata: ["node": .string(node.nodeId), "error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Sends `disconnected` / `node_lost` for each client the epoch still held; answers how many.
    private func report(_ node: NodeRecord) async throws -> Int {
        let live = try await clientsStillHeld(by: node)
        let identity = NodeIdentity(
            nodeId: node.nodeId, address: node.address, slot: node.slot, epoch: node.epoch, startedAt: node.startedAt)
        let now = Clock.nowMillis()
        let events = live.values.sorted { $0.clientId < $1.clientId }.map {
            LifecycleEvent(
                .disconnected, systemId: $0.systemId, clientId: $0.clientId, userId: $0.userId, identity: identity, ts: now,
                reason: .nodeLost, reportedBy: settings.nodeId)
        }
        for batch in stride(from: 0, to: events.count, by: 2000).map({ Array(events[$0..<min($0 + 2000, events.count)]) }) {
            guard await lifecycle.sendNow(batch) else { throw HeraldError.unavailable("Kafka did not take the node_lost events") }
            reported.add(batch.count, ordering: .relaxed)
        }
        return events.count
    }

    /// The epoch's newest complete snapshot, then its events from the snapshot's offsets (or,
    /// with no snapshot, from the node's start) to the end of the topic.
    func clientsStillHeld(by node: NodeRecord) async throws -> [String: HeldClients.Client] {
        let topic = settings.lifecycleTopic
        guard let count = try await admin.partitionCount(topic) else { return [:] }
        var starts: [Int64]
        let snapshot = try await newestSnapshot(of: node)
        if let snapshot {
            starts = snapshot[0].lifecycleOffsets
        } else {
            let since = node.startedAt - 10_000
            let found = (try? await admin.offsetsForTimes(topic, partitions: Array(0..<count), timestamp: since)) ?? [:]
            starts = (0..<count).map { max(0, found[$0] ?? 0) }
        }
        // Partitions added since the snapshot are read from their start.
        while starts.count < Int(count) { starts.append(0) }
        let ranges = (0..<count).map { KafkaScanner.Range(topic: topic, partition: $0, from: starts[Int($0)], to: nil) }
        let held = Mutex(HeldClients(nodeId: node.nodeId, epoch: node.epoch, snapshot: snapshot?.flatMap(\.clients) ?? []))
        // The scanner visits each partition in order (across partitions in any order: one
        // client's events are all in its system's partition).
        let complete = try await scanner.scan(ranges, admin: admin, deadline: .seconds(30)) { record in
            guard let event = try? JSONDecoder().decode(LifecycleEvent.self, from: Data(record.value)) else { return }
            held.withLock { $0.apply(event) }
        }
        guard complete else { throw HeraldError.unavailable("could not read \(topic) to its end") }
        return held.withLock { $0.clients }
    }

    /// The parts of the newest complete snapshot of the node's epoch, or nil when there is none:
    /// read from the end of the snapshot topic backwards, in growing windows.
    private func newestSnapshot(of node: NodeRecord) async throws -> [LifecycleSnapshot]? {
        let topic = LifecycleSnapshot.topic(for: settings.lifecycleTopic)
        let marks = try await admin.watermarks(topic, partition: 0)
        let prefix = Array(LifecycleSnapshot.keyPrefix(node: node.nodeId, epoch: node.epoch).utf8)
        var window: Int64 = 256
        var end = marks.high
        var parts: [Int: [Int: LifecycleSnapshot]] = [:]  // seq → part → snapshot
        // The snapshot topic is compacted: its offsets have holes.
        var scanner = self.scanner
        scanner.contiguous = false
        while end > marks.low {
            let from = max(marks.low, end - window)
            let found = Mutex<[LifecycleSnapshot]>([])
            _ = try await scanner.scan(
                [KafkaScanner.Range(topic: topic, partition: 0, from: from, to: end)], admin: admin, deadline: .seconds(20)
            ) { record in
                guard let key = record.key, key.starts(with: prefix),
                    let snapshot = try? JSONDecoder().decode(LifecycleSnapshot.self, from: Data(record.value))
                else { return }
                found.withLock { $0.append(snapshot) }
            }
            for snapshot in found.withLock({ $0 }) { parts[snapshot.seq, default: [:]][snapshot.part] = snapshot }
            if let seq = parts.keys.sorted(by: >).first(where: { seq in
                guard let any = parts[seq]?.values.first else { return false }
                return parts[seq]?.count == any.parts
            }), let snapshot = parts[seq] {
                return snapshot.keys.sorted().compactMap { snapshot[$0] }
            }
            end = from
            window *= 4
        }
        return nil
    }
}
