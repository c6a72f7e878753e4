import Foundation

/// How a `BusMessage` travels between nodes (a Kafka record's value): versioned JSON.
/// The client ID travels as its sealed text; the receiving node opens it again.
public enum WireFormat {
    /// `target.kind` of an envelope.
    enum TargetKind: String {
        case client, group, system
    }

    /// `body.type` of an envelope.
    enum BodyType: String {
        case push, bind, unbind, close, presence
    }

    /// Writes the envelope by hand: a push's `data` goes in as the business system sent it.
    public static func encode(_ message: BusMessage) -> [UInt8] {
        var capacity = 256
        if case .push(let push) = message.body { capacity += push.data.text.utf8.count + push.msg.utf8.count }
        let text = JSONWriter.object(capacity: capacity) { w in
            w.member("v", 1)
            w.member("messageId", message.messageId)
            w.member("systemId", message.systemId)
            w.key("target")
            w.beginObject()
            switch message.target {
            case .client(_, let raw):
                w.member("kind", TargetKind.client.rawValue)
                w.member("id", raw)
            case .group(let name):
                w.member("kind", TargetKind.group.rawValue)
                w.member("name", name)
            case .system:
                w.member("kind", TargetKind.system.rawValue)
            }
            w.endObject()
            w.key("body")
            w.beginObject()
            switch message.body {
            case .push(let push):
                w.member("type", BodyType.push.rawValue)
                w.member("sendUserId", push.sendUserId)
                w.member("code", push.code)
                w.member("msg", push.msg)
                w.member("data", push.data)
            case .bind(let group, let userId, let extend):
                w.member("type", BodyType.bind.rawValue)
                w.member("group", group)
                w.member("userId", userId)
                w.member("extend", extend)
            case .unbind(let group):
                w.member("type", BodyType.unbind.rawValue)
                w.member("group", group)
            case .close:
                w.member("type", BodyType.close.rawValue)
            case .presence(let event, let info):
                w.member("type", BodyType.presence.rawValue)
                w.member("userId", info.userId)
                w.member("extend", info.extend)
                w.member("event", event.rawValue)
                w.member("clientId", info.clientId)
            }
            w.endObject()
            w.member("acceptedAt", message.acceptedAt)
            w.member("acceptedBy", message.acceptedBy)
            if message.redelivered { w.member("redelivered", true) }
        }
        return Array(text.utf8)
    }

    /// The parts of an envelope every reader needs, read without building a tree.
    struct Envelope {
        var messageId: String
        var systemId: String
        var targetKind: TargetKind
        var targetId: String?
        var targetName: String?
        var body: JSONObjectView
        var type: BodyType
        var acceptedAt: Int64
        var acceptedBy: String
        var redelivered: Bool

        init?(_ bytes: [UInt8]) {
            guard let root = JSONObjectView(bytes), root.integer("v") == 1,
                let messageId = root.string("messageId"), let systemId = root.string("systemId"),
                let target = root.object("target"), let targetKind = target.string("kind").flatMap(TargetKind.init),
                let body = root.object("body"), let type = body.string("type").flatMap(BodyType.init)
            else { return nil }
            self.messageId = messageId
            self.systemId = systemId
            self.targetKind = targetKind
            targetId = target.string("id")
            targetName = target.string("name")
            self.body = body
            self.type = type
            acceptedAt = root.integer("acceptedAt") ?? 0
            acceptedBy = root.string("acceptedBy") ?? ""
            redelivered = root.bool("redelivered") ?? false
        }

        var push: PushPayload {
            PushPayload(
                sendUserId: body.string("sendUserId") ?? "", code: body.integer("code").flatMap { Int(exactly: $0) } ?? 0,
                msg: body.string("msg") ?? "", data: body.raw("data") ?? .jsonNull)
        }
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
        /// The payload as a JSON object, `data` as it was sent.
        public var payload: RawJSON
        public var acceptedAt: Int64
        public var acceptedBy: String
        public var redelivered: Bool
    }

