import Foundation

/// Who came or went, as group members see it in presence frames.
public struct PresenceInfo: Sendable, Hashable, Codable {
    public var clientId: String
    public var userId: String
    public var extend: String

    public init(clientId: String, userId: String, extend: String) {
        self.clientId = clientId
        self.userId = userId
        self.extend = extend
    }
}

public enum PresenceEvent: Int, Sendable, Hashable {
    case joined = 1001
    case left = 1002

    var text: String { self == .joined ? "client joined the group" : "client left the group" }
}

struct PresenceFrame: Encodable {
    var messageId: String
    var sendUserId: String
    var code: Int
    var msg: String
    var data: PresenceInfo
    var groupName: String
    var ts: Int64
}

struct StatusFrame<Payload: Encodable>: Encodable {
    var code: Int
    var msg: String
    var data: Payload
}

struct ClientIDData: Encodable {
    var clientId: String
}

/// Encodes the frames the server writes to clients.
public enum FrameEncoding {
    /// Our own frame types: plain strings, numbers and flags, never a client's `data`, so the
    /// encoder has nothing it could refuse; should it ever, the answer is an empty object.
    public static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The frame a client receives for a pushed message (go-websocket's envelope plus `ts`),
    /// keys sorted, `data` spliced in as the business system sent it.
    public static func push(messageId: String, payload: PushPayload, groupName: String?, ts: Int64, redelivered: Bool) -> String {
        JSONWriter.object(capacity: payload.data.text.utf8.count + payload.msg.utf8.count + 160) { w in
            w.member("code", payload.code)
            w.member("data", payload.data)
            if let groupName { w.member("groupName", groupName) }
            w.member("messageId", messageId)
            w.member("msg", payload.msg)
            if redelivered { w.member("redelivered", true) }
            w.member("sendUserId", payload.sendUserId)
            w.member("ts", ts)
        }
    }

    /// `{"code":0,"msg":"success","data":{"clientId":…}}`, the first frame of a connection.
    public static func welcome(clientId: String) -> String {
        encode(StatusFrame(code: 0, msg: "success", data: ClientIDData(clientId: clientId)))
    }

    /// A refusal sent just before closing with 1008 (code -1001 or 4010).
    public static func refusal(code: Int, msg: String) -> String {
        encode(StatusFrame<JSONValue>(code: code, msg: msg, data: .null))
    }

    public static func presence(_ event: PresenceEvent, group: String, info: PresenceInfo, at: Int64) -> String {
        encode(
            PresenceFrame(
                messageId: "", sendUserId: "", code: event.rawValue, msg: event.text, data: info,
                groupName: group, ts: at))
    }
}
