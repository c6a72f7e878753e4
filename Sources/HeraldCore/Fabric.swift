/// Where the fabric placed a message: a topic partition and offset (Kafka's or the journal's).
public struct Placement: Sendable, Hashable, Codable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

public enum Topics {
    public static let unicast = "herald.unicast"
    public static let broadcast = "herald.broadcast"
    public static let events = "herald.events"
    /// Lifecycle events of clients (docs/lifecycle.md), keyed by system ID.
    public static let lifecycle = "herald.lifecycle"
}

/// Carries messages to the node that holds their target (or to every node, for groups).
///
/// `publish` returns only once the message is durably accepted; when it cannot be, it
/// throws `HeraldError` 5030 and nothing was sent.
public protocol Bus: Sendable {
    func publish(_ message: BusMessage) async throws(HeraldError) -> Placement
}

/// This node as the cluster knows it.
public struct NodeIdentity: Sendable, Hashable, Codable {
    public var nodeId: String
    public var address: String
    public var slot: UInt32
    public var epoch: UInt64
    public var startedAt: Int64

    public init(nodeId: String, address: String, slot: UInt32, epoch: UInt64, startedAt: Int64) {
        self.nodeId = nodeId
        self.address = address
        self.slot = slot
        self.epoch = epoch
        self.startedAt = startedAt
    }
}

/// A live node, as /admin/nodes lists it.
public struct NodeInfo: Sendable, Hashable, Codable {
    public var nodeId: String
    public var address: String
    public var slot: UInt32
    public var epoch: UInt64
    public var connections: Int
    public var startedAt: Int64

    public init(identity: NodeIdentity, connections: Int) {
        nodeId = identity.nodeId
        address = identity.address
        slot = identity.slot
        epoch = identity.epoch
        self.connections = connections
        startedAt = identity.startedAt
    }
}

/// Who is alive and who holds which slot.
public protocol Membership: Sendable {
    var local: NodeIdentity { get }
    /// Whether `slot` is held by `epoch` in the node's current view.
    func holds(slot: UInt32, epoch: UInt64) -> Bool
    var isReady: Bool { get }
    /// Whether this node can prove, now, that it still holds its own slot (a cluster node
    /// whose lease could not be renewed in time cannot).
    var provesOwnSlot: Bool { get }
}

extension Membership {
    public var provesOwnSlot: Bool { true }
}

/// Membership of a node alone: it holds slot 0 with an epoch unique to this start, so IDs
/// issued before a restart are recognised as gone.
public struct StandaloneMembership: Membership {
    public let local: NodeIdentity

    public init(nodeId: String, address: String, startedAt: Int64 = Clock.nowMillis()) {
        local = NodeIdentity(nodeId: nodeId, address: address, slot: 0, epoch: UInt64(startedAt), startedAt: startedAt)
    }

    public func holds(slot: UInt32, epoch: UInt64) -> Bool {
        slot == local.slot && epoch == local.epoch
    }

    public var isReady: Bool { true }
}

/// A membership that is just this node, as given.
struct FixedMembership: Membership {
    let local: NodeIdentity

    func holds(slot: UInt32, epoch: UInt64) -> Bool {
        slot == local.slot && epoch == local.epoch
    }

    var isReady: Bool { true }
}

/// Who is online across the fabric: the local registry on a standalone node; every live
/// node, asked in parallel, in a cluster.
public protocol PresenceDirectory: Sendable {
    /// The group's members, and the nodes that did not answer in time.
    func onlineList(systemId: String, group: String) async -> (list: [PresenceInfo], unreachable: [String])
    /// Whether the client `id` (already checked to be this system's) is online, and its groups.
    func status(systemId: String, id: ClientID) async throws(HeraldError) -> (online: Bool, groups: [String])
    /// Waits (bounded) until the node that owns `id` has applied the message the bus placed
    /// at `placement`; answers whether it has. Standalone, the bus applies before it answers.
    func awaitApplied(by id: ClientID, at placement: Placement) async -> Bool
}

extension PresenceDirectory {
    public func awaitApplied(by id: ClientID, at placement: Placement) async -> Bool { true }
}

/// The presence of this node's own connections.
public struct LocalPresence: PresenceDirectory {
    let registry: ConnectionRegistry
    let membership: any Membership

    public init(registry: ConnectionRegistry, membership: any Membership) {
        self.registry = registry
        self.membership = membership
    }

    public func onlineList(systemId: String, group: String) async -> (list: [PresenceInfo], unreachable: [String]) {
        (registry.presence(of: GroupKey(systemId: systemId, name: group)), [])
    }

    public func status(systemId: String, id: ClientID) async throws(HeraldError) -> (online: Bool, groups: [String]) {
        let local = membership.local
        guard id.slot == local.slot, id.epoch == local.epoch,
            let connection = registry.connection(serial: id.serial), connection.systemId == systemId
        else { return (false, []) }
        return (true, connection.groups.sorted().map(\.value))
    }
}
