import Synchronization

/// Where frames for one connected client go. The server's connection implements it;
/// pushing never blocks and never buffers without limit (the sink closes a client that
/// falls behind).
public protocol ClientSink: AnyObject, Sendable {
    /// Queues a frame; answers false if the client is closed or was just closed for falling behind.
    @discardableResult func push(_ frame: OutboundFrame) -> Bool
    func close(code: UInt16, reason: String)
    /// The client's groups changed (a bind or unbind was applied at `cut`, where the log stands
    /// just past it, if known): its session token is stale.
    func groupsChanged(at cut: LogCut?)
}

extension ClientSink {
    public func groupsChanged(at cut: LogCut?) {}

    @discardableResult public func push(_ text: String) -> Bool {
        push(OutboundFrame(text))
    }
}

/// One text frame on its way to one or many clients. Sinks of a group send get the same
/// instance, so a transport can tell it is one frame and encode it once, not once per member.
public final class OutboundFrame: Sendable {
    public let text: String
    /// The pushed message's id, so the session can accept the client's ack for it; nil for
    /// frames that are not pushes (presence, status).
    public let messageId: String?

    public init(_ text: String, messageId: String? = nil) {
        self.text = text
        self.messageId = messageId
    }
}

/// A string compared and hashed by its UTF-8 bytes. Swift's `String` equality is canonical
/// equivalence ("\u{212A}" equals "K", "e\u{301}" equals "é"), while Kafka keys, etcd and
/// every other node compare bytes: identifiers are keyed by this so all of them agree.
public struct ExactString: Hashable, Sendable, Comparable, ExpressibleByStringLiteral, CustomStringConvertible {
    public let value: String

    public init(_ value: String) {
        self.value = value
    }

    public init(stringLiteral value: String) {
        self.value = value
    }

    public static func == (lhs: ExactString, rhs: ExactString) -> Bool {
        lhs.value.utf8.elementsEqual(rhs.value.utf8)
    }

    public func hash(into hasher: inout Hasher) {
        for byte in value.utf8 { hasher.combine(byte) }
        hasher.combine(0xFF as UInt8)  // no UTF-8 string contains 0xFF: a terminator
    }

    public static func < (lhs: ExactString, rhs: ExactString) -> Bool {
        lhs.value.utf8.lexicographicallyPrecedes(rhs.value.utf8)
    }

    public var description: String { value }
}

/// A group of one system, compared by the bytes of both names.
public struct GroupKey: Hashable, Sendable {
    public var systemId: String { system.value }
    public var name: String { group.value }
    private let system: ExactString
    private let group: ExactString

    public init(systemId: String, name: String) {
        self.system = ExactString(systemId)
        self.group = ExactString(name)
    }
}

/// The node's local connections: which system each belongs to, which groups it is in,
/// and who is in each group. Thread-safe; every method is short and never awaits.
public final class ConnectionRegistry: Sendable {
    public struct Connection: Sendable {
        public let serial: UInt64
        public let clientId: String
        public let systemId: String
        public let userId: String
        public let sink: any ClientSink
        /// By bytes, like `GroupKey` (see `ExactString`).
        public fileprivate(set) var groups: Set<ExactString> = []
    }

    struct Member: Sendable {
        var info: PresenceInfo
        var sink: any ClientSink
    }

    struct State: Sendable {
        var connections: [UInt64: Connection] = [:]
        var systems: [String: Set<UInt64>] = [:]
        var groups: [GroupKey: [UInt64: Member]] = [:]
    }

    /// What a bind, unbind or disconnect did to one group, for the caller to announce.
    /// `changed` is false for a repeated bind or an unbind of a client not in the group.
    public struct Change: Sendable {
        public let systemId: String
        public let group: String
        public let info: PresenceInfo
        public let changed: Bool
    }

    private let state = Mutex(State())

    public init() {}

    public var count: Int { state.withLock { $0.connections.count } }

    public func add(_ connection: Connection) {
        state.withLock { state in
            state.connections[connection.serial] = connection
            state.systems[connection.systemId, default: []].insert(connection.serial)
        }
    }

    public func makeConnection(
        serial: UInt64, clientId: String, systemId: String, userId: String, sink: any ClientSink
    ) -> Connection {
        Connection(serial: serial, clientId: clientId, systemId: systemId, userId: userId, sink: sink)
    }

