/// An answer the API gives when a request cannot be carried out.
///
/// `code` is the contract's error code (API.md); `status` the HTTP status that goes with it.
public struct HeraldError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int
    public let status: Int
    public let message: String
    /// Extra data for the answer's `data` field, e.g. the message id a failed send was traced under.
    public var data: JSONValue?

    public init(code: Int, status: Int, message: String, data: JSONValue? = nil) {
        self.code = code
        self.status = status
        self.message = message
        self.data = data
    }

    public func with(messageId: String) -> HeraldError {
        var copy = self
        copy.data = .object(["messageId": .string(messageId)])
        return copy
    }

    public var description: String { "\(code): \(message)" }

    public static func invalidField(_ field: String, _ detail: String = "is missing or invalid") -> HeraldError {
        HeraldError(code: 4000, status: 400, message: "\(field) \(detail)")
    }
    public static func malformedJSON(_ detail: String) -> HeraldError {
        HeraldError(code: 4000, status: 400, message: "malformed JSON body: \(detail)")
    }
    public static let badClientID = HeraldError(
        code: 4001, status: 400, message: "clientId is malformed or was not issued by this cluster")
    public static func unauthorized(_ detail: String) -> HeraldError {
        HeraldError(code: 4010, status: 401, message: detail)
    }
    public static let foreignClient = HeraldError(
        code: 4030, status: 403, message: "clientId belongs to another system")
    public static let clientOffline = HeraldError(
        code: 4040, status: 404, message: "client is offline")
    public static func unknownSystem(_ id: String) -> HeraldError {
        HeraldError(code: 4041, status: 404, message: "unknown systemId \(id)")
    }
    public static let unknownMessage = HeraldError(
        code: 4044, status: 404, message: "no record of this messageId")
    public static func alreadyRegistered(_ id: String) -> HeraldError {
        HeraldError(code: 4090, status: 409, message: "systemId \(id) is already registered")
    }
    public static let idempotencyConflict = HeraldError(
        code: 4091, status: 409, message: "Idempotency-Key was already used with a different request body")
    public static func tooLarge(_ limit: Int) -> HeraldError {
        HeraldError(code: 4130, status: 413, message: "body or message larger than \(limit) bytes")
    }
    public static let rateLimited = HeraldError(
        code: 4290, status: 429, message: "rate limit exceeded for this system")
    /// Kafka may have the message (it was sent, its acknowledgement never came): a retry with
    /// the same Idempotency-Key is the safe way on.
    public static func outcomeUnknown(_ detail: String) -> HeraldError {
        HeraldError(code: 5031, status: 503, message: "outcome unknown, Kafka may have the message; retry with the same Idempotency-Key: \(detail)")
    }
    public static func recordTooLarge(_ size: Int, limit: Int) -> HeraldError {
        HeraldError(code: 4130, status: 413, message: "message is \(size) bytes as a Kafka record; the fabric takes at most \(limit)")
    }
    public static func unavailable(_ detail: String) -> HeraldError {
        HeraldError(code: 5030, status: 503, message: "fabric unavailable, nothing was sent: \(detail)")
    }
}
