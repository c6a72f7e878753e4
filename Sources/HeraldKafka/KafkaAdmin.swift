import CRdKafka
import Foundation
import Logging

/// Topic administration and offset queries. Every blocking librdkafka call runs on a
/// thread of its own and resumes the caller; nothing blocks the cooperative pool.
public final class KafkaAdmin: Sendable {
    private let handle: RdKafkaHandle
    private let logger: Logger

    /// - Parameter config: librdkafka properties; at least `bootstrap.servers`.
    public init(config: [String: String], logger: Logger) throws {
        var config = config
        if config["allow.auto.create.topics"] == nil { config["allow.auto.create.topics"] = "false" }
        self.logger = logger
        // A producer handle: admin requests need no consumer machinery.
        self.handle = try makeHandle(type: RD_KAFKA_PRODUCER, config: config, logger: logger)
    }

    /// Creates `name` with `partitions` partitions unless it exists (TOPIC_ALREADY_EXISTS
    /// counts as success; the existing topic's partition count is not checked here).
    public func createTopic(
        _ name: String, partitions: Int32, replicationFactor: Int16 = 1, configs: [String: String] = [:],
        timeout: Duration = .seconds(10)
    ) async throws {
        let handle = self.handle
        let ms = timeout.milliseconds
        try await runBlocking("rdkafka-admin") { () throws(KafkaError) -> Void in
            var errstr = [CChar](repeating: 0, count: 512)
            guard let newTopic = rd_kafka_NewTopic_new(name, partitions, Int32(replicationFactor), &errstr, errstr.count)
            else {
                throw KafkaError(code: KafkaError.invalidArgument, message: "NewTopic \(name): \(errstrString(errstr))")
            }
            defer { rd_kafka_NewTopic_destroy(newTopic) }
            for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
                let err = rd_kafka_NewTopic_set_config(newTopic, key, value)
                guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw KafkaError(err, "topic config \(key)=\(value): \(String(cString: rd_kafka_err2str(err)))")
                }
            }
            let results = try adminRequest(
                handle: handle, op: RD_KAFKA_ADMIN_OP_CREATETOPICS, timeoutMs: ms,
                start: { rk, options, queue in
                    var topics: [OpaquePointer?] = [newTopic]
                    rd_kafka_CreateTopics(rk, &topics, 1, options, queue)
                },
                topicResults: { event in
                    var count = 0
                    let result = rd_kafka_event_CreateTopics_result(event)
                    let array = rd_kafka_CreateTopics_result_topics(result, &count)
                    return topicResultErrors(array, count)
                })
            for r in results where r.code != 0 && r.code != KafkaError.topicAlreadyExists {
                throw KafkaError(code: r.code, message: "create topic \(r.topic): \(r.message)")
            }
        }
    }

    /// Grows `topic` to `total` partitions (CreatePartitions, KIP-195). Throws a KafkaError
    /// if the broker refuses (Tansu 0.6: -165 `_UNSUPPORTED_FEATURE`; Kafka: 37
    /// `INVALID_PARTITIONS` when `total` is not more than now).
    public func createPartitions(_ topic: String, total: Int32, timeout: Duration = .seconds(10)) async throws {
        let handle = self.handle
        let ms = timeout.milliseconds
        try await runBlocking("rdkafka-admin") { () throws(KafkaError) -> Void in
            var errstr = [CChar](repeating: 0, count: 512)
            guard let newPartitions = rd_kafka_NewPartitions_new(topic, Int(total), &errstr, errstr.count) else {
                throw KafkaError(
                    code: KafkaError.invalidArgument, message: "NewPartitions \(topic): \(errstrString(errstr))")
            }
            defer { rd_kafka_NewPartitions_destroy(newPartitions) }
            let results = try adminRequest(
                handle: handle, op: RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, timeoutMs: ms,
                start: { rk, options, queue in
                    var parts: [OpaquePointer?] = [newPartitions]
                    rd_kafka_CreatePartitions(rk, &parts, 1, options, queue)
                },
                topicResults: { event in
                    var count = 0
                    let result = rd_kafka_event_CreatePartitions_result(event)
                    let array = rd_kafka_CreatePartitions_result_topics(result, &count)
                    return topicResultErrors(array, count)
                })
            for r in results where r.code != 0 {
                throw KafkaError(code: r.code, message: "create partitions \(r.topic): \(r.message)")
            }
        }
    }

    /// A topic as the broker's metadata describes it.
    public struct TopicLayout: Sendable, Hashable {
        public var partitions: Int32
        /// The fewest replicas any of its partitions has.
        public var replicationFactor: Int
    }

    /// The layout of `topic`, or nil if it does not exist. Asks for the metadata of all topics
    /// (a request naming the topic would make Tansu, or a Kafka with auto.create.topics.enable,
    /// create it).
    public func layout(_ topic: String, timeout: Duration = .seconds(5)) async throws -> TopicLayout? {
        let handle = self.handle
        let ms = timeout.milliseconds
        return try await runBlocking("rdkafka-admin") { () throws(KafkaError) -> TopicLayout? in
            try handle.withLiveOrThrow { rk throws(KafkaError) -> TopicLayout? in
                var metadata: UnsafePointer<rd_kafka_metadata>? = nil
                let err = rd_kafka_metadata(rk, 1, nil, &metadata, ms)
                guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
                    throw KafkaError(err, "metadata: \(String(cString: rd_kafka_err2str(err)))")
                }
                defer { rd_kafka_metadata_destroy(metadata) }
                let md = metadata.pointee
                for i in 0..<Int(md.topic_cnt) {
                    let t = md.topics[i]
                    guard String(cString: t.topic) == topic else { continue }
                    if t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { return nil }
                    if t.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                        throw KafkaError(t.err, "metadata for \(topic): \(String(cString: rd_kafka_err2str(t.err)))")
                    }
                    var fewest = Int.max
                    for p in 0..<Int(t.partition_cnt) { fewest = min(fewest, Int(t.partitions[p].replica_cnt)) }
                    return TopicLayout(partitions: t.partition_cnt, replicationFactor: fewest == .max ? 0 : fewest)
                }
                return nil
            }
        }
    }

    /// The number of partitions of `topic`, or nil if it does not exist. Asks for the
    /// metadata of all topics (a request naming the topic would make Tansu, or a Kafka with
    /// auto.create.topics.enable, create it).
    public func partitionCount(_ topic: String, timeout: Duration = .seconds(5)) async throws -> Int32? {
        try await layout(topic, timeout: timeout)?.partitions
    }

    /// Asks the broker for the partition's low and high watermarks (ListOffsets). On Tansu
    /// the high mark can lag the true end: treat it as a hint.
    public func watermarks(
        _ topic: String, partition: Int32, timeout: Duration = .seconds(5)
    ) async throws -> (low: Int64, high: Int64) {
        let handle = self.handle
        let ms = timeout.milliseconds
        let marks = try await runBlocking("rdkafka-admin") { () throws(KafkaError) -> Watermarks in
            try handle.withLiveOrThrow { rk throws(KafkaError) -> Watermarks in
                var low: Int64 = -1
                var high: Int64 = -1
                let err = rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, ms)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    throw KafkaError(err, "watermarks \(topic)/\(partition): \(String(cString: rd_kafka_err2str(err)))")
                }
                return Watermarks(low: low, high: high)
            }
        }
        return (marks.low, marks.high)
    }

    /// For each partition, the earliest offset whose timestamp is >= `timestamp` (ms), as
    /// the broker answers it; -1 means "none: the end". Partitions the broker answered with
    /// an error are left out. A hint: filter consumed records by their own timestamps.
    public func offsetsForTimes(
        _ topic: String, partitions: [Int32], timestamp: Int64, timeout: Duration = .seconds(5)
    ) async throws -> [Int32: Int64] {
        if partitions.isEmpty { return [:] }
        let handle = self.handle
        let ms = timeout.milliseconds
        return try await runBlocking("rdkafka-admin") { () throws(KafkaError) -> [Int32: Int64] in
            try handle.withLiveOrThrow { rk throws(KafkaError) -> [Int32: Int64] in
                let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
                defer { rd_kafka_topic_partition_list_destroy(list) }
                for p in Set(partitions) {
                    rd_kafka_topic_partition_list_add(list, topic, p)!.pointee.offset = timestamp
                }
                let err = rd_kafka_offsets_for_times(rk, list, ms)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    throw KafkaError(err, "offsets for times \(topic): \(String(cString: rd_kafka_err2str(err)))")
                }
                var out: [Int32: Int64] = [:]
                for i in 0..<Int(list.pointee.cnt) {
                    let e = list.pointee.elems[i]
                    if e.err == RD_KAFKA_RESP_ERR_NO_ERROR { out[e.partition] = e.offset }
                }
                return out
            }
        }
    }
}

