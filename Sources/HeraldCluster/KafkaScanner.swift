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
    /// Offsets are contiguous (no compaction): a gap is fetched again, not stepped over.
    var contiguous = true

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
        let ranges = assignments.map { assignment -> Range in
            let start: Int64 = if case .at(let offset) = assignment.offset { offset } else { 0 }
            return Range(topic: assignment.topic, partition: assignment.partition, from: start, to: nil)
        }
        _ = try await read(ranges, ends: ends, visit: visit, progress: progress)
    }

    /// Part of one partition: offsets from `from`, up to `to` (excluded), or to the partition's
    /// end as the scan finds it when `to` is nil.
    public struct Range: Sendable, Hashable {
        public var topic: String
        public var partition: Int32
        public var from: Int64
        public var to: Int64?

        public init(topic: String, partition: Int32, from: Int64, to: Int64?) {
            self.topic = topic
            self.partition = partition
            self.from = from
            self.to = to
        }

        var key: String { "\(topic)/\(partition)" }
    }

    /// Calls `visit` with every record of `ranges`, in offset order within a partition; answers
    /// whether every range was read to its end before `deadline` (false: a stall or the
    /// deadline stopped it, and what was visited is only part of it). Reads only the ranges.
    public func scan(
        _ ranges: [Range], admin: KafkaAdmin, deadline: Duration, visit: @escaping @Sendable (KafkaRecord) -> Void
    ) async throws -> Bool {
        var ends: [String: Int64] = [:]
        for range in ranges where range.to == nil {
            ends[range.key] = try await admin.watermarks(range.topic, partition: range.partition).high
        }
        return try await read(ranges, ends: ends, deadline: deadline, visit: visit)
    }

    /// Reads `ranges` until each reached its end (`to`, else `ends` or the fetch-reported
    /// high-water mark), nothing came for `stallTimeout`, or `deadline` passed.
    private func read(
        _ ranges: [Range], ends: [String: Int64], deadline: Duration? = nil,
        visit: @escaping @Sendable (KafkaRecord) -> Void, progress: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws -> Bool {
        let ranges = ranges.filter { range in range.to.map { range.from < $0 } ?? true }
        guard !ranges.isEmpty else { return true }
        let started = ContinuousClock.now
        let limits = Dictionary(ranges.map { ($0.key, $0.to) }, uniquingKeysWith: { first, _ in first })
        let consumer = try KafkaConsumer(
            config: [
                "bootstrap.servers": kafka, "fetch.wait.max.ms": String(fetchWaitMillis),
                "enable.partition.eof": "false",
            ],
            assignments: ranges.map { ($0.topic, $0.partition, KafkaOffset.at($0.from)) }, logger: logger, contiguous: contiguous)
        let state = Mutex(ScanState(lastRecord: .now))
        let reader = Task {
            for await record in consumer.records {
                let key = "\(record.topic)/\(record.partition)"
                if let limit = limits[key] ?? nil, record.offset >= limit {
                    state.withLock { $0.next[key] = max($0.next[key] ?? 0, record.offset + 1) }
                    continue
                }
                visit(record)
                let count = state.withLock { state in
                    state.read += 1
                    state.lastRecord = .now
                    state.next[key] = record.offset + 1
                    return state.read
                }
                if count % 10_000 == 0 { progress(count) }
            }
        }
        // Finished when every partition has reached its end, or nothing came for a while.
        var complete = false
        while true {
            try? await Task.sleep(for: .milliseconds(deadline == nil ? 50 : 5))
            let (next, idle) = state.withLock { ($0.next, ContinuousClock.now - $0.lastRecord) }
            let pending = ranges.filter { range in
                let position = next[range.key] ?? range.from
                let end =
                    range.to
                    ?? max(ends[range.key] ?? 0, consumer.cachedWatermarks(topic: range.topic, partition: range.partition)?.high ?? 0)
                return position < end
            }
            // Done when every partition reached its end. A partition whose end the broker
            // overstated, or a broker gone quiet, stops the scan after a stall, not never.
            if pending.isEmpty {
                complete = true
                break
            }
            if idle > stallTimeout { break }
            if let deadline, ContinuousClock.now - started > deadline { break }
        }
        consumer.close()
        reader.cancel()
        _ = await reader.value
        progress(state.withLock { $0.read })
        return complete
    }

    struct ScanState {
        var read = 0
        var lastRecord: ContinuousClock.Instant
        var next: [String: Int64] = [:]
    }
}
