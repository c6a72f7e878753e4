import Foundation
import HeraldKafka
import Logging

/// The broker under test: HERALD_TEST_KAFKA or the adapter in front of Tansu on 127.0.0.1:9092.
let bootstrap = ProcessInfo.processInfo.environment["HERALD_TEST_KAFKA"] ?? "127.0.0.1:9092"

func testLogger(_ label: String = "herald-kafka-tests") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .warning
    return logger
}

func uniqueTopic(_ prefix: String) -> String {
    "test.\(prefix).\(UUID().uuidString.lowercased())"
}

func producerConfig(_ extra: [String: String] = [:]) -> [String: String] {
    ["bootstrap.servers": bootstrap, "message.timeout.ms": "10000", "acks": "all", "linger.ms": "1"]
        .merging(extra) { _, new in new }
}

func consumerConfig(_ extra: [String: String] = [:]) -> [String: String] {
    // Tansu waits the full fetch.wait.max.ms even when data arrived: keep it low.
    ["bootstrap.servers": bootstrap, "fetch.wait.max.ms": "10"]
        .merging(extra) { _, new in new }
}

func adminConfig() -> [String: String] {
    ["bootstrap.servers": bootstrap]
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
func text(_ b: [UInt8]?) -> String? { b.map { String(decoding: $0, as: UTF8.self) } }

func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// Reads records until `count` arrived or `timeout` passed (then the consumer is closed,
/// which ends the stream, and fewer records come back).
func collect(
    _ consumer: KafkaConsumer, count: Int, timeout: Duration = .seconds(20),
    where keep: @Sendable (KafkaRecord) -> Bool = { _ in true }
) async -> [KafkaRecord] {
    let watchdog = Task {
        try? await Task.sleep(for: timeout)
        if !Task.isCancelled { consumer.close() }
    }
    defer { watchdog.cancel() }
    var out: [KafkaRecord] = []
    if count == 0 { return out }
    for await record in consumer.records where keep(record) {
        out.append(record)
        if out.count >= count { break }
    }
    return out
}

/// Waits until the consumer has seen a fetch response for the partition (its position is
/// resolved), or the timeout passes.
func waitForFetch(_ consumer: KafkaConsumer, topic: String, partition: Int32, timeout: Duration = .seconds(10)) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if consumer.cachedWatermarks(topic: topic, partition: partition) != nil { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return false
}
