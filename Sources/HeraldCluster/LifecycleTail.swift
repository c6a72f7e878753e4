import Foundation
import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// Reads `herald.lifecycle` for `herald events`: what is there since a time (one scan), or
/// that and then every new event as it comes (`follow`). Filters on the key (the system ID).
public struct LifecycleTail: Sendable {
    let kafka: String
    let topic: String
    let logger: Logger

    public init(kafka: String, topic: String = Topics.lifecycle, logger: Logger) {
        self.kafka = kafka
        self.topic = topic
        self.logger = logger
    }

    /// The events since `since` (ms), of `systemId` if given, oldest first.
    public func events(since: Int64, systemId: String?) async throws -> [LifecycleEvent] {
        let key = systemId.map { Array($0.utf8) }
        let found = Mutex<[LifecycleEvent]>([])
        try await KafkaScanner(kafka: kafka, logger: logger).scan(topics: [topic], since: since) { record in
            guard key == nil || record.key == key, let event = Self.decode(record), event.ts >= since else { return }
            found.withLock { $0.append(event) }
        }
        return found.withLock { $0 }.sorted { ($0.ts, $0.eventId) < ($1.ts, $1.eventId) }
    }

    /// Every event from `since` (ms; nil: from now) of `systemId` if given, as each partition
    /// gives them, until cancelled. Where each partition starts is found by time, and events
    /// before `since` are skipped: a broker's idea of a partition's end can lag (Tansu's does).
    public func follow(since: Int64?, systemId: String?, each: @Sendable (LifecycleEvent) -> Void) async throws {
        let since = since ?? Clock.nowMillis()
        let admin = try KafkaAdmin(config: ["bootstrap.servers": kafka], logger: logger)
        guard let count = try await admin.partitionCount(topic) else {
            throw KafkaError(code: KafkaError.invalidArgument, message: "no topic \(topic) on \(kafka)")
        }
        let partitions = Array(0..<count)
        var starts: [Int32: KafkaOffset] = Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaOffset.end) })
        let found = try await admin.offsetsForTimes(topic, partitions: partitions, timestamp: since)
        for partition in partitions { starts[partition] = (found[partition]).map { $0 >= 0 ? .at($0) : .end } ?? .end }
        let consumer = try KafkaConsumer(
            config: ["bootstrap.servers": kafka, "fetch.wait.max.ms": "10", "enable.partition.eof": "false"],
            assignments: partitions.map { (topic, $0, starts[$0] ?? .end) }, logger: logger, contiguous: true)
        let key = systemId.map { Array($0.utf8) }
        for await record in consumer.records {
            guard key == nil || record.key == key, let event = Self.decode(record) else { continue }
            if event.ts < since { continue }
            each(event)
        }
        await consumer.closeAndWait()
    }

    static func decode(_ record: KafkaRecord) -> LifecycleEvent? {
        try? JSONDecoder().decode(LifecycleEvent.self, from: Data(record.value))
    }
}
