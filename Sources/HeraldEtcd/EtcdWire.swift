// JSON shapes of the etcd v3 gateway (grpc-gateway / jsonpb).
// Keys and values are base64, int64 fields are JSON strings, default values are left out.

import Foundation

/// An int64 that the gateway writes as a JSON string (also accepts a number).
struct WireInt64: Decodable, Sendable {
    var value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let string = try? container.decode(String.self) {
            guard let parsed = Int64(string) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an int64: \(string)")
            }
            value = parsed
        } else {
            value = try container.decode(Int64.self)
        }
    }
}

/// A uint64 (member ids) that the gateway writes as a JSON string (also accepts a number).
struct WireUInt64: Decodable, Sendable {
    var value: UInt64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let string = try? container.decode(String.self) {
            guard let parsed = UInt64(string) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a uint64: \(string)")
            }
            value = parsed
        } else {
            value = try container.decode(UInt64.self)
        }
    }
}

extension Optional where Wrapped == WireInt64 {
    var int64: Int64 { self?.value ?? 0 }
}

enum Base64 {
    static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func encode(_ string: String) -> String { Data(string.utf8).base64EncodedString() }

    static func decode(_ string: String?) throws -> [UInt8] {
        guard let string, !string.isEmpty else { return [] }
        guard let data = Data(base64Encoded: string) else {
            throw EtcdError.badResponse("invalid base64: \(string.prefix(80))")
        }
        return [UInt8](data)
    }
}

// MARK: Responses

struct WireHeader: Decodable, Sendable {
    var revision: WireInt64?
}

struct WireKeyValue: Decodable, Sendable {
    var key: String?
    var value: String?
    var create_revision: WireInt64?
    var mod_revision: WireInt64?
    var version: WireInt64?
    var lease: WireInt64?

    func decoded() throws -> EtcdKeyValue {
        EtcdKeyValue(
            key: String(decoding: try Base64.decode(key), as: UTF8.self),
            value: try Base64.decode(value),
            createRevision: create_revision.int64,
            modRevision: mod_revision.int64,
            version: version.int64,
            lease: lease.int64
        )
    }
}

struct WireRangeResponse: Decodable, Sendable {
    var header: WireHeader?
    var kvs: [WireKeyValue]?
}

struct WirePutResponse: Decodable, Sendable {
    var header: WireHeader?
}

struct WireDeleteRangeResponse: Decodable, Sendable {
    var header: WireHeader?
    var deleted: WireInt64?
}

struct WireResponseOp: Decodable, Sendable {
    var response_range: WireRangeResponse?
    var response_put: WirePutResponse?
    var response_delete_range: WireDeleteRangeResponse?
}

struct WireTxnResponse: Decodable, Sendable {
    var header: WireHeader?
    var succeeded: Bool?
    var responses: [WireResponseOp]?
}

struct WireLeaseGrantResponse: Decodable, Sendable {
    var header: WireHeader?
    var ID: WireInt64?
    var TTL: WireInt64?
    var error: String?
}

struct WireLeaseKeepAliveResponse: Decodable, Sendable {
    var ID: WireInt64?
    var TTL: WireInt64?
}

struct WireStatusResponse: Decodable, Sendable {
    var header: WireHeader?
    var version: String?
    var leader: WireUInt64?
}

/// Error object of a streamed (server-streaming) gateway answer.
struct WireStreamError: Decodable, Sendable {
    var grpc_code: Int?
    var http_code: Int?
    var message: String?
    var http_status: String?
}

/// One line of a streamed answer: `{"result":{...}}` or `{"error":{...}}`.
struct WireStreamLine<Result: Decodable & Sendable>: Decodable, Sendable {
    var result: Result?
    var error: WireStreamError?
}

struct WireEvent: Decodable, Sendable {
    var type: String?
    var kv: WireKeyValue?
}

struct WireWatchResponse: Decodable, Sendable {
    var header: WireHeader?
    var created: Bool?
    var canceled: Bool?
    var compact_revision: WireInt64?
    var cancel_reason: String?
    var events: [WireEvent]?
}

/// Error body of a unary gateway answer.
struct WireErrorBody: Decodable, Sendable {
    var error: String?
    var message: String?
    var code: Int?
}

// MARK: Requests

struct WireRangeRequest: Encodable, Sendable {
    var key: String
    var range_end: String?
}

struct WirePutRequest: Encodable, Sendable {
    var key: String
    var value: String
    var lease: String?
}

struct WireDeleteRangeRequest: Encodable, Sendable {
    var key: String
    var range_end: String?
}

struct WireCompare: Encodable, Sendable {
    var key: String
    var target: String
    var result: String
    var create_revision: String?
    var mod_revision: String?
}

struct WireRequestOp: Encodable, Sendable {
    var request_range: WireRangeRequest?
    var request_put: WirePutRequest?
    var request_delete_range: WireDeleteRangeRequest?
}

struct WireTxnRequest: Encodable, Sendable {
    var compare: [WireCompare]
    var success: [WireRequestOp]
    var failure: [WireRequestOp]
}

struct WireLeaseGrantRequest: Encodable, Sendable {
    var TTL: String
    var ID: String
}

struct WireLeaseIDRequest: Encodable, Sendable {
    var ID: String
}

struct WireWatchCreateRequest: Encodable, Sendable {
    var key: String
    var range_end: String?
    var start_revision: String?
}

struct WireWatchRequest: Encodable, Sendable {
    var create_request: WireWatchCreateRequest
}

struct WireEmpty: Encodable, Sendable {}
