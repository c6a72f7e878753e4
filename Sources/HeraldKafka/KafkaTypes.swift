// HeraldKafka: safe async Swift over librdkafka. Knows nothing of Herald.
// All C interop with librdkafka stays inside this module.

import CRdKafka

/// One record header. Kafka header values are opaque bytes.
public struct KafkaHeader: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]

    public init(_ key: String, _ value: [UInt8]) {
        self.key = key
        self.value = value
    }

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = Array(value.utf8)
    }
}

/// A record as consumed from a partition.
public struct KafkaRecord: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    /// Milliseconds since the epoch (create time or log-append time, as the broker says); -1 if unknown.
    public var timestamp: Int64
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]

    public init(
        topic: String, partition: Int32, offset: Int64, timestamp: Int64,
        key: [UInt8]?, value: [UInt8], headers: [KafkaHeader]
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// The value of the first header named `key`, if any.
    public func header(_ key: String) -> [UInt8]? {
        headers.first { $0.key == key }?.value
    }
}

/// Where an assigned partition starts.
public enum KafkaOffset: Sendable, Hashable {
    case beginning
    case end
    case at(Int64)

    var rawValue: Int64 {
        switch self {
        case .beginning: return Int64(RD_KAFKA_OFFSET_BEGINNING)
        case .end: return Int64(RD_KAFKA_OFFSET_END)
        case .at(let offset): return offset
        }
    }
}

/// An error from librdkafka or the broker. `code` is an `rd_kafka_resp_err_t`:
/// negative codes are librdkafka's own, positive ones come from the Kafka protocol.
public struct KafkaError: Error, CustomStringConvertible, Sendable, Hashable {
    public var code: Int32
    public var message: String
    /// librdkafka's judgement that retrying may succeed (only set where librdkafka says so).
    public var isRetriableHint: Bool
    /// For a failed delivery: whether the broker may have the record anyway
    /// (`rd_kafka_message_status`). A timed-out or purged in-flight record may be persisted.
    public var persistence: Persistence

    public enum Persistence: Sendable, Hashable {
        /// Never written to the broker: retrying cannot duplicate it.
        case notPersisted
        /// Sent, but no acknowledgement came: the broker may have it.
        case possiblyPersisted
        case persisted
    }

    public init(code: Int32, message: String, retriable: Bool = false, persistence: Persistence = .notPersisted) {
        self.code = code
        self.message = message
        self.isRetriableHint = retriable
        self.persistence = persistence
    }

    init(_ err: rd_kafka_resp_err_t, _ message: String? = nil) {
        self.init(code: err.rawValue, message: message ?? String(cString: rd_kafka_err2str(err)))
    }

    /// librdkafka's symbolic name, e.g. `_MSG_TIMED_OUT` or `TOPIC_ALREADY_EXISTS`.
    public var name: String {
        String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }

    public var description: String {
        "KafkaError \(name) (\(code)): \(message)"
    }

    // Well-known codes.
    public static let msgTimedOut: Int32 = RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue       // -192
    public static let timedOut: Int32 = RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue              // -185
    public static let queueFull: Int32 = RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue            // -184
    public static let unsupportedFeature: Int32 = RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE.rawValue // -165
    public static let destroyed: Int32 = RD_KAFKA_RESP_ERR__DESTROY.rawValue               // -197
    public static let purgeQueue: Int32 = RD_KAFKA_RESP_ERR__PURGE_QUEUE.rawValue          // -152
    public static let purgeInflight: Int32 = RD_KAFKA_RESP_ERR__PURGE_INFLIGHT.rawValue    // -151
    public static let invalidArgument: Int32 = RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue     // -186
    public static let unknownTopicOrPartition: Int32 = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue // 3
    public static let topicAlreadyExists: Int32 = RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS.rawValue // 36
    public static let invalidPartitions: Int32 = RD_KAFKA_RESP_ERR_INVALID_PARTITIONS.rawValue // 37
    public static let unsupportedVersion: Int32 = RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION.rawValue // 35

    /// The operation (or message delivery) ran out of time.
    public var isTimeout: Bool {
        code == Self.msgTimedOut || code == Self.timedOut
            || code == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT.rawValue
    }

    /// The record is larger than the producer or the broker accepts (`message.max.bytes`):
    /// the sender's doing, not an outage.
    public var isTooLarge: Bool {
        code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE.rawValue || code == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE.rawValue
    }

    /// The local producer queue is full (`queue.buffering.max.messages` / `.kbytes`): back off, answer 503.
    public var isQueueFull: Bool { code == Self.queueFull }

    /// The broker (or librdkafka for it) does not support the operation, e.g. CreatePartitions on Tansu.
    public var isUnsupported: Bool {
        code == Self.unsupportedFeature || code == Self.unsupportedVersion
            || code == RD_KAFKA_RESP_ERR_INVALID_REQUEST.rawValue
    }

    /// The message was purged (producer shut down before delivery) or the handle is gone.
    public var isShutdown: Bool {
        code == Self.destroyed || code == Self.purgeQueue || code == Self.purgeInflight
    }

    /// Trying again later may succeed (timeouts, transport trouble, leadership moves, full queue).
    public var isRetriable: Bool {
        if isRetriableHint || isTimeout || isQueueFull { return true }
        switch code {
        case RD_KAFKA_RESP_ERR__TRANSPORT.rawValue,
             RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN.rawValue,
             RD_KAFKA_RESP_ERR__RESOLVE.rawValue,
             RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE.rawValue,
             RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION.rawValue,
             RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS.rawValue,
             RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND.rawValue,
             RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION.rawValue,
             RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE.rawValue:
            return true
        default:
            return false
        }
    }
}
