import CRdKafka
import Foundation
import Logging
import Synchronization

/// The per-message opaque: carries the continuation of one `send` until librdkafka's
/// delivery report (or a purge) resumes it. Retained once per produced message.
private final class DeliveryBox: Sendable {
    let complete: @Sendable (Result<(partition: Int32, offset: Int64), any Error>) -> Void
    init(_ complete: @escaping @Sendable (Result<(partition: Int32, offset: Int64), any Error>) -> Void) {
        self.complete = complete
    }
}

/// One record for `sendInOrder`.
public struct OutgoingRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader]

    public init(topic: String, partition: Int32 = -1, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader] = []) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// The delivery reports of one `sendInOrder` call: resumes its caller once all came.
private final class BatchDelivery: Sendable {
    private struct State {
        var acknowledged: [Bool]
        var outstanding: Int
        var continuation: CheckedContinuation<[Bool], Never>?
    }

    private let state: Mutex<State>

    init(count: Int, _ continuation: CheckedContinuation<[Bool], Never>) {
        state = Mutex(State(acknowledged: Array(repeating: false, count: count), outstanding: count, continuation: continuation))
    }

    func complete(_ index: Int, acknowledged: Bool) {
        let done = state.withLock { s -> (CheckedContinuation<[Bool], Never>, [Bool])? in
            s.acknowledged[index] = acknowledged
            s.outstanding -= 1
            guard s.outstanding == 0, let continuation = s.continuation else { return nil }
            s.continuation = nil
            return (continuation, s.acknowledged)
        }
        if let (continuation, acknowledged) = done { continuation.resume(returning: acknowledged) }
    }
}

/// A Kafka producer whose `send` returns once the broker acknowledged the record.
///
/// librdkafka's delivery reports are served by `rd_kafka_poll` on a dedicated thread
/// (never on the Swift concurrency pool). `shutdown()` flushes, purges what is left and
/// flushes again, so every pending `send` is resumed (with an error if it was purged).
public final class KafkaProducer: Sendable {
    private struct State {
        var closed = false
        var shutdownStarted = false
        var shutdownDone = false
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let handle: RdKafkaHandle
    private let state = Mutex(State())
    private let pollStop: PollStop
    private let logger: Logger

