import CRdKafka
import Foundation
import Logging
import Synchronization

/// A consumer of explicitly assigned partitions (`rd_kafka_assign`: no subscription, no
/// group membership, no commits), or a member of a consumer group (`rd_kafka_subscribe`:
/// librdkafka balances the partitions across the members, and `commit` stores where the group
/// is).
///
/// A dedicated thread runs `rd_kafka_consumer_poll` (never the Swift concurrency pool) and
/// hands records to `records` through a bounded buffer: when the buffer is full the poll
/// thread waits, and librdkafka's own bounded prefetch queue fills up behind it.
public final class KafkaConsumer: Sendable {
    private let handle: RdKafkaHandle
    private let channel: RecordChannel
    private let done: DoneSignal
    private let logger: Logger

    /// Records as they arrive. Finishes after `close()`. Meant for one iterating task
    /// (several tasks iterating would each get some of the records). If the iterating task
    /// is cancelled while waiting, the stream finishes too (the consumer keeps running
    /// until `close()`).
    public let records: AsyncStream<KafkaRecord>

    /// - Parameters:
    ///   - config: librdkafka properties. Without a `group.id` one is made up
    ///     (`herald-<uuid>`): librdkafka 2.0.2 refuses `rd_kafka_assign` without one.
    ///     `enable.auto.commit` and `enable.auto.offset.store` default to false.
    ///   - assignments: the partitions to read and where to start.
    ///   - bufferCapacity: records held between the poll thread and the reader.
    public convenience init(
        config: [String: String],
        assignments: [(topic: String, partition: Int32, offset: KafkaOffset)],
        logger: Logger,
        bufferCapacity: Int = 1024,
        contiguous: Bool = false
    ) throws {
        var gaps = OffsetGapGuard()
        for a in assignments {
            if case .at(let offset) = a.offset { gaps.expect(.init(topic: a.topic, partition: a.partition), at: offset) }
        }
        try self.init(config: config, logger: logger, bufferCapacity: bufferCapacity, grouped: false, gaps: contiguous ? gaps : nil) { rk in
            let list = rd_kafka_topic_partition_list_new(Int32(max(1, assignments.count)))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for a in assignments {
                let tp = rd_kafka_topic_partition_list_add(list, a.topic, a.partition)!
                tp.pointee.offset = a.offset.rawValue
            }
            let err = rd_kafka_assign(rk, list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError(err, "rd_kafka_assign: \(String(cString: rd_kafka_err2str(err)))")
            }
        }
    }

