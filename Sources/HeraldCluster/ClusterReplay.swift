import Foundation
import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// Replay and trace over what Kafka holds: the messages of the unicast and broadcast
/// topics, and the delivery events every node records in the events topic.
public struct ClusterReplay: Sendable {
    public let scanner: KafkaScanner
    public let unicastTopic: String
    public let broadcastTopic: String
    public let eventsTopic: String

    public init(
        kafka: String, logger: Logger, unicastTopic: String = Topics.unicast, broadcastTopic: String = Topics.broadcast,
        eventsTopic: String = Topics.events
    ) {
        scanner = KafkaScanner(kafka: kafka, logger: logger)
        self.unicastTopic = unicastTopic
        self.broadcastTopic = broadcastTopic
        self.eventsTopic = eventsTopic
    }

    /// A carried message that matched: its line, and its record (for redelivery).
    public struct Match: Sendable {
        public var line: ReplayLine
        public var record: KafkaRecord
        public var inspection: WireFormat.Inspection
    }

    /// The messages matching `filter`, oldest first by record timestamp, at most its limit.
    public func matches(_ filter: ReplayFilter, progress: @escaping @Sendable (Int) -> Void = { _ in }) async throws -> [Match] {
        let found = Mutex<[Match]>([])
        try await scanner.scan(topics: [unicastTopic, broadcastTopic], since: filter.since, progress: progress) { record in
            guard let inspection = WireFormat.inspect(record.value),
                filter.matches(
                    timestamp: record.timestamp, systemId: inspection.systemId, messageId: inspection.messageId,
                    groupName: inspection.groupName, clientId: inspection.clientId)
            else { return }
            var headers: [String: String] = [:]
            for header in record.headers { headers[header.key] = String(decoding: header.value, as: UTF8.self) }
            let line = ReplayLine(
                placement: Placement(topic: record.topic, partition: record.partition, offset: record.offset),
                timestamp: record.timestamp, message: inspection, headers: headers)
            found.withLock { $0.append(Match(line: line, record: record, inspection: inspection)) }
        }
        let sorted = found.withLock { $0 }.sorted {
            ($0.line.millis, $0.line.topic, $0.line.partition, $0.line.offset)
                < ($1.line.millis, $1.line.topic, $1.line.partition, $1.line.offset)
        }
        return filter.limit.map { Array(sorted.prefix($0)) } ?? sorted
    }

    /// Every recorded step of one message, from every node, in path order; nil if none.
    public func trace(_ messageId: String) async throws -> [TraceStep]? {
        let steps = Mutex<[TraceStep]>([])
        let decoder = JSONDecoder()
        try await scanner.scan(topics: [eventsTopic]) { record in
            // A record holds one flush's events (an array); older records hold one event each.
            let value = Data(record.value)
            let events = (try? decoder.decode([TraceEvent].self, from: value))
                ?? (try? decoder.decode(TraceEvent.self, from: value)).map { [$0] } ?? []
            let matching = events.filter { $0.messageId == messageId }.map(\.step)
            if !matching.isEmpty { steps.withLock { $0.append(contentsOf: matching) } }
        }
        let found = steps.withLock { $0 }
        return found.isEmpty ? nil : TraceStep.inPathOrder(found)
    }
}

/// A trace step as it travels in the events topic (key: the message id).
struct TraceEvent: Codable {
    var messageId: String
    var step: TraceStep
}

/// Records trace steps to the events topic, batched: `record` only appends to a bounded
/// buffer; a background task sends what gathered every `interval`, so the hot path pays
/// for an append and nothing else.
public final class KafkaTraceRecorder: TraceRecorder {
    private let producer: KafkaProducer
    private let replay: ClusterReplay
    private let topic: String
    private let capacity: Int
    private let buffer = Mutex<[TraceEvent]>([])
    private let dropped = Atomic<Int>(0)
    /// The records' key: the node that recorded them.
    private let nodeKey: String
    static let eventsPerRecord = 500

    init(producer: KafkaProducer, replay: ClusterReplay, nodeKey: String, capacity: Int = 100_000) {
        self.producer = producer
        self.replay = replay
        self.topic = replay.eventsTopic
        self.nodeKey = nodeKey
        self.capacity = capacity
    }

    public func record(_ messageId: String, _ step: TraceStep) {
        guard !messageId.isEmpty else { return }
        let accepted = buffer.withLock { buffer in
            guard buffer.count < capacity else { return false }
            buffer.append(TraceEvent(messageId: messageId, step: step))
            return true
        }
        if !accepted { dropped.add(1, ordering: .relaxed) }
    }

    public func steps(for messageId: String) async throws -> [TraceStep]? {
        try await replay.trace(messageId)
    }

    /// Events that could not be buffered or sent (the trace is best effort; sends are not).
    public var droppedEvents: Int { dropped.load(ordering: .relaxed) }

    /// Sends the buffer every `interval` until cancelled, then once more.
    func run(interval: Duration = .milliseconds(100)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await flush()
        }
        await flush()
    }

    private func flush() async {
        let batch = buffer.withLock { buffer in
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        guard !batch.isEmpty else { return }
        // One record per chunk of a flush, not one per event: three or four events a message
        // would otherwise triple the broker's load.
        let encoder = JSONEncoder()
        let chunks = stride(from: 0, to: batch.count, by: Self.eventsPerRecord).map {
            Array(batch[$0..<min($0 + Self.eventsPerRecord, batch.count)])
        }
        await withTaskGroup(of: Int.self) { group in
            for chunk in chunks {
                guard let value = try? encoder.encode(chunk) else {
                    dropped.add(chunk.count, ordering: .relaxed)
                    continue
                }
                group.addTask {
                    let sent = try? await self.producer.send(
                        topic: self.topic, partition: -1, key: Array(self.nodeKey.utf8), value: Array(value), headers: [])
                    return sent == nil ? chunk.count : 0
                }
            }
            for await lost in group where lost > 0 {
                dropped.add(lost, ordering: .relaxed)
            }
        }
    }
}