    /// - Parameter config: librdkafka properties, e.g. `["bootstrap.servers": "127.0.0.1:9092",
    ///   "message.timeout.ms": "5000", "acks": "all"]`.
    public init(config: [String: String], logger: Logger) throws {
        self.logger = logger
        self.handle = try makeHandle(type: RD_KAFKA_PRODUCER, config: config, logger: logger) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
                KafkaProducer.deliveryReport(message)
            }
            rd_kafka_conf_set_error_cb(conf) { _, err, reason, opaque in
                guard let opaque else { return }
                let context = Unmanaged<HandleContext>.fromOpaque(opaque).takeUnretainedValue()
                let text = reason.map { String(cString: $0) } ?? ""
                context.logger.warning(
                    "rdkafka producer error",
                    metadata: ["error": "\(KafkaError(code: err, message: text))"])
            }
        }
        let stop = PollStop()
        self.pollStop = stop
        let handle = self.handle
        startThread("rdkafka-producer-poll") {
            // The poll thread never destroys the handle; shutdown() does, after joining it.
            while !stop.isStopped {
                rd_kafka_poll(handle.rk, 100)
            }
            stop.markExited()
        }
    }

    deinit {
        // Nobody called shutdown(): do it off the pool so that no continuation hangs.
        let needed = state.withLock { s -> Bool in
            defer { s.closed = true; s.shutdownStarted = true }
            return !s.shutdownStarted
        }
        if needed {
            let handle = self.handle
            let stop = self.pollStop
            startThread("rdkafka-producer-shutdown") {
                KafkaProducer.shutdownBlocking(handle: handle, stop: stop, flushTimeoutMs: 5000)
            }
        }
    }

    /// Called by librdkafka (on the poll thread, or inside flush) once per produced message.
    private static func deliveryReport(_ message: UnsafePointer<rd_kafka_message_t>?) {
        guard let message, let opaque = message.pointee._private else { return }
        let box = Unmanaged<DeliveryBox>.fromOpaque(opaque).takeRetainedValue()
        let err = message.pointee.err
        if err == RD_KAFKA_RESP_ERR_NO_ERROR {
            box.complete(.success((message.pointee.partition, message.pointee.offset)))
        } else {
            // Not rd_kafka_message_errstr: for a produced message its payload is the record
            // (not a C string), and librdkafka says that function is not for producers.
            var error = KafkaError(err)
            switch rd_kafka_message_status(message) {
            case RD_KAFKA_MSG_STATUS_NOT_PERSISTED: error.persistence = .notPersisted
            case RD_KAFKA_MSG_STATUS_PERSISTED: error.persistence = .persisted
            default: error.persistence = .possiblyPersisted
            }
            box.complete(.failure(error))
        }
    }

    /// Produces one record and returns when the broker acknowledged it (delivery report),
    /// or throws (e.g. message timeout, full local queue, producer shut down).
    /// `partition` -1 means: chosen by the partitioner from the key. Cancelling the calling
    /// task does not withdraw the record: the call still waits for the delivery report.
    public func send(
        topic: String, partition: Int32, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader]
    ) async throws -> (partition: Int32, offset: Int64) {
        try await withCheckedThrowingContinuation { continuation in
            let box = Unmanaged.passRetained(DeliveryBox { continuation.resume(with: $0) })
            let failure: KafkaError? = state.withLock { s -> KafkaError? in
                if s.closed {
                    return KafkaError(code: KafkaError.destroyed, message: "producer is shut down")
                }
                // Produce while holding the state lock, so that shutdown() cannot begin its
                // flush between our check and the enqueue (which would strand this message).
                return produce(
                    topic: topic, partition: partition, key: key, value: value, headers: headers,
                    opaque: box.toOpaque())
            }
            if let failure {
                box.release()
                continuation.resume(throwing: failure)
            }
        }
    }

    /// Produces `records` one after the other, in their order (so a partition keeps it), and
    /// answers, once every one was acknowledged or failed, which were acknowledged.
    public func sendInOrder(_ records: [OutgoingRecord]) async -> [Bool] {
        guard !records.isEmpty else { return [] }
        return await withCheckedContinuation { continuation in
            let batch = BatchDelivery(count: records.count, continuation)
            let refused: [Int] = state.withLock { s in
                var refused: [Int] = []
                for (index, record) in records.enumerated() {
                    guard !s.closed else {
                        refused.append(index)
                        continue
                    }
                    let box = Unmanaged.passRetained(DeliveryBox { batch.complete(index, acknowledged: (try? $0.get()) != nil) })
                    if produce(
                        topic: record.topic, partition: record.partition, key: record.key, value: record.value,
                        headers: record.headers, opaque: box.toOpaque()) != nil
                    {
                        box.release()
                        refused.append(index)
                    }
                }
                return refused
            }
            for index in refused { batch.complete(index, acknowledged: false) }
        }
    }

    /// Enqueues one message with rd_kafka_produceva (rd_kafka_producev is variadic).
    /// All data is copied by librdkafka (RD_KAFKA_MSG_F_COPY; headers are always copied).
    private func produce(
        topic: String, partition: Int32, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader],
        opaque: UnsafeMutableRawPointer
    ) -> KafkaError? {
        // Header names and values must stay valid during the call only.
        var headerStorage: [(name: UnsafeMutablePointer<CChar>, value: UnsafeMutableRawPointer?, size: Int)] = []
        headerStorage.reserveCapacity(headers.count)
        defer {
            for h in headerStorage {
                free(h.name)
                h.value?.deallocate()
            }
        }
        for h in headers {
            let name = strdup(h.key)!
            var valuePtr: UnsafeMutableRawPointer? = nil
            if !h.value.isEmpty {
                let p = UnsafeMutableRawPointer.allocate(byteCount: h.value.count, alignment: 1)
                h.value.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                valuePtr = p
            }
            headerStorage.append((name, valuePtr, h.value.count))
        }

        return topic.withCString { topicPtr -> KafkaError? in
            value.withUnsafeBytes { valueBytes -> KafkaError? in
                withKeyBytes(key) { keyBytes -> KafkaError? in
                    var vus: [rd_kafka_vu_t] = []
                    vus.reserveCapacity(6 + headerStorage.count)

                    var v = rd_kafka_vu_t()
                    v.vtype = RD_KAFKA_VTYPE_TOPIC
                    v.u.cstr = topicPtr
                    vus.append(v)

                    v = rd_kafka_vu_t()
                    v.vtype = RD_KAFKA_VTYPE_PARTITION
                    v.u.i32 = partition
                    vus.append(v)

                    v = rd_kafka_vu_t()
                    v.vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    v.u.i = RD_KAFKA_MSG_F_COPY
                    vus.append(v)

                    v = rd_kafka_vu_t()
                    v.vtype = RD_KAFKA_VTYPE_VALUE
                    v.u.mem.ptr = valueBytes.count > 0 ? UnsafeMutableRawPointer(mutating: valueBytes.baseAddress) : nil
                    v.u.mem.size = valueBytes.count
                    vus.append(v)

                    if let keyBytes {
                        v = rd_kafka_vu_t()
                        v.vtype = RD_KAFKA_VTYPE_KEY
                        v.u.mem.ptr = keyBytes.count > 0 ? UnsafeMutableRawPointer(mutating: keyBytes.baseAddress) : nil
                        v.u.mem.size = keyBytes.count
                        vus.append(v)
                    }

                    for h in headerStorage {
                        v = rd_kafka_vu_t()
                        v.vtype = RD_KAFKA_VTYPE_HEADER
                        v.u.header.name = UnsafePointer(h.name)
                        v.u.header.val = UnsafeRawPointer(h.value)
                        v.u.header.size = h.size
                        vus.append(v)
                    }

                    v = rd_kafka_vu_t()
                    v.vtype = RD_KAFKA_VTYPE_OPAQUE
                    v.u.ptr = opaque
                    vus.append(v)

                    let error = vus.withUnsafeBufferPointer { buf in
                        rd_kafka_produceva(handle.rk, buf.baseAddress, buf.count)
                    }
                    return error.map(consume)
                }
            }
        }
    }

    /// Flushes what is queued (up to `timeout`), purges the rest, and flushes again so that
    /// every pending `send` is resumed; then stops the poll thread and destroys the handle.
    /// Later `send`s throw. Safe to call more than once (later calls wait for the first).
    public func shutdown(timeout: Duration = .seconds(5)) async {
        let first = state.withLock { s -> Bool in
            s.closed = true
            defer { s.shutdownStarted = true }
            return !s.shutdownStarted
        }
        if first {
            let handle = self.handle
            let stop = self.pollStop
            let ms = timeout.milliseconds
            try? await runBlocking("rdkafka-producer-shutdown") { () throws(KafkaError) -> Void in
                KafkaProducer.shutdownBlocking(handle: handle, stop: stop, flushTimeoutMs: ms)
            }
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                s.shutdownDone = true
                defer { s.shutdownWaiters = [] }
                return s.shutdownWaiters
            }
            for w in waiters { w.resume() }
        } else {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s -> Bool in
                    if s.shutdownDone { return true }
                    s.shutdownWaiters.append(c)
                    return false
                }
                if done { c.resume() }
            }
        }
    }

    private static func shutdownBlocking(handle: RdKafkaHandle, stop: PollStop, flushTimeoutMs: Int32) {
        let rk = handle.rk
        let flushed = rd_kafka_flush(rk, flushTimeoutMs)
        if flushed != RD_KAFKA_RESP_ERR_NO_ERROR {
            // Fail what is still queued or in flight: their delivery reports carry
            // _PURGE_QUEUE / _PURGE_INFLIGHT and resume the waiting sends.
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
            _ = rd_kafka_flush(rk, 1000)
        }
        stop.stopAndJoin()
        // Serve anything the poll thread left behind (purging again in case a message got
        // past the first purge), then destroy: no delivery report is left unserved.
        var rounds = 0
        while rd_kafka_outq_len(rk) > 0 && rounds < 200 {
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
            rd_kafka_poll(rk, 10)
            rounds += 1
        }
        handle.destroyBlocking()
    }
}

private func withKeyBytes<R>(_ key: [UInt8]?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
    guard let key else { return body(nil) }
    return key.withUnsafeBytes { body($0) }
}

/// Stop flag for a poll thread, with a way to wait until the thread has left its loop.
final class PollStop: Sendable {
    private let stopped = Atomic<Bool>(false)
    private let exited = DispatchSemaphore(value: 0)

    var isStopped: Bool { stopped.load(ordering: .acquiring) }
    func stop() { stopped.store(true, ordering: .releasing) }
    func markExited() { exited.signal() }

    /// Blocks until the poll thread is out of its loop. Call off the pool.
    func stopAndJoin() {
        stop()
        exited.wait()
    }
}
