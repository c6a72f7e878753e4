import Foundation
import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// One event for the webhooks: the event, its JSON when it is already encoded (a record's
/// value: not encoded again), and what to call once it is done with.
public struct WebhookFeedItem: Sendable {
    public var event: LifecycleEvent
    public var json: [UInt8]?
    public var done: @Sendable () -> Void

    public init(event: LifecycleEvent, json: [UInt8]?, done: @escaping @Sendable () -> Void) {
        self.event = event
        self.json = json
        self.done = done
    }
}

/// Feeds `herald.lifecycle` to the webhooks: every node is a member of one consumer group
/// (`<lifecycle topic>.webhooks`), so each partition, and each event, is handed out by exactly
/// one node; a node that dies leaves the group after the session timeout and its partitions
/// move to the others, from the group's committed offsets. An offset is committed only once
/// every event before it is done with (delivered, skipped or a dead letter), so a move repeats
/// at most what was in flight (at least once; the event IDs are stable).
final class LifecycleWebhookFeed: Sendable {
    private let settings: ClusterSettings
    private let logger: Logger
    private let progress = Mutex(CommitProgress())

    init(settings: ClusterSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    static func group(for lifecycleTopic: String) -> String { lifecycleTopic + ".webhooks" }

    /// Hands each event to `deliver` with its done callback, until cancelled.
    func run(deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async {
        while !Task.isCancelled {
            do {
                try await consume(deliver: deliver)
            } catch {
                logger.error("cannot read \(settings.lifecycleTopic) for webhooks; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(2))
            }
        }
    }

    private func consume(deliver: @escaping @Sendable (WebhookFeedItem) -> Void) async throws {
        let topic = settings.lifecycleTopic
        let consumer = try KafkaConsumer(
            config: settings.kafkaBase.merging([
                "group.id": Self.group(for: topic),
                // A new group starts at the beginning: the dispatcher skips what predates each webhook.
                "auto.offset.reset": "earliest",
                // A dead member's partitions move after 6 s (Tansu waits out the rebalance
                // timeout on a join: keep it short too).
                "session.timeout.ms": "6000", "heartbeat.interval.ms": "2000", "max.poll.interval.ms": "10000",
                "fetch.wait.max.ms": String(settings.fetchWaitMillis), "enable.partition.eof": "false",
            ]) { $1 },
            subscribe: [topic], logger: logger, contiguous: true)
        let committer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                consumer.commit(self.progress.withLock { $0.committable() }.map { (topic, $0.partition, $0.next) })
            }
        }
        defer {
            committer.cancel()
            consumer.close()
        }
        for await record in consumer.records {
            let (partition, offset) = (record.partition, record.offset)
            progress.withLock { $0.arrived(partition: partition, offset: offset) }
            let done: @Sendable () -> Void = { self.progress.withLock { $0.finished(partition: partition, offset: offset) } }
            guard let event = try? JSONDecoder().decode(LifecycleEvent.self, from: Data(record.value)) else {
                done()
                continue
            }
            deliver(WebhookFeedItem(event: event, json: record.value, done: done))
        }
        await consumer.closeAndWait()
    }
}