    /// The inspection of a message this node holds (the standalone journal's records). Our own
    /// encoding always reads back; the fallback only keeps this total.
    public static func inspection(of message: BusMessage) -> Inspection {
        inspect(encode(message))
            ?? Inspection(
                messageId: message.messageId, systemId: message.systemId, kind: message.kind,
                target: message.target.description, groupName: message.groupName, clientId: nil, payload: .jsonNull,
                acceptedAt: message.acceptedAt, acceptedBy: message.acceptedBy, redelivered: message.redelivered)
    }

    public static func inspect(_ bytes: [UInt8]) -> Inspection? {
        guard let envelope = Envelope(bytes) else { return nil }
        let b = envelope.body
        let isPush = envelope.type == .push
        let kind: MessageKind
        let target: String
        switch envelope.targetKind {
        case .client:
            target = envelope.targetId ?? ""
            kind = isPush ? .unicast : (MessageKind(rawValue: envelope.type.rawValue) ?? .unicast)
        case .group:
            target = envelope.targetName ?? ""
            kind = isPush ? .group : .presence
        case .system:
            target = "*"
            kind = .system
        }
        let hasPayload = envelope.type != .close
        let payload = JSONWriter.object { w in
            switch envelope.type {
            case .push:
                let push = envelope.push
                w.member("code", push.code)
                w.member("data", push.data)
                w.member("msg", push.msg)
                w.member("sendUserId", push.sendUserId)
            case .bind:
                w.member("extend", b.string("extend") ?? "")
                w.member("groupName", b.string("group") ?? "")
                w.member("userId", b.string("userId") ?? "")
            case .unbind:
                w.member("groupName", b.string("group") ?? "")
            case .presence:
                w.member("clientId", b.string("clientId") ?? "")
                w.member("code", b.integer("event") ?? 0)
                w.member("extend", b.string("extend") ?? "")
                w.member("userId", b.string("userId") ?? "")
            case .close:
                break
            }
        }
        let group = envelope.targetKind == .group ? envelope.targetName : b.string("group")
        return Inspection(
            messageId: envelope.messageId, systemId: envelope.systemId, kind: kind, target: target, groupName: group,
            clientId: envelope.targetKind == .client ? envelope.targetId : nil,
            payload: hasPayload ? RawJSON(trusted: payload) : .jsonNull,
            acceptedAt: envelope.acceptedAt, acceptedBy: envelope.acceptedBy, redelivered: envelope.redelivered)
    }

    /// Decodes a record's value; nil for anything malformed, of an unknown version, or whose
    /// client ID this node cannot open.
    public static func decode(_ bytes: [UInt8], codec: ClientIDCodec) -> BusMessage? {
        guard let envelope = Envelope(bytes) else { return nil }
        let target: MessageTarget
        switch envelope.targetKind {
        case .client:
            guard let raw = envelope.targetId, let id = try? codec.open(raw) else { return nil }
            target = .client(id, raw: raw)
        case .group:
            guard let name = envelope.targetName else { return nil }
            target = .group(name)
        case .system:
            target = .system
        }
        let b = envelope.body
        let body: MessageBody
        switch envelope.type {
        case .push:
            body = .push(envelope.push)
        case .bind:
            guard let group = b.string("group") else { return nil }
            body = .bind(group: group, userId: b.string("userId") ?? "", extend: b.string("extend") ?? "")
        case .unbind:
            guard let group = b.string("group") else { return nil }
            body = .unbind(group: group)
        case .close:
            body = .close
        case .presence:
            guard let event = b.integer("event").flatMap({ PresenceEvent(rawValue: Int($0)) }), let clientId = b.string("clientId")
            else { return nil }
            body = .presence(event, PresenceInfo(clientId: clientId, userId: b.string("userId") ?? "", extend: b.string("extend") ?? ""))
        }
        return BusMessage(
            messageId: envelope.messageId, systemId: envelope.systemId, target: target, body: body,
            acceptedAt: envelope.acceptedAt, acceptedBy: envelope.acceptedBy, redelivered: envelope.redelivered)
    }
}