    /// A member of the consumer group `config["group.id"]` (required) over `topics`. Where a
    /// partition starts is the group's committed offset, else `auto.offset.reset`.
    public convenience init(
        config: [String: String], subscribe topics: [String], logger: Logger, bufferCapacity: Int = 1024, contiguous: Bool = false
    ) throws {
        guard config["group.id"] != nil else {
            throw KafkaError(code: KafkaError.invalidArgument, message: "a group consumer needs a group.id")
        }
        try self.init(
            config: config, logger: logger, bufferCapacity: bufferCapacity, grouped: true,
            gaps: contiguous ? OffsetGapGuard() : nil
        ) { rk in
            let list = rd_kafka_topic_partition_list_new(Int32(max(1, topics.count)))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for topic in topics { rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA) }
            let err = rd_kafka_subscribe(rk, list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError(err, "rd_kafka_subscribe: \(String(cString: rd_kafka_err2str(err)))")
            }
        }
    }

    private init(
        config: [String: String], logger: Logger, bufferCapacity: Int, grouped: Bool, gaps: OffsetGapGuard?,
        start: (OpaquePointer) throws -> Void
    ) throws {
        var config = config
        if config["group.id"] == nil { config["group.id"] = "herald-\(UUID().uuidString.lowercased())" }
        if config["enable.auto.commit"] == nil { config["enable.auto.commit"] = "false" }
        if config["enable.auto.offset.store"] == nil { config["enable.auto.offset.store"] = "false" }
        self.logger = logger
        let handle = try makeHandle(type: RD_KAFKA_CONSUMER, config: config, logger: logger)
        self.handle = handle
        let rk = handle.rk
        // Route the main queue (errors, logs events) to the consumer queue we poll.
        rd_kafka_poll_set_consumer(rk)
        do {
            try start(rk)
        } catch {
            startThread("rdkafka-consumer-destroy") { handle.destroyBlocking() }
            throw error
        }

        let channel = RecordChannel(capacity: max(1, bufferCapacity))
        let done = DoneSignal()
        self.channel = channel
        self.done = done
        self.records = AsyncStream(unfolding: { await channel.next() })

        startThread("rdkafka-consumer-poll") {
            KafkaConsumer.pollLoop(handle: handle, channel: channel, gaps: gaps, logger: logger)
            // Leaving: close (a group member leaves its group) and destroy the handle here, off the pool.
            if !grouped { _ = handle.withLive { rk in rd_kafka_assign(rk, nil) } }
            rd_kafka_consumer_close(handle.rk)
            handle.destroyBlocking()
            done.signal()
        }
    }

    deinit {
        channel.finish()
    }

    private static func pollLoop(handle: RdKafkaHandle, channel: RecordChannel, gaps: OffsetGapGuard?, logger: Logger) {
        let rk = handle.rk
        var gaps = gaps
        var lastErrorLog: (code: Int32, at: ContinuousClock.Instant)? = nil
        while !channel.isFinished {
            guard let message = rd_kafka_consumer_poll(rk, 100) else { continue }
            let err = message.pointee.err
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                if err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                    // Transport errors repeat while a broker is away: log each code at most every 5 s.
                    let now = ContinuousClock.now
                    if lastErrorLog == nil || lastErrorLog!.code != err.rawValue
                        || now - lastErrorLog!.at > .seconds(5)
                    {
                        // A consumer error's payload is its reason text; read it by length.
                        let m = message.pointee
                        let text = m.payload.map {
                            String(decoding: UnsafeRawBufferPointer(start: $0, count: m.len), as: UTF8.self)
                        }
                        logger.warning("rdkafka consumer error", metadata: ["error": "\(KafkaError(err, text))"])
                        lastErrorLog = (err.rawValue, now)
                    }
                }
                rd_kafka_message_destroy(message)
                continue
            }
            let record = KafkaRecord(message: message)
            rd_kafka_message_destroy(message)
            if gaps != nil {
                let key = OffsetGapGuard.Key(topic: record.topic, partition: record.partition)
                switch gaps!.check(key, offset: record.offset, now: DispatchTime.now().uptimeNanoseconds) {
                case .deliver:
                    break
                case .drop:
                    continue
                case .seek(let offset):
                    seek(rk, key, to: offset, logger: logger)
                    continue
                case .deliverAfterGap(let missing):
                    logger.error(
                        "records skipped: the broker did not serve them after repeated seeks",
                        metadata: ["topic": .string(key.topic), "partition": "\(key.partition)", "offsets": "\(missing)"])
                }
            }
            if !channel.push(record) { break }
        }
    }

    /// Asks librdkafka to fetch the partition from `offset` again (asynchronously).
    private static func seek(_ rk: OpaquePointer, _ key: OffsetGapGuard.Key, to offset: Int64, logger: Logger) {
        let list = rd_kafka_topic_partition_list_new(1)!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, key.topic, key.partition)!.pointee.offset = offset
        if let error = rd_kafka_seek_partitions(rk, list, 0) {
            logger.warning(
                "rdkafka seek", metadata: ["topic": .string(key.topic), "error": .string(String(cString: rd_kafka_error_string(error)))])
            rd_kafka_error_destroy(error)
        }
    }

    /// The low and high watermarks librdkafka has cached for the partition from fetch
    /// responses (`rd_kafka_get_watermark_offsets`), without asking the broker; nil when
    /// nothing is known yet or the consumer is closed. The low mark is only refreshed
    /// with `statistics.interval.ms` and may be -1001 (invalid).
    public func cachedWatermarks(topic: String, partition: Int32) -> (low: Int64, high: Int64)? {
        let result = handle.withLive { rk -> (low: Int64, high: Int64)? in
            var low: Int64 = Int64(RD_KAFKA_OFFSET_INVALID)
            var high: Int64 = Int64(RD_KAFKA_OFFSET_INVALID)
            let err = rd_kafka_get_watermark_offsets(rk, topic, partition, &low, &high)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR || high == Int64(RD_KAFKA_OFFSET_INVALID) { return nil }
            return (low, high)
        }
        return result ?? nil
    }

    /// Stores where the group is (the next offset to read of each partition), asynchronously:
    /// a commit that fails is only logged, and the next one covers it. For a group consumer.
    public func commit(_ offsets: [(topic: String, partition: Int32, next: Int64)]) {
        guard !offsets.isEmpty else { return }
        _ = handle.withLive { rk in
            let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for o in offsets { rd_kafka_topic_partition_list_add(list, o.topic, o.partition)!.pointee.offset = o.next }
            let err = rd_kafka_commit(rk, list, 1)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.warning("rdkafka commit", metadata: ["error": "\(KafkaError(err, String(cString: rd_kafka_err2str(err))))"])
            }
        }
    }

    /// Stops the poll thread, ends `records`, and destroys the handle (on the poll thread,
    /// promptly after). Idempotent; does not block.
    public func close() {
        channel.finish()
    }

    /// `close()`, then waits until the handle is destroyed.
    public func closeAndWait() async {
        channel.finish()
        await done.wait()
    }

    /// True once `close()` was called.
    public var isClosed: Bool { channel.isFinished }
}

