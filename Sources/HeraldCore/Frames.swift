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

struct ResumedData: Encodable {
    var clientId: String
    var resumed: Bool
    var recovered: Int?
    var reason: String?
}

struct SessionData: Encodable {
    var session: String?
    var pos: String?

    // `session` is written as null when absent, not left out; `pos` is left out.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(pos, forKey: .pos)
        try container.encode(session, forKey: .session)
    }

    enum CodingKeys: String, CodingKey { case session, pos }
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
    public static func push(
        messageId: String, payload: PushPayload, groupName: String?, ts: Int64, redelivered: Bool, pos: String? = nil,
        recovered: Bool = false
    ) -> String {
        JSONWriter.object(capacity: payload.data.text.utf8.count + payload.msg.utf8.count + 200) { w in
            w.member("code", payload.code)
            w.member("data", payload.data)
            if let groupName { w.member("groupName", groupName) }
            w.member("messageId", messageId)
            w.member("msg", payload.msg)
            if let pos { w.member("pos", pos) }
            if recovered { w.member("recovered", true) }
            if redelivered { w.member("redelivered", true) }
            w.member("sendUserId", payload.sendUserId)
            w.member("ts", ts)
        }
    }

    /// `{"code":0,"msg":"success","data":{"clientId":…}}`, the first frame of a connection; one
    /// that asked to resume also gets `resumed` and `recovered` or `reason`.
    public static func welcome(clientId: String, resume: ResumeOutcome? = nil) -> String {
        switch resume {
        case nil:
            return encode(StatusFrame(code: 0, msg: "success", data: ClientIDData(clientId: clientId)))
        case .resumed(let count):
            return encode(StatusFrame(code: 0, msg: "success", data: ResumedData(clientId: clientId, resumed: true, recovered: count)))
        case .notResumed(let reason):
            return encode(StatusFrame(code: 0, msg: "success", data: ResumedData(clientId: clientId, resumed: false, reason: reason)))
        }
    }

    /// `{"code":1003,"msg":"session","data":{"session":…}}`: the token a reconnect resumes with,
    /// after the welcome and after every change of groups; `session` is null when the client's
    /// state is too large to carry (`SessionToken.maxSealedBytes`).
    /// `pos`: where the log stood when this state took effect, to resume from when no push came
    /// after it.
    public static func session(_ token: String?, pos: LogCut? = nil) -> String {
        encode(StatusFrame(code: 1003, msg: "session", data: SessionData(session: token, pos: pos?.encoded)))
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
