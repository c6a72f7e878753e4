import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird

/// Bodies of the business API, as go-websocket's clients send them. Each is read from the
/// scanner's members (`BodyFields`), not by Foundation's decoder: wrong types are named, and
/// `data` keeps its bytes.
protocol RequestBody {
    init(_ fields: BodyFields) throws(HeraldError)
}

struct RegisterRequest: RequestBody {
    var systemId: String?
    var secret: String?
    var clientAuth: Bool?
    var webhook: String?

    init(_ fields: BodyFields) throws(HeraldError) {
        systemId = try fields.string("systemId")
        secret = try fields.string("secret", maxBytes: FieldLimits.secretBytes)
        clientAuth = try fields.bool("clientAuth")
        webhook = try fields.string("webhook", maxBytes: WebhookURLRule.maxBytes)
    }
}

/// `set_webhook`: the URL, or null to remove it.
struct WebhookRequest: RequestBody {
    var webhook: String?
    /// Whether the body has the member at all (null is a removal; no member is a mistake).
    var given: Bool

    init(_ fields: BodyFields) throws(HeraldError) {
        webhook = try fields.string("webhook", maxBytes: WebhookURLRule.maxBytes)
        given = fields.raw("webhook") != nil
    }
}

/// The push fields of a send, `data` as it was sent.
struct SendFields: RequestBody {
    var sendUserId: String?
    var code: Int?
    var msg: String?
    var data: RawJSON

    init(_ fields: BodyFields) throws(HeraldError) {
        sendUserId = try fields.string("sendUserId", maxBytes: FieldLimits.userIdBytes)
        code = try fields.int("code")
        msg = try fields.string("msg")
        data = fields.raw("data") ?? .jsonNull
    }

    var payload: PushPayload {
        PushPayload(sendUserId: sendUserId ?? "", code: code ?? 0, msg: msg ?? "", data: data)
    }
}

/// The body of every send route: its target (which field depends on the route) and the
/// fields of the push frame.
struct SendRequest: RequestBody {
    var clientId: String?
    var clientIds: [String]?
    var groupName: String?
    var send: SendFields

    init(_ fields: BodyFields) throws(HeraldError) {
        clientId = try fields.string("clientId", maxBytes: FieldLimits.clientIdBytes)
        clientIds = try fields.strings("clientIds", maxCount: FieldLimits.clientIdsPerSend, maxBytes: FieldLimits.clientIdBytes)
        groupName = try fields.string("groupName", maxBytes: FieldLimits.groupNameBytes)
        send = try SendFields(fields)
    }
}

struct BindRequest: RequestBody {
    var clientId: String?
    var groupName: String?
    var userId: String?
    var extend: String?

    init(_ fields: BodyFields) throws(HeraldError) {
        clientId = try fields.string("clientId", maxBytes: FieldLimits.clientIdBytes)
        groupName = try fields.string("groupName", maxBytes: FieldLimits.groupNameBytes)
        userId = try fields.string("userId", maxBytes: FieldLimits.userIdBytes)
        extend = try fields.string("extend", maxBytes: FieldLimits.extendBytes)
    }
}

struct ClientRequest: RequestBody {
    var clientId: String?
    var groupName: String?

    init(_ fields: BodyFields) throws(HeraldError) {
        clientId = try fields.string("clientId", maxBytes: FieldLimits.clientIdBytes)
        groupName = try fields.string("groupName", maxBytes: FieldLimits.groupNameBytes)
    }
}

struct GroupRequest: RequestBody {
    var groupName: String?

    init(_ fields: BodyFields) throws(HeraldError) {
        groupName = try fields.string("groupName", maxBytes: FieldLimits.groupNameBytes)
    }
}

/// The top-level members of a checked JSON body, read by name with the contract's errors:
/// a wrong type or an oversized value answers 4000 naming the field. `null` counts as absent.
struct BodyFields {
    let checked: CheckedBody

    private func value(_ key: String) -> (bytes: [UInt8], range: Range<Int>)? {
        guard let member = checked.members.last(where: { $0.key == key }) else { return nil }
        let slice = checked.bytes[member.value]
        if slice.elementsEqual("null".utf8) { return nil }
        return (checked.bytes, member.value)
    }

    func string(_ key: String, maxBytes: Int? = nil) throws(HeraldError) -> String? {
        guard let (bytes, range) = value(key) else { return nil }
        // An escape is at most 6 bytes for at least 1 decoded byte: a literal this long cannot
        // fit, and is refused without decoding it.
        if let maxBytes, range.count - 2 > maxBytes * 6 { throw .invalidField(key, "must be at most \(maxBytes) bytes") }
        guard let text = JSONScanner.string(in: bytes, range) else { throw .invalidField(key, "must be a string") }
        if let maxBytes, text.utf8.count > maxBytes { throw .invalidField(key, "must be at most \(maxBytes) bytes") }
        return text
    }