extension KafkaRecord {
    init(message: UnsafeMutablePointer<rd_kafka_message_t>) {
        let m = message.pointee
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &tsType)
        let key: [UInt8]? = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value: [UInt8] = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
        var headers: [KafkaHeader] = []
        var hdrs: OpaquePointer? = nil
        if rd_kafka_message_headers(message, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var index = 0
            var name: UnsafePointer<CChar>? = nil
            var val: UnsafeRawPointer? = nil
            var size = 0
            while rd_kafka_header_get_all(hdrs, index, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let headerName = name.map { String(cString: $0) } ?? ""
                let bytes: [UInt8] = val.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                headers.append(KafkaHeader(headerName, bytes))
                index += 1
            }
        }
        self.init(
            topic: topic, partition: m.partition, offset: m.offset, timestamp: timestamp,
            key: key, value: value, headers: headers)
    }
}

/// The bounded hand-over between the poll thread (which blocks when it is full) and the
/// async reader (which suspends when it is empty).
final class RecordChannel: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var buffer: [KafkaRecord?]
    private var head = 0
    private var count = 0
    private var finished = false
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<KafkaRecord?, Never>)] = []
    private var nextWaiterID: UInt64 = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        self.buffer = Array(repeating: nil, count: capacity)
    }

    var isFinished: Bool {
        condition.lock()
        defer { condition.unlock() }
        return finished
    }

    /// Blocks the calling (poll) thread while the buffer is full. False once finished.
    func push(_ record: KafkaRecord) -> Bool {
        condition.lock()
        while count >= capacity && !finished {
            condition.wait()
        }
        if finished {
            condition.unlock()
            return false
        }
        if !waiters.isEmpty {
            let waiter = waiters.removeFirst()
            condition.unlock()
            waiter.continuation.resume(returning: record)
            return true
        }
        buffer[(head + count) % capacity] = record
        count += 1
        condition.unlock()
        return true
    }

    /// The next record; nil once finished (or when the calling task is cancelled).
    func next() async -> KafkaRecord? {
        let id: UInt64 = {
            condition.lock()
            defer { condition.unlock() }
            nextWaiterID += 1
            return nextWaiterID
        }()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<KafkaRecord?, Never>) in
                condition.lock()
                if count > 0 {
                    let record = buffer[head]
                    buffer[head] = nil
                    head = (head + 1) % capacity
                    count -= 1
                    condition.signal()
                    condition.unlock()
                    continuation.resume(returning: record)
                } else if finished || Task.isCancelled {
                    condition.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiters.append((id, continuation))
                    condition.unlock()
                }
            }
        } onCancel: {
            condition.lock()
            let index = waiters.firstIndex { $0.id == id }
            let waiter = index.map { waiters.remove(at: $0) }
            condition.unlock()
            waiter?.continuation.resume(returning: nil)
        }
    }

    /// Ends the stream: buffered records are dropped, waiting readers get nil, a blocked
    /// poll thread wakes up and leaves.
    func finish() {
        condition.lock()
        if finished {
            condition.unlock()
            return
        }
        finished = true
        for i in buffer.indices { buffer[i] = nil }
        count = 0
        let pending = waiters
        waiters = []
        condition.broadcast()
        condition.unlock()
        for w in pending { w.continuation.resume(returning: nil) }
    }
}

/// A one-shot event async code can wait for.
final class DoneSignal: Sendable {
    private let state = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func signal() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.done = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.done { return true }
                s.waiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }
}
