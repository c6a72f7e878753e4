import Foundation
import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// Sends this node's lifecycle events to `herald.lifecycle`, one record per event keyed by
/// system ID (so one system's events keep their order). Events wait in a buffer bounded in
/// count and bytes; a send that fails puts them back, in order, and is tried again, so a Kafka
/// outage shorter than the buffer loses nothing. Past the bound an event is dropped, counted
/// (`herald_lifecycle_dropped_total`) and logged: never silently.
public final class KafkaLifecycleRecorder: LifecycleRecorder {
    struct Buffer {
        var events: [LifecycleEvent] = []
        var bytes = 0
    }

    private let producer: KafkaProducer
    private let scanner: KafkaScanner
    private let topic: String
    private let logger: Logger
    private let capacity: Int
    private let capacityBytes: Int
    private let buffer = Mutex(Buffer())
    private let dropped = Atomic<Int>(0)
    private let recorded = Atomic<Int>(0)
    private let done = Atomic<Bool>(false)
    /// Rings when an event lands in an empty buffer: the sender wakes for it, not on a timer.
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    /// Events sent per pass at most: a backlog after an outage drains in bounded bites.
    static let perPass = 2000
    /// How far back `/admin/events` looks.
    static let recentWindowMillis: Int64 = 3_600_000

    init(
        producer: KafkaProducer, scanner: KafkaScanner, topic: String, logger: Logger, capacity: Int = 100_000,
        capacityBytes: Int = 32 << 20
    ) {
        self.producer = producer
        self.scanner = scanner
        self.topic = topic
        self.logger = logger
        self.capacity = capacity
        self.capacityBytes = capacityBytes
        (wakeups, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public func record(_ event: LifecycleEvent) {
        recorded.add(1, ordering: .relaxed)
        let size = event.approximateBytes
        let (kept, first) = buffer.withLock { buffer -> (Bool, Bool) in
            guard buffer.events.count < capacity, buffer.bytes + size <= capacityBytes else { return (false, false) }
            buffer.events.append(event)
            buffer.bytes += size
            return (true, buffer.events.count == 1)
        }
        if first { wake.yield() }
        guard !kept else { return }
        let total = dropped.add(1, ordering: .relaxed).newValue
        // Every drop is counted; the log says so for the first and then every 1,000th.
        if total == 1 || total % 1000 == 0 {
            logger.error(
                "lifecycle events dropped: the buffer is full (Kafka unreachable?)",
                metadata: ["dropped": "\(total)", "event": .string(event.event.rawValue), "eventId": .string(event.eventId)])
        }
    }

    public var droppedEvents: Int { dropped.load(ordering: .relaxed) }

    /// Events recorded so far: when it has not moved, this node's clients have not changed.
    var recordedEvents: Int { recorded.load(ordering: .relaxed) }

    /// Whether `run` has made its last pass (the node is shutting down).
    var isFinished: Bool { done.load(ordering: .relaxed) }

    /// Sends `events` now, past the buffer, and answers whether Kafka acknowledged all of them
    /// (what failed may be sent again: the IDs are the same). For a survivor's `node_lost`
    /// report, which must be in Kafka before it says it is done.
    func sendNow(_ events: [LifecycleEvent]) async -> Bool {
        recorded.add(events.count, ordering: .relaxed)
        return await producer.sendInOrder(events.map(record(of:))).allSatisfy { $0 }
    }

    private func record(of event: LifecycleEvent) -> OutgoingRecord {
        OutgoingRecord(
            topic: topic, key: Array(event.systemId.utf8), value: Array(event.json.utf8),
            headers: [KafkaHeader("event", event.event.rawValue), KafkaHeader("eventId", event.eventId)])
    }

    /// Events waiting to be sent.
    public var pending: Int { buffer.withLock { $0.events.count } }

    public func recent(systemId: String, limit: Int) async throws(HeraldError) -> [LifecycleEvent] {
        let found = Mutex<[LifecycleEvent]>([])
        let key = Array(systemId.utf8)
        do {
            try await scanner.scan(topics: [topic], since: Clock.nowMillis() - Self.recentWindowMillis) { record in
                guard record.key == key, let event = try? JSONDecoder().decode(LifecycleEvent.self, from: Data(record.value))
                else { return }
                found.withLock { $0.append(event) }
            }
        } catch {
            throw HeraldError.unavailable("cannot read \(topic): \(error)")
        }
        return Array(found.withLock { $0 }.sorted { $0.ts < $1.ts }.suffix(max(0, limit)))
    }

    /// Sends what waits as soon as it comes (after `gather`, so a burst goes in one pass) until
    /// cancelled, then once more. A failed pass is tried again with backoff.
    func run(gather: Duration = .milliseconds(2)) async {
        for await _ in wakeups {
            try? await Task.sleep(for: gather)
            var backoff = Duration.milliseconds(50)
            while !Task.isCancelled, pending > 0 {
                if await flush() { continue }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
            if Task.isCancelled { break }
        }
        // Shutting down: one more pass (the drain's `disconnected` events are in by now); what
        // it could not send is lost with the process, and said so.
        _ = await flush()
        let left = buffer.withLock { buffer in
            defer { buffer = Buffer() }
            return buffer.events.count
        }
        if left > 0 {
            dropped.add(left, ordering: .relaxed)
            logger.error("lifecycle events not sent before shutdown", metadata: ["events": "\(left)"])
        }
        done.store(true, ordering: .relaxed)
    }

    /// One pass; false when a send failed (what failed is back at the front of the buffer).
    private func flush() async -> Bool {
        let batch = buffer.withLock { buffer -> [LifecycleEvent] in
            let batch = Array(buffer.events.prefix(Self.perPass))
            buffer.events.removeFirst(batch.count)
            buffer.bytes -= batch.reduce(0) { $0 + $1.approximateBytes }
            return batch
        }
        guard !batch.isEmpty else { return true }
        // In order: one system's events go to one partition, and keep their order there.
        let acknowledged = await producer.sendInOrder(batch.map(record(of:)))
        let failed = acknowledged.indices.filter { !acknowledged[$0] }
        guard !failed.isEmpty else { return true }
        // Sent again later, with the same event IDs (consumers deduplicate): at least once.
        let retry = failed.map { batch[$0] }
        buffer.withLock { buffer in
            buffer.events.insert(contentsOf: retry, at: 0)
            buffer.bytes += retry.reduce(0) { $0 + $1.approximateBytes }
        }
        return false
    }
}
