import HeraldKafka
import Logging
import Synchronization

/// Reads topics from their start (or a time hint) to their end and stops: for replay and
/// trace. The end of a partition is the high-water mark that fetch responses report (a
/// broker's ListOffsets answer can lag). An empty or idle partition is finished from the
/// start, and a scan that makes no progress for `stallTimeout` stops, so none hangs.
public struct KafkaScanner: Sendable {
    let kafka: String
    let logger: Logger
    var stallTimeout: Duration = .seconds(10)
    var fetchWaitMillis = 10

    public init(kafka: String, logger: Logger) {
        self.kafka = kafka
        self.logger = logger
    }

    /// Calls `visit` with every record of `topics` (from `since`, a hint only: callers still
    /// filter on record timestamps), in no particular order across partitions.
    /// `progress` is called now and then with the number of records read.
    public func scan(
        topics: [String], since: Int64? = nil, progress: @escaping @Sendable (Int) -> Void = { _ in },
        visit: @escaping @Sendable (KafkaRecord) -> Void
    ) async throws {
        let admin = try KafkaAdmin(config: ["bootstrap.servers": kafka], logger: logger)
        var assignments: [(topic: String, partition: Int32, offset: KafkaOffset)] = []
        var ends: [String: Int64] = [:]
        for topic in topics {
            guard let count = try await admin.partitionCount(topic) else { continue }
            let partitions = Array(0..<count)
            // One time lookup for the whole topic; its answers are only a place to start.
            var hints: [Int32: Int64] = [:]
            if let since {
                hints = (try? await admin.offsetsForTimes(topic, partitions: partitions, timestamp: since)) ?? [:]
            }
            let marks = try await withThrowingTaskGroup(of: (Int32, (low: Int64, high: Int64)).self) { group in
                for partition in partitions {
                    group.addTask { (partition, try await admin.watermarks(topic, partition: partition)) }
                }
                var marks: [Int32: (low: Int64, high: Int64)] = [:]
                for try await (partition, mark) in group { marks[partition] = mark }
                return marks
            }
            for partition in partitions {
                guard let mark = marks[partition] else { continue }
                var start = mark.low
                if let hint = hints[partition], hint >= 0 { start = max(mark.low, hint) }
                assignments.append((topic, partition, .at(start)))
                ends["\(topic)/\(partition)"] = mark.high
            }
        }
        guard !assignments.isEmpty else { return }
        let consumer = try KafkaConsumer(
            config: [
                "bootstrap.servers": kafka, "fetch.wait.max.ms": String(fetchWaitMillis),
                "enable.partition.eof": "false",
            ],
            assignments: assignments, logger: logger)
        let state = Mutex(ScanState(lastRecord: .now))
        let reader = Task {
            for await record in consumer.records {
                visit(record)
                let count = state.withLock { state in
                    state.read += 1
                    state.lastRecord = .now
                    state.next["\(record.topic)/\(record.partition)"] = record.offset + 1
                    return state.read
                }
                if count % 10_000 == 0 { progress(count) }
            }
        }
        // Finished when every partition has reached its end, or nothing came for a while.
        while true {
            try? await Task.sleep(for: .milliseconds(50))
            let (next, idle) = state.withLock { ($0.next, ContinuousClock.now - $0.lastRecord) }
            let pending = assignments.filter { assignment in
                let key = "\(assignment.topic)/\(assignment.partition)"
                let start: Int64 = if case .at(let offset) = assignment.offset { offset } else { 0 }
                let position = next[key] ?? start
                let end = max(ends[key] ?? 0, consumer.cachedWatermarks(topic: assignment.topic, partition: assignment.partition)?.high ?? 0)
                return position < end
            }
            // Done when every partition reached its end. A partition whose end the broker
            // overstated, or a broker gone quiet, stops the scan after a stall, not never.
            if pending.isEmpty || idle > stallTimeout { break }
        }
        consumer.close()
        reader.cancel()
        _ = await reader.value
        progress(state.withLock { $0.read })
    }

    struct ScanState {
        var read = 0
        var lastRecord: ContinuousClock.Instant
        var next: [String: Int64] = [:]
    }
}
