import Foundation

/// How a `BusMessage` travels between nodes (a Kafka record's value): versioned JSON.
/// The client ID travels as its sealed text; the receiving node opens it again.
public enum WireFormat {
    struct Envelope: Codable {
        var v: Int
        var messageId: String
        var systemId: String
        var target: Target
        var body: Body
        var acceptedAt: Int64
        var acceptedBy: String
        var redelivered: Bool?
    }

    struct Target: Codable {
        var kind: String
        var id: String?
        var name: String?
    }

    struct Body: Codable {
        var type: String
        var sendUserId: String?
        var code: Int?
        var msg: String?
        var data: JSONValue?
        var group: String?
        var userId: String?
        var extend: String?
        var event: Int?
        var clientId: String?
    }

    public static func encode(_ message: BusMessage) -> [UInt8] {
        let target: Target =
            switch message.target {
            case .client(_, let raw): Target(kind: "client", id: raw)
            case .group(let name): Target(kind: "group", name: name)
            case .system: Target(kind: "system")
            }
        let body: Body =
            switch message.body {
            case .push(let push):
                Body(type: "push", sendUserId: push.sendUserId, code: push.code, msg: push.msg, data: push.data)
            case .bind(let group, let userId, let extend):
                Body(type: "bind", group: group, userId: userId, extend: extend)
            case .unbind(let group): Body(type: "unbind", group: group)
            case .close: Body(type: "close")
            case .presence(let event, let info):
                Body(type: "presence", userId: info.userId, extend: info.extend, event: event.rawValue, clientId: info.clientId)
            }
        let envelope = Envelope(
            v: 1, messageId: message.messageId, systemId: message.systemId, target: target, body: body,
            acceptedAt: message.acceptedAt, acceptedBy: message.acceptedBy, redelivered: message.redelivered ? true : nil)
        // Plain JSON values only: encoding cannot fail.
        return Array(try! JSONEncoder().encode(envelope))
    }

    /// What ops tools see of a carried message without the client-ID key: its kind, ids,
    /// target as text and payload.
    public struct Inspection: Sendable, Hashable {
        public var messageId: String
        public var systemId: String
        public var kind: MessageKind
        /// The client ID as sent, the group name, or "*" for the whole system.
        public var target: String
        public var groupName: String?
        public var clientId: String?
        public var payload: JSONValue
        public var acceptedAt: Int64
        public var acceptedBy: String
        public var redelivered: Bool
    }

    public static func inspect(_ bytes: [UInt8]) -> Inspection? {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(bytes)), envelope.v == 1 else {
            return nil
        }
        let b = envelope.body
        let isPush = b.type == "push"
        let kind: MessageKind
        let target: String
        switch envelope.target.kind {
        case "client":
            target = envelope.target.id ?? ""
            kind = isPush ? .unicast : (MessageKind(rawValue: b.type) ?? .unicast)
        case "group":
            target = envelope.target.name ?? ""
            kind = isPush ? .group : .presence
        default:
            target = "*"
            kind = .system
        }
        let payload: JSONValue
        switch b.type {
        case "push":
            payload = .object([
                "sendUserId": .string(b.sendUserId ?? ""), "code": .integer(Int64(b.code ?? 0)), "msg": .string(b.msg ?? ""),
                "data": b.data ?? .null,
            ])
        case "bind":
            payload = .object([
                "groupName": .string(b.group ?? ""), "userId": .string(b.userId ?? ""), "extend": .string(b.extend ?? ""),
            ])
        case "unbind":
            payload = .object(["groupName": .string(b.group ?? "")])
        case "presence":
            payload = .object([
                "code": .integer(Int64(b.event ?? 0)), "clientId": .string(b.clientId ?? ""),
                "userId": .string(b.userId ?? ""), "extend": .string(b.extend ?? ""),
            ])
        default:
            payload = .null
        }
        let group = envelope.target.kind == "group" ? envelope.target.name : b.group
        return Inspection(
            messageId: envelope.messageId, systemId: envelope.systemId, kind: kind, target: target, groupName: group,
            clientId: envelope.target.kind == "client" ? envelope.target.id : nil, payload: payload,
            acceptedAt: envelope.acceptedAt, acceptedBy: envelope.acceptedBy, redelivered: envelope.redelivered ?? false)
    }

    /// Decodes a record's value; nil for anything malformed, of an unknown version, or whose
    /// client ID this node cannot open.
    public static func decode(_ bytes: [UInt8], codec: ClientIDCodec) -> BusMessage? {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(bytes)), envelope.v == 1 else {
            return nil
        }
        let target: MessageTarget
        switch envelope.target.kind {
        case "client":
            guard let raw = envelope.target.id, let id = try? codec.open(raw) else { return nil }
            target = .client(id, raw: raw)
        case "group":
            guard let name = envelope.target.name else { return nil }
            target = .group(name)
        case "system":
            target = .system
        default:
            return nil
        }
        let b = envelope.body
        let body: MessageBody
        switch b.type {
        case "push":
            body = .push(PushPayload(sendUserId: b.sendUserId ?? "", code: b.code ?? 0, msg: b.msg ?? "", data: b.data ?? .null))
        case "bind":
            guard let group = b.group else { return nil }
            body = .bind(group: group, userId: b.userId ?? "", extend: b.extend ?? "")
        case "unbind":
            guard let group = b.group else { return nil }
            body = .unbind(group: group)
        case "close":
            body = .close
        case "presence":
            guard let event = b.event.flatMap(PresenceEvent.init(rawValue:)), let clientId = b.clientId else { return nil }
            body = .presence(event, PresenceInfo(clientId: clientId, userId: b.userId ?? "", extend: b.extend ?? ""))
        default:
            return nil
        }
        return BusMessage(
            messageId: envelope.messageId, systemId: envelope.systemId, target: target, body: body,
            acceptedAt: envelope.acceptedAt, acceptedBy: envelope.acceptedBy, redelivered: envelope.redelivered ?? false)
    }
}
