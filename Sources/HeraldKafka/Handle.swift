// Internal plumbing: the handle wrapper, configuration, logging, and running
// blocking librdkafka calls off the Swift cooperative pool.

import CRdKafka
import Foundation
import Logging
import Synchronization

/// What librdkafka's callbacks reach through `rd_kafka_opaque(rk)`.
final class HandleContext: Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// An `OpaquePointer` that may cross threads (librdkafka documents its handles and
/// queues as thread-safe). Only use it inside this module.
struct SendablePointer: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// One `rd_kafka_t`. Destroyed exactly once: explicitly with `destroyBlocking()` (off
/// the pool), or, if nobody did, from `deinit` on a thread of its own.
final class RdKafkaHandle: @unchecked Sendable {
    // Safe to share: `pointer` is immutable and librdkafka handles are thread-safe;
    // the destroyed flag is behind a mutex; `context` is immutable.
    private let pointer: OpaquePointer
    private let context: Unmanaged<HandleContext>
    private let destroyed = Mutex(false)
    let name: String

    init(pointer: OpaquePointer, context: Unmanaged<HandleContext>) {
        self.pointer = pointer
        self.context = context
        self.name = String(cString: rd_kafka_name(pointer))
    }

    /// The raw handle for calls that cannot race with destruction (the handle's owner
    /// guarantees that, e.g. the poll thread that is also the one destroying it).
    var rk: OpaquePointer { pointer }

    /// Runs `body` with the live handle while holding off destruction; nil once destroyed.
    /// `body` must not block for long.
    func withLive<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T? {
        try destroyed.withLock { isDestroyed -> T? in
            if isDestroyed { return nil }
            return try body(pointer)
        }
    }

    var isDestroyed: Bool { destroyed.withLock { $0 } }

    /// Destroys the handle (blocks until librdkafka's threads end). Idempotent.
    func destroyBlocking() {
        let first = destroyed.withLock { isDestroyed -> Bool in
            defer { isDestroyed = true }
            return !isDestroyed
        }
        guard first else { return }
        rd_kafka_destroy(pointer)
        context.release()
    }

    deinit {
        let first = destroyed.withLock { isDestroyed -> Bool in
            defer { isDestroyed = true }
            return !isDestroyed
        }
        guard first else { return }
        // rd_kafka_destroy blocks; deinit may run on the cooperative pool.
        let p = SendablePointer(pointer: pointer)
        let ctx = UncheckedContext(context: context)
        let thread = Thread {
            rd_kafka_destroy(p.pointer)
            ctx.context.release()
        }
        thread.name = "rdkafka-destroy"
        thread.start()
    }
}

struct UncheckedContext: @unchecked Sendable {
    let context: Unmanaged<HandleContext>
}

/// Runs a blocking call on a thread of its own (never on the cooperative pool) and
/// resumes the caller with its result.
func runBlocking<T: Sendable>(
    _ name: String, _ body: @escaping @Sendable () throws(KafkaError) -> T
) async throws(KafkaError) -> T {
    let result: Result<T, KafkaError> = await withCheckedContinuation { continuation in
        let thread = Thread {
            do throws(KafkaError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
        thread.name = name
        thread.start()
    }
    return try result.get()
}

/// Starts a dedicated thread running `body`.
func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.stackSize = 1 << 20
    thread.start()
}

extension Duration {
    /// Whole milliseconds, clamped to Int32 (librdkafka's timeout type); at least 0.
    var milliseconds: Int32 {
        let (seconds, attoseconds) = components
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return seconds < 0 ? 0 : Int32.max }
        let total = ms.partialValue.addingReportingOverflow(attoseconds / 1_000_000_000_000_000)
        if total.overflow { return Int32.max }
        return Int32(clamping: max(0, total.partialValue))
    }
}

func errstrString(_ buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { buf in
        guard let base = buf.baseAddress else { return "" }
        return String(cString: base)
    }
}

/// Log levels: librdkafka uses syslog levels.
func logLevel(_ syslog: Int32) -> Logger.Level {
    switch syslog {
    case ...2: return .critical
    case 3: return .error
    case 4: return .warning
    case 5: return .notice
    case 6: return .info
    default: return .debug
    }
}

/// Creates an `rd_kafka_t` of `type` from `config`, with librdkafka's log lines going
/// to `logger`. `customize` may set callbacks on the conf before the handle is made.
func makeHandle(
    type: rd_kafka_type_t,
    config: [String: String],
    logger: Logger,
    customize: (OpaquePointer) -> Void = { _ in }
) throws(KafkaError) -> RdKafkaHandle {
    guard let conf = rd_kafka_conf_new() else {
        throw KafkaError(code: KafkaError.invalidArgument, message: "rd_kafka_conf_new failed")
    }
    var errstr = [CChar](repeating: 0, count: 512)
    // Sorted for deterministic error messages.
    for (key, value) in config.sorted(by: { $0.key < $1.key }) {
        let res = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
        if res != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(
                code: KafkaError.invalidArgument,
                message: "configuration \(key)=\(value): \(errstrString(errstr))")
        }
    }
    let context = Unmanaged.passRetained(HandleContext(logger: logger))
    rd_kafka_conf_set_opaque(conf, context.toOpaque())
    rd_kafka_conf_set_log_cb(conf) { rk, level, facility, message in
        guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
        let context = Unmanaged<HandleContext>.fromOpaque(opaque).takeUnretainedValue()
        let fac = facility.map { String(cString: $0) } ?? "-"
        let text = message.map { String(cString: $0) } ?? ""
        context.logger.log(
            level: logLevel(level), "\(text)",
            metadata: ["rdkafka.facility": "\(fac)", "rdkafka.name": "\(String(cString: rd_kafka_name(rk)))"])
    }
    customize(conf)
    guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else {
        // On failure the conf is still ours.
        rd_kafka_conf_destroy(conf)
        context.release()
        throw KafkaError(code: KafkaError.invalidArgument, message: "rd_kafka_new: \(errstrString(errstr))")
    }
    return RdKafkaHandle(pointer: rk, context: context)
}

/// Copies an `rd_kafka_error_t` into a KafkaError and destroys it.
func consume(_ error: OpaquePointer) -> KafkaError {
    let result = KafkaError(
        code: rd_kafka_error_code(error).rawValue,
        message: String(cString: rd_kafka_error_string(error)),
        retriable: rd_kafka_error_is_retriable(error) != 0)
    rd_kafka_error_destroy(error)
    return result
}
