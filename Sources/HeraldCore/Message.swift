import Foundation

/// What a business system asked to push: the fields of the push frame it controls.
public struct PushPayload: Sendable, Hashable {
    public var sendUserId: String
    public var code: Int
    public var msg: String
    /// Carried as the business system sent it (see `RawJSON`).
    public var data: RawJSON

    public init(sendUserId: String = "", code: Int = 0, msg: String = "", data: RawJSON = .jsonNull) {
        self.sendUserId = sendUserId
        self.code = code
        self.msg = msg
        self.data = data
    }

    /// A payload whose `data` Herald builds itself (tests, tools).
    public init(sendUserId: String = "", code: Int = 0, msg: String = "", data: JSONValue) {
        self.init(sendUserId: sendUserId, code: code, msg: msg, data: data.rawJSON)
    }
}

/// Whom a message is for.
public enum MessageTarget: Sendable, Hashable {
    /// One client; `raw` is the client ID as the business system gave it.
    case client(ClientID, raw: String)
    case group(String)
    case system

    public var description: String {
        switch self {
        case .client(_, let raw): raw
        case .group(let name): name
        case .system: "*"
        }
    }
}

/// What a message does when it reaches the node that holds its target.
public enum MessageBody: Sendable, Hashable {
    case push(PushPayload)
    case bind(group: String, userId: String, extend: String)
    case unbind(group: String)
    case close
    /// Someone joined or left a group; every node tells its local members.
    case presence(PresenceEvent, PresenceInfo)

    public var kind: MessageKind {
        switch self {
        case .push: .unicast
        case .bind: .bind
        case .unbind: .unbind
        case .close: .close
        case .presence: .presence
        }
    }
}

public enum MessageKind: String, Sendable, Codable, CaseIterable {
    case unicast, group, system, bind, unbind, close, presence
}

/// One message on the fabric, as the bus carries it between nodes.
public struct BusMessage: Sendable, Hashable {
    public var messageId: String
    public var systemId: String
    public var target: MessageTarget
    public var body: MessageBody
    /// Milliseconds since the epoch when the API accepted it.
    public var acceptedAt: Int64
    public var acceptedBy: String
    public var redelivered: Bool

    public init(
        messageId: String, systemId: String, target: MessageTarget, body: MessageBody,
        acceptedAt: Int64, acceptedBy: String, redelivered: Bool = false
    ) {
        self.messageId = messageId
        self.systemId = systemId
        self.target = target
        self.body = body
        self.acceptedAt = acceptedAt
        self.acceptedBy = acceptedBy
        self.redelivered = redelivered
    }

    public var kind: MessageKind {
        switch (body, target) {
        case (.push, .group): .group
        case (.push, .system): .system
        default: body.kind
        }
    }

    public var groupName: String? {
        switch (body, target) {
        case (_, .group(let name)): name
        case (.bind(let group, _, _), _), (.unbind(let group), _): group
        default: nil
        }
    }

    /// The push frame a client receives, encoded once and shared by every recipient on a node.
    /// `pos` is the log cut just past the message (resume); `recovered` marks a frame a resume sent.
    public func pushFrame(pos: String? = nil, recovered: Bool = false) -> String? {
        guard case .push(let payload) = body else { return nil }
        return FrameEncoding.push(
            messageId: messageId, payload: payload, groupName: groupName, ts: acceptedAt, redelivered: redelivered, pos: pos,
            recovered: recovered)
    }
}

public enum MessageIDs {
    /// A sortable, unique message id: 12 hex digits of milliseconds, then 16 random hex digits.
    public static func make(now: Int64) -> String {
        let time = String(now, radix: 16)
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        return String(repeating: "0", count: max(0, 12 - time.count)) + time
            + String(repeating: "0", count: 16 - random.count) + random
    }
}

public enum Clock {
    public static func nowMillis() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded())
    }
}
