import Crypto
import Foundation
import Synchronization

/// One lifecycle event: a client connected, disconnected, joined or left a group, or resumed
/// (docs/lifecycle.md; the JSON Schema is docs/lifecycle.schema.json). Encoded once, here.
public struct LifecycleEvent: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        case connected, disconnected, bound, unbound, resumed
    }

    /// Why a client was disconnected.
    public enum Reason: String, Sendable, Hashable, Codable, CaseIterable {
        case clientClosed = "client_closed"
        case idleTimeout = "idle_timeout"
        case slowConsumer = "slow_consumer"
        case closedByAPI = "closed_by_api"
        case nodeShutdown = "node_shutdown"
        case nodeLost = "node_lost"
    }

    public var event: Kind
    /// Stable: the same event sent twice (a retry, a second reporter of a lost node) has the
    /// same ID, so consumers can deduplicate.
    public var eventId: String
    public var systemId: String
    public var clientId: String
    public var userId: String
    /// The node that held the client (for `node_lost`, the dead one).
    public var node: String
    public var slot: UInt32
    public var epoch: UInt64
    /// Milliseconds since the epoch, when it happened (for `node_lost`, when it was reported).
    public var ts: Int64
    public var reason: Reason?
    public var groupName: String?
    /// `resumed`: the client ID of the connection it resumed.
    public var oldClientId: String?
    /// `node_lost`: the surviving node that reported it.
    public var reportedBy: String?

    public init(
        _ event: Kind, systemId: String, clientId: String, userId: String, identity: NodeIdentity, ts: Int64 = Clock.nowMillis(),
        reason: Reason? = nil, groupName: String? = nil, oldClientId: String? = nil, reportedBy: String? = nil,
        discriminator: String = ""
    ) {
        self.event = event
        self.systemId = systemId
        self.clientId = clientId
        self.userId = userId
        self.node = identity.nodeId
        self.slot = identity.slot
        self.epoch = identity.epoch
        self.ts = ts
        self.reason = reason
        self.groupName = groupName
        self.oldClientId = oldClientId
        self.reportedBy = reportedBy
        self.eventId = Self.eventId(event, clientId: clientId, groupName: groupName, discriminator: discriminator)
    }

    /// A client ID has one `connected` (or `resumed`) and one `disconnected`; its binds are told
    /// apart by `discriminator` (the bind's place in the log, or its time where there is none).
    static func eventId(_ kind: Kind, clientId: String, groupName: String?, discriminator: String) -> String {
        var hasher = SHA256()
        for part in [kind.rawValue, clientId, groupName ?? "", discriminator] {
            hasher.update(data: Data(part.utf8))
            hasher.update(data: Data([0]))
        }
        return Base64URL.encode(Array(hasher.finalize().prefix(16)))
    }

    /// The event as one JSON object (keys sorted, absent fields left out).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Roughly what the event holds in memory, for byte bounds.
    public var approximateBytes: Int {
        160 + systemId.utf8.count + clientId.utf8.count + userId.utf8.count + node.utf8.count
            + (groupName?.utf8.count ?? 0) + (oldClientId?.utf8.count ?? 0) + (reportedBy?.utf8.count ?? 0)
    }
}

/// Where a node's lifecycle events go: Kafka (`herald.lifecycle`) on a cluster, memory
/// standalone. Recording never blocks; a recorder that cannot keep an event counts it.
public protocol LifecycleRecorder: Sendable {
    func record(_ event: LifecycleEvent)
    /// The most recent events of `systemId`, oldest first, at most `limit`.
    func recent(systemId: String, limit: Int) async throws(HeraldError) -> [LifecycleEvent]
    /// Events that could not be kept (a full buffer): each one also logged.
    var droppedEvents: Int { get }
}

/// The last events in memory, bounded in count and bytes, oldest evicted first: a standalone
/// node's whole lifecycle store, and what `/admin/events` reads there.
public final class InMemoryLifecycle: LifecycleRecorder {
    struct State {
        var events: [LifecycleEvent] = []
        var head = 0
        var bytes = 0
    }

    private let capacity: Int
    private let capacityBytes: Int
    private let state = Mutex(State())
    /// Called for each event as it is recorded (standalone webhooks, tests).
    private let onRecord: @Sendable (LifecycleEvent) -> Void

    public init(capacity: Int = 10_000, capacityBytes: Int = 8 << 20, onRecord: @escaping @Sendable (LifecycleEvent) -> Void = { _ in }) {
        self.capacity = capacity
        self.capacityBytes = capacityBytes
        self.onRecord = onRecord
    }

    public func record(_ event: LifecycleEvent) {
        state.withLock { state in
            state.events.append(event)
            state.bytes += event.approximateBytes
            while state.events.count - state.head > capacity || state.bytes > capacityBytes {
                state.bytes -= state.events[state.head].approximateBytes
                state.head += 1
            }
            if state.head > 1024, state.head * 2 > state.events.count {
                state.events.removeFirst(state.head)
                state.head = 0
            }
        }
        onRecord(event)
    }

    public func recent(systemId: String, limit: Int) async throws(HeraldError) -> [LifecycleEvent] {
        state.withLock { state in
            Array(state.events[state.head...].filter { $0.systemId == systemId }.suffix(max(0, limit)))
        }
    }

    /// Memory evicts the oldest; nothing is refused.
    public var droppedEvents: Int { 0 }
}
