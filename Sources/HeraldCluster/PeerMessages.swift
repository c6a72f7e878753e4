import HeraldCore

/// The node-to-node queries (`POST /internal/<route>`, admin token, JSON in the API's answer
/// envelope), defined once for the node that asks (`ClusterPresence`) and the node that answers
/// (the server's `InternalController`).
public enum PeerRoute: String, CaseIterable, Sendable {
    /// `PeerOnlineQuery` → `PeerOnlineAnswer`: this node's members of a group.
    case onlineList = "online_list"
    /// `PeerStatusQuery` → `PeerStatusAnswer`: whether a client of this node is online.
    case clientStatus = "client_status"
    /// `PeerAppliedQuery` → `PeerAppliedAnswer`: whether this node has applied a record.
    case applied

    /// The path under the node's address.
    public var path: String { "/internal/" + rawValue }
}

public struct PeerOnlineQuery: Codable, Sendable {
    public var systemId: String
    public var groupName: String
}

public struct PeerOnlineAnswer: Codable, Sendable {
    public var list: [PresenceInfo]

    public init(list: [PresenceInfo]) {
        self.list = list
    }
}

/// The owner finds the client by slot, epoch and serial: no need to pass the sealed ID.
public struct PeerStatusQuery: Codable, Sendable {
    public var systemId: String
    public var slot: UInt32
    public var epoch: UInt64
    public var serial: UInt64
}

public struct PeerStatusAnswer: Codable, Sendable {
    public var online: Bool
    public var groups: [String]

    public init(online: Bool, groups: [String]) {
        self.online = online
        self.groups = groups
    }
}

/// A record the asking node produced, by where the bus placed it.
public struct PeerAppliedQuery: Codable, Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public var placement: Placement { Placement(topic: topic, partition: partition, offset: offset) }
}

public struct PeerAppliedAnswer: Codable, Sendable {
    public var applied: Bool

    public init(applied: Bool) {
        self.applied = applied
    }
}