    /// Removes a connection and answers the groups it left, each with the members to tell.
    @discardableResult
    public func remove(serial: UInt64) -> [Change] {
        state.withLock { state in
            guard let connection = state.connections.removeValue(forKey: serial) else { return [] }
            state.systems[connection.systemId]?.remove(serial)
            if state.systems[connection.systemId]?.isEmpty == true {
                state.systems[connection.systemId] = nil
            }
            return connection.groups.sorted().compactMap { group in
                Self.leave(&state, serial: serial, key: GroupKey(systemId: connection.systemId, name: group.value))
            }
        }
    }

    public func connection(serial: UInt64) -> Connection? {
        state.withLock { $0.connections[serial] }
    }

    /// Binds a connection to a group. Answers nil if the connection is gone.
    public enum BindOutcome: Sendable {
        case bound(Change)
        /// The connection is in `FieldLimits.groupsPerClient` groups already.
        case tooManyGroups
        case offline

        public var change: Change? {
            if case .bound(let change) = self { change } else { nil }
        }
    }

    public func bind(serial: UInt64, group: String, userId: String, extend: String) -> BindOutcome {
        state.withLock { state in
            guard var connection = state.connections[serial] else { return .offline }
            let key = GroupKey(systemId: connection.systemId, name: group)
            let info = PresenceInfo(
                clientId: connection.clientId, userId: userId.isEmpty ? connection.userId : userId,
                extend: extend)
            let alreadyBound = state.groups[key]?[serial] != nil
            if !alreadyBound, connection.groups.count >= FieldLimits.groupsPerClient { return .tooManyGroups }
            state.groups[key, default: [:]][serial] = Member(info: info, sink: connection.sink)
            if alreadyBound { return .bound(Change(systemId: connection.systemId, group: group, info: info, changed: false)) }
            connection.groups.insert(ExactString(group))
            state.connections[serial] = connection
            return .bound(Change(systemId: connection.systemId, group: group, info: info, changed: true))
        }
    }

    /// Unbinds a connection from a group. Answers nil if the connection is gone.
    public func unbind(serial: UInt64, group: String) -> Change? {
        state.withLock { state in
            guard var connection = state.connections[serial] else { return nil }
            let key = GroupKey(systemId: connection.systemId, name: group)
            guard connection.groups.remove(ExactString(group)) != nil else {
                let info = PresenceInfo(clientId: connection.clientId, userId: connection.userId, extend: "")
                return Change(systemId: connection.systemId, group: group, info: info, changed: false)
            }
            state.connections[serial] = connection
            return Self.leave(&state, serial: serial, key: key)
        }
    }

    private static func leave(_ state: inout State, serial: UInt64, key: GroupKey) -> Change? {
        guard let member = state.groups[key]?.removeValue(forKey: serial) else { return nil }
        if state.groups[key]?.isEmpty == true { state.groups[key] = nil }
        return Change(systemId: key.systemId, group: key.name, info: member.info, changed: true)
    }

    /// A connection's groups with the attributes each was bound with, by group name.
    public func bindings(serial: UInt64) -> [SessionToken.Binding]? {
        state.withLock { state in
            guard let connection = state.connections[serial] else { return nil }
            return connection.groups.sorted().map { group in
                let info = state.groups[GroupKey(systemId: connection.systemId, name: group.value)]?[serial]?.info
                return SessionToken.Binding(group: group.value, userId: info?.userId ?? "", extend: info?.extend ?? "")
            }
        }
    }

    public func members(of key: GroupKey) -> [any ClientSink] {
        state.withLock { $0.groups[key].map { $0.values.map(\.sink) } ?? [] }
    }

    public func presence(of key: GroupKey) -> [PresenceInfo] {
        state.withLock { $0.groups[key].map { $0.values.map(\.info) } ?? [] }
            .sorted { $0.clientId < $1.clientId }
    }

    public func clients(ofSystem systemId: String) -> [any ClientSink] {
        state.withLock { state in
            (state.systems[systemId] ?? []).compactMap { state.connections[$0]?.sink }
        }
    }

    /// Every connection here, as it is now (for the node's lifecycle snapshots).
    public func allConnections() -> [Connection] {
        state.withLock { Array($0.connections.values) }
    }

    public func allSinks() -> [any ClientSink] {
        state.withLock { $0.connections.values.map(\.sink) }
    }
}