    func int(_ key: String) throws(HeraldError) -> Int? {
        guard let (bytes, range) = value(key) else { return nil }
        guard let number = Int(String(decoding: bytes[range], as: UTF8.self)) else {
            throw .invalidField(key, "must be an integer from \(Int.min) to \(Int.max)")
        }
        return number
    }

    func bool(_ key: String) throws(HeraldError) -> Bool? {
        guard let (bytes, range) = value(key) else { return nil }
        switch String(decoding: bytes[range], as: UTF8.self) {
        case "true": return true
        case "false": return false
        default: throw .invalidField(key, "must be true or false")
        }
    }

    func strings(_ key: String, maxCount: Int, maxBytes: Int) throws(HeraldError) -> [String]? {
        guard let (bytes, range) = value(key) else { return nil }
        guard let elements = JSONScanner.elements(in: bytes, range) else {
            throw .invalidField(key, "must be an array of strings")
        }
        guard elements.count <= maxCount else { throw .invalidField(key, "must hold at most \(maxCount) entries") }
        var result: [String] = []
        result.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            guard let text = JSONScanner.string(in: bytes, element) else {
                throw .invalidField("\(key)[\(index)]", "must be a string")
            }
            guard text.utf8.count <= maxBytes else { throw .invalidField("\(key)[\(index)]", "must be at most \(maxBytes) bytes") }
            result.append(text)
        }
        return result
    }

    func raw(_ key: String) -> RawJSON? {
        guard let member = checked.members.last(where: { $0.key == key }) else { return nil }
        return RawJSON(checked: checked.bytes, member.value)
    }
}

/// A request body read and checked: its bytes and its top-level members.
struct CheckedBody {
    var bytes: [UInt8]
    var members: [JSONScanner.Member]

    init(bytes: [UInt8], members: [JSONScanner.Member]) {
        self.bytes = bytes
        self.members = members
    }

    /// A request body checked by the scanner (an empty or blank body reads as `{}`).
    init(body: [UInt8]) throws(HeraldError) {
        var bytes = body
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { bytes = Array("{}".utf8) }
        // The scanner checks syntax, UTF-8 and depth before anything reads a field, so nothing
        // deeper than JSONScanner.maxDepth reaches a decoder or an encoder.
        do {
            self.init(bytes: bytes, members: try JSONScanner.members(of: bytes))
        } catch {
            switch (error.key, error.error.reason) {
            case (let key?, .tooDeep(let limit)):
                throw HeraldError.invalidField(key, "is nested deeper than \(limit) levels")
            case (let key?, .syntax):
                throw HeraldError.malformedJSON("\(error.error) (in the value of \(key))")
            case (nil, _):
                throw HeraldError.malformedJSON("\(error.error)")
            }
        }
    }
}

extension Request {
    /// Reads and checks the JSON body, then builds `Body` from its members: 413 past `limit`,
    /// 4000 naming the field on bad JSON or a wrong field.
    func decodeJSON<Body: RequestBody>(_ type: Body.Type, limit: Int) async throws -> Body {
        try Body(BodyFields(checked: try await checkedBody(limit: limit)))
    }

    /// For bodies of our own (peer queries): checked by the scanner, then Foundation's decoder.
    func decodeJSON<Body: Decodable>(_ type: Body.Type, limit: Int) async throws -> Body {
        let checked = try await checkedBody(limit: limit)
        do {
            return try JSONDecoder().decode(Body.self, from: Data(checked.bytes))
        } catch let DecodingError.keyNotFound(key, _) {
            throw HeraldError.invalidField(key.stringValue)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw HeraldError.invalidField(Self.fieldName(context), "has the wrong type")
        } catch {
            throw HeraldError.malformedJSON("a field has the wrong type")
        }
    }

    private func checkedBody(limit: Int) async throws -> CheckedBody {
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw HeraldError.tooLarge(limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw HeraldError.tooLarge(limit)
        }
        return try CheckedBody(body: Array(buffer.readableBytesView))
    }

    private static func fieldName(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return path.isEmpty ? "body" : path.joined(separator: ".")
    }

    func header(_ name: String) -> String? {
        HTTPField.Name(name).flatMap { headers[$0] }
    }

    /// The token of an `Authorization: Bearer …` header.
    var bearerToken: String? { Self.bearerToken(in: headers[.authorization]) }

    /// The token of an `Authorization: Bearer …` value.
    static func bearerToken(in value: String?) -> String? {
        guard let value else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }
}

/// A required, non-empty string field.
func required(_ value: String?, _ field: String) throws(HeraldError) -> String {
    guard let value, !value.isEmpty else { throw .invalidField(field) }
    return value
}
