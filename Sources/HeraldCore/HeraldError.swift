/// The contract's error codes (API.md), each defined here once. A code is four digits whose first
/// three are the HTTP status of the answer, so the status is derived, never chosen; the one
/// exception, 4004 (no such route: 404), predates the rule and is kept for clients that know it.
public enum ErrorCode: Int, Sendable, CaseIterable {
    /// malformed JSON, a missing or invalid field
    case invalidRequest = 4000
    /// a clientId that is malformed or not issued by this cluster
    case malformedClientId = 4001
    /// no such route
    case noRoute = 4004
    /// missing or wrong credentials
    case unauthorized = 4010
    /// the clientId belongs to another system
    case wrongSystem = 4030
    /// an Origin that is not allowed
    case originNotAllowed = 4031
    /// the client is offline
    case clientOffline = 4040
    /// unknown systemId
    case unknownSystem = 4041
    /// no record of the messageId
    case unknownMessage = 4044
    /// a method the route does not take
    case methodNotAllowed = 4050
    /// systemId already registered
    case alreadyRegistered = 4090
    /// Idempotency-Key reused with a different body
    case idempotencyConflict = 4091
    /// body or message too large
    case tooLarge = 4130
    /// rate limit exceeded
    case rateLimited = 4290
    /// the fabric could not take it; nothing was sent, retry is safe
    case unavailable = 5030
    /// outcome unknown; retry with the same Idempotency-Key
    case outcomeUnknown = 5031

    public var status: Int { self == .noRoute ? 404 : rawValue / 10 }
}

/// An answer the API gives when a request cannot be carried out.
///
/// `code` is the contract's error code (API.md): four digits whose first three are the HTTP
/// status that goes with it (4130 is 413, 5031 is 503), so the status is derived, never chosen.
public struct HeraldError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int
    public let message: String
    /// Extra data for the answer's `data` field, e.g. the message id a failed send was traced under.
    public var data: JSONValue?

    public init(_ code: ErrorCode, message: String, data: JSONValue? = nil) {
        self.code = code.rawValue
        self.status = code.status
        self.message = message
        self.data = data
    }

    /// An HTTP error raised beneath Herald's routes (Hummingbird's own, e.g. a body it could not
    /// read): its status and a 0, the contract's code when there is one.
    public init(httpStatus: Int, message: String) {
        let status = (400...599).contains(httpStatus) ? httpStatus : 500
        self.code = ErrorCode(rawValue: status * 10)?.rawValue ?? status * 10
        self.status = status
        self.message = message
    }

    /// The HTTP status of the answer (`ErrorCode.status`).
    public let status: Int

    public func with(messageId: String) -> HeraldError {
        var copy = self
        copy.data = .object(["messageId": .string(messageId)])
        return copy
    }

    public var description: String { "\(code): \(message)" }

    public static func invalidField(_ field: String, _ detail: String = "is missing or invalid") -> HeraldError {
        HeraldError(.invalidRequest, message: "\(field) \(detail)")
    }
    public static func malformedJSON(_ detail: String) -> HeraldError {
        HeraldError(.invalidRequest, message: "malformed JSON body: \(detail)")
    }
    public static let badClientID = HeraldError(.malformedClientId, message: "clientId is malformed or was not issued by this cluster")
    public static func unauthorized(_ detail: String) -> HeraldError {
        HeraldError(.unauthorized, message: detail)
    }
    public static let foreignClient = HeraldError(.wrongSystem, message: "clientId belongs to another system")
    public static let clientOffline = HeraldError(.clientOffline, message: "client is offline")
    public static func unknownSystem(_ id: String) -> HeraldError {
        HeraldError(.unknownSystem, message: "unknown systemId \(id)")
    }
    public static let unknownMessage = HeraldError(.unknownMessage, message: "no record of this messageId")
    public static func alreadyRegistered(_ id: String) -> HeraldError {
        HeraldError(.alreadyRegistered, message: "systemId \(id) is already registered")
    }
    public static let idempotencyConflict = HeraldError(.idempotencyConflict, message: "Idempotency-Key was already used with a different request body")
    public static func tooLarge(_ limit: Int) -> HeraldError {
        HeraldError(.tooLarge, message: "body or message larger than \(limit) bytes")
    }
    public static let rateLimited = HeraldError(.rateLimited, message: "rate limit exceeded for this system")
    /// Kafka may have the message (it was sent, its acknowledgement never came): a retry with
    /// the same Idempotency-Key is the safe way on.
    public static func outcomeUnknown(_ detail: String) -> HeraldError {
        HeraldError(.outcomeUnknown, message: "outcome unknown, Kafka may have the message; retry with the same Idempotency-Key: \(detail)")
    }
    public static func recordTooLarge(_ size: Int, limit: Int) -> HeraldError {
        HeraldError(.tooLarge, message: "message is \(size) bytes as a Kafka record; the fabric takes at most \(limit)")
    }
    public static func unavailable(_ detail: String) -> HeraldError {
        HeraldError(.unavailable, message: "fabric unavailable, nothing was sent: \(detail)")
    }
}