private struct Watermarks: Sendable {
    var low: Int64
    var high: Int64
}

private struct TopicResult {
    var topic: String
    var code: Int32
    var message: String
}

private func topicResultErrors(_ array: UnsafeMutablePointer<OpaquePointer?>?, _ count: Int) -> [TopicResult] {
    guard let array else { return [] }
    var out: [TopicResult] = []
    for i in 0..<count {
        guard let t = array[i] else { continue }
        let err = rd_kafka_topic_result_error(t)
        let text = rd_kafka_topic_result_error_string(t).map { String(cString: $0) }
            ?? String(cString: rd_kafka_err2str(err))
        out.append(TopicResult(
            topic: String(cString: rd_kafka_topic_result_name(t)), code: err.rawValue, message: text))
    }
    return out
}

/// Runs one admin request on a private queue and waits (blocking: call off the pool) for
/// its result event.
private func adminRequest(
    handle: RdKafkaHandle,
    op: rd_kafka_admin_op_t,
    timeoutMs: Int32,
    start: (OpaquePointer, OpaquePointer, OpaquePointer) -> Void,
    topicResults: (OpaquePointer) -> [TopicResult]
) throws(KafkaError) -> [TopicResult] {
    try handle.withLiveOrThrow { rk throws(KafkaError) -> [TopicResult] in
        // Drain the main queue (error events) now and then: nobody else polls this handle.
        rd_kafka_poll(rk, 0)
        guard let options = rd_kafka_AdminOptions_new(rk, op) else {
            throw KafkaError(code: KafkaError.invalidArgument, message: "AdminOptions_new failed")
        }
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 512)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errstr, errstr.count)
        let queue = rd_kafka_queue_new(rk)!
        defer { rd_kafka_queue_destroy(queue) }
        start(rk, options, queue)
        // librdkafka enforces the request timeout itself; the margin covers scheduling.
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 2000) else {
            throw KafkaError(code: KafkaError.timedOut, message: "admin request timed out after \(timeoutMs) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) }
            throw KafkaError(err, text)
        }
        return topicResults(event)
    }
}

extension RdKafkaHandle {
    /// Like `withLive`, but throws `_DESTROY` when the handle is gone.
    func withLiveOrThrow<T>(_ body: (OpaquePointer) throws(KafkaError) -> T) throws(KafkaError) -> T {
        // Admin handles are destroyed only from RdKafkaHandle.deinit, which cannot run while
        // the caller holds this reference: no lock needed around the (blocking) call.
        if isDestroyed { throw KafkaError(code: KafkaError.destroyed, message: "handle destroyed") }
        return try body(rk)
    }
}
