import Foundation

/// Where a client was in the log: the next offset of each partition its node reads (the
/// slot's unicast partition and every broadcast partition), as of the frame that carried it.
/// A node hands records to delivery from one stream, so everything before such a cut was
/// handed and nothing after it was: recovering from a cut misses nothing and repeats nothing.
/// The same for every recipient on a node, so a group frame is still encoded once per node.
/// Clients see it as `pos`, opaque (docs/websocket.md, "Resume").
public struct LogCut: Sendable, Hashable {
    public var slot: UInt32
    public var epoch: UInt64
    /// The next offset of the slot's partition of the unicast topic.
    public var unicast: Int64
    /// The next offset of each partition of the broadcast topic, by partition.
    public var broadcast: [Int64]
    /// When the fabric took the last record the cut is past (ms since the epoch): how old a
    /// resume's position is (`--resume-window`).
    public var at: Int64

    public init(slot: UInt32, epoch: UInt64, unicast: Int64, broadcast: [Int64], at: Int64) {
        self.slot = slot
        self.epoch = epoch
        self.unicast = unicast
        self.broadcast = broadcast
        self.at = at
    }

    static let version: UInt8 = 1
    /// More broadcast partitions than a cut can name (Kafka allows more; Herald's default is 4).
    public static let maxBroadcastPartitions = 1024

    /// Version, then slot, epoch, the unicast offset, the partition count and each broadcast
    /// offset as LEB128 varints, in base64url.
    public var encoded: String {
        var bytes: [UInt8] = [Self.version]
        bytes.reserveCapacity(16 + broadcast.count * 3)
        Varint.append(UInt64(slot), to: &bytes)
        Varint.append(epoch, to: &bytes)
        Varint.append(UInt64(max(0, at)), to: &bytes)
        Varint.append(UInt64(max(0, unicast)), to: &bytes)
        Varint.append(UInt64(broadcast.count), to: &bytes)
        for offset in broadcast { Varint.append(UInt64(max(0, offset)), to: &bytes) }
        return Base64URL.encode(bytes)
    }

    /// Nil for anything that is not a cut this version wrote.
    public init?(encoded text: String) {
        guard text.utf8.count <= 4 * Self.maxBroadcastPartitions, let bytes = Base64URL.decode(text), bytes.first == Self.version
        else { return nil }
        var cursor = 1
        guard let slot = Varint.read(bytes, &cursor), slot <= UInt64(UInt32.max),
            let epoch = Varint.read(bytes, &cursor),
            let at = Varint.read(bytes, &cursor), at <= UInt64(Int64.max),
            let unicast = Varint.read(bytes, &cursor), unicast <= UInt64(Int64.max),
            let count = Varint.read(bytes, &cursor), count <= UInt64(Self.maxBroadcastPartitions)
        else { return nil }
        var broadcast: [Int64] = []
        for _ in 0..<Int(count) {
            guard let offset = Varint.read(bytes, &cursor), offset <= UInt64(Int64.max) else { return nil }
            broadcast.append(Int64(offset))
        }
        guard cursor == bytes.count else { return nil }
        self.init(slot: UInt32(slot), epoch: epoch, unicast: Int64(unicast), broadcast: broadcast, at: Int64(at))
    }

    /// The cut just past `placement` (a record of `topic`/`partition` at `offset`, taken at `at`).
    public mutating func advance(past placement: Placement, at timestamp: Int64, unicastTopic: String, broadcastTopic: String) {
        at = max(at, timestamp)
        if placement.topic == unicastTopic, placement.partition == Int32(bitPattern: slot) {
            unicast = max(unicast, placement.offset + 1)
        } else if placement.topic == broadcastTopic, placement.partition >= 0, Int(placement.partition) < broadcast.count {
            broadcast[Int(placement.partition)] = max(broadcast[Int(placement.partition)], placement.offset + 1)
        }
    }
}

