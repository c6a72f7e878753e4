import Foundation
import HeraldCore
import HTTPTypes
import Hummingbird

/// Bodies of the business API, as go-websocket's clients send them.
struct RegisterRequest: Decodable {
    var systemId: String?
    var secret: String?
    var clientAuth: Bool?
}

struct SendFields: Decodable {
    var sendUserId: String?
    var code: Int?
    var msg: String?
    var data: JSONValue?

    var payload: PushPayload {
        PushPayload(sendUserId: sendUserId ?? "", code: code ?? 0, msg: msg ?? "", data: data ?? .null)
    }
}

/// The body of every send route: its target (which field depends on the route) and the
/// fields of the push frame.
struct SendRequest: Decodable {
    var clientId: String?
    var clientIds: [String]?
    var groupName: String?
    var send: SendFields

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        clientId = try container.decodeIfPresent(String.self, forKey: .clientId)
        clientIds = try container.decodeIfPresent([String].self, forKey: .clientIds)
        groupName = try container.decodeIfPresent(String.self, forKey: .groupName)
        send = try SendFields(from: decoder)
    }

    enum Keys: String, CodingKey { case clientId, clientIds, groupName }
}

struct BindRequest: Decodable {
    var clientId: String?
    var groupName: String?
    var userId: String?
    var extend: String?
}

struct ClientRequest: Decodable {
    var clientId: String?
    var groupName: String?
}

struct GroupRequest: Decodable {
    var groupName: String?
}

extension Request {
    /// Reads and decodes the JSON body: 413 past `limit`, 4000 naming the field on bad JSON.
    func decodeJSON<Body: Decodable>(_ type: Body.Type, limit: Int) async throws -> Body {
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw HeraldError.tooLarge(limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw HeraldError.tooLarge(limit)
        }
        let data = Data(buffer: buffer, byteTransferStrategy: .noCopy)
        do {
            return try JSONDecoder().decode(Body.self, from: data.isEmpty ? Data("{}".utf8) : data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw HeraldError.invalidField(Self.fieldName(context), "has the wrong type")
        } catch let DecodingError.keyNotFound(key, _) {
            throw HeraldError.invalidField(key.stringValue)
        } catch {
            throw HeraldError.malformedJSON("expected a JSON object")
        }
    }

    private static func fieldName(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return path.isEmpty ? "body" : path.joined(separator: ".")
    }

    func header(_ name: String) -> String? {
        HTTPField.Name(name).flatMap { headers[$0] }
    }

    /// The token of an `Authorization: Bearer …` header.
    var bearerToken: String? {
        guard let value = headers[.authorization] else { return nil }
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