/// LEB128: seven bits a byte, low first.
enum Varint {
    static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    static func read(_ bytes: [UInt8], _ cursor: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while cursor < bytes.count, shift < 64 {
            let byte = bytes[cursor]
            cursor += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}

/// What a reconnecting client needs restored, sealed under the cluster's key like client IDs
/// (AES-GCM: nothing stored, nothing a client can forge or read): its old client ID, system,
/// user, and groups with their bind attributes.
public struct SessionToken: Sendable, Hashable {
    public struct Binding: Sendable, Hashable {
        public var group: String
        public var userId: String
        public var extend: String

        public init(group: String, userId: String, extend: String) {
            self.group = group
            self.userId = userId
            self.extend = extend
        }
    }

    public var clientId: String
    public var systemId: String
    public var userId: String
    public var groups: [Binding]
    /// Milliseconds since the epoch when the token was made.
    public var issuedAt: Int64

    public init(clientId: String, systemId: String, userId: String, groups: [Binding], issuedAt: Int64) {
        self.clientId = clientId
        self.systemId = systemId
        self.userId = userId
        self.groups = groups
        self.issuedAt = issuedAt
    }

    /// The largest sealed token issued: it travels in a URL. A client whose groups and bind
    /// attributes need more gets no token (`session` null in its 1003 frame) and cannot resume.
    public static let maxSealedBytes = 6 * 1024
    static let version: UInt8 = 1

    /// The sealed token, or nil when it would exceed `maxSealedBytes`.
    public func sealed(with codec: ClientIDCodec) -> String? {
        var bytes: [UInt8] = [Self.version]
        Varint.append(UInt64(bitPattern: issuedAt), to: &bytes)
        for text in [clientId, systemId, userId] { Self.append(text, to: &bytes) }
        Varint.append(UInt64(groups.count), to: &bytes)
        for binding in groups {
            for text in [binding.group, binding.userId, binding.extend] { Self.append(text, to: &bytes) }
        }
        // AES-GCM adds 30 bytes, base64 a third.
        guard (bytes.count + 30) * 4 / 3 + 4 <= Self.maxSealedBytes else { return nil }
        return Base64URL.encode(codec.sealBytes(Data(bytes)))
    }

    /// Nil for a token this cluster did not seal (or a damaged one).
    public static func open(_ text: String, with codec: ClientIDCodec) -> SessionToken? {
        guard text.utf8.count <= maxSealedBytes, let raw = Base64URL.decode(text), let plain = codec.openBytes(Data(raw))
        else { return nil }
        let bytes = [UInt8](plain)
        guard bytes.first == version else { return nil }
        var cursor = 1
        guard let issued = Varint.read(bytes, &cursor), let clientId = string(bytes, &cursor),
            let systemId = string(bytes, &cursor), let userId = string(bytes, &cursor),
            let count = Varint.read(bytes, &cursor), count <= UInt64(FieldLimits.groupsPerClient)
        else { return nil }
        var groups: [Binding] = []
        for _ in 0..<Int(count) {
            guard let group = string(bytes, &cursor), let user = string(bytes, &cursor), let extend = string(bytes, &cursor)
            else { return nil }
            groups.append(Binding(group: group, userId: user, extend: extend))
        }
        guard cursor == bytes.count else { return nil }
        return SessionToken(
            clientId: clientId, systemId: systemId, userId: userId, groups: groups, issuedAt: Int64(bitPattern: issued))
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        Varint.append(UInt64(text.utf8.count), to: &bytes)
        bytes += text.utf8
    }

    private static func string(_ bytes: [UInt8], _ cursor: inout Int) -> String? {
        guard let length = Varint.read(bytes, &cursor), length <= UInt64(bytes.count - cursor) else { return nil }
        let end = cursor + Int(length)
        defer { cursor = end }
        return String(validating: bytes[cursor..<end], as: UTF8.self)
    }
}

/// What a reconnect with `resume` and `since` asked for, and why it can or cannot be granted.
public enum ResumeRequest: Sendable, Hashable {
    case resume(SessionToken, since: LogCut)
    /// Asked with something unusable: the client is admitted afresh and told why.
    case refused(reason: String)
}

/// How a resume ended, as the welcome frame tells it.
public enum ResumeOutcome: Sendable, Hashable {
    case resumed(recovered: Int)
    case notResumed(reason: String)
}

/// The bounds every node applies to a resume (`--resume-window`, `--resume-max-messages`,
/// and the client's outbound queue in bytes: what it recovers is queued for it at once).
public struct ResumeLimits: Sendable, Hashable {
    public var windowMillis: Int64
    public var maxMessages: Int
    public var maxBytes: Int

    public init(windowMillis: Int64, maxMessages: Int, maxBytes: Int = .max) {
        self.windowMillis = windowMillis
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }
}

/// What a resume recovered, or why it recovered nothing.
public enum ResumeRecovery: Sendable {
    /// The messages, oldest first, each with the cut just past it (its frame's `pos`), and the
    /// cut before the first of them (the new session's `pos`: resuming from it recovers them
    /// again).
    case recovered([(message: BusMessage, cut: LogCut)], from: LogCut)
    /// Not resumable (the client is told why and resyncs from its business system).
    case refused(String)
    /// Not now (Kafka did not answer, too many resumes at once): the client is closed 1013 and
    /// may try the same resume again.
    case unavailable(String)

    /// What a recovered message costs the client's queue: its push frame's bytes.
    public static func size(of message: BusMessage) -> Int {
        message.pushFrame(pos: "", recovered: true)?.utf8.count ?? 0
    }

    /// Whether `message` was pushed to the token's client: to its old ID, one of its groups
    /// or its system.
    public static func isFor(_ token: SessionToken, groups: Set<String>, _ message: BusMessage) -> Bool {
        guard message.systemId == token.systemId, case .push = message.body else { return false }
        switch message.target {
        case .client(_, let raw): return raw == token.clientId
        case .group(let name): return groups.contains(name)
        case .system: return true
        }
    }
}
