import AsyncHTTPClient
import Crypto
import DequeModule
import Foundation
import HeraldCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// How webhook deliveries behave (docs/lifecycle.md, "Webhooks").
struct WebhookSettings: Sendable {
    /// Events and bytes in one POST at most.
    var batchEvents = 100
    var batchBytes = 256 << 10
    /// How long a batch waits for more events before it goes.
    var linger: Duration = .milliseconds(10)
    /// One attempt's limit, connect to last byte.
    var timeout: Duration = .seconds(5)
    /// How long a batch is retried (exponential backoff with jitter) before it is a dead letter.
    var retryHorizon: Duration = .seconds(300)
    var firstBackoff: Duration = .milliseconds(250)
    var maxBackoff: Duration = .seconds(30)
    /// Events one system may have waiting (and their bytes): past it, an event is a dead letter
    /// at once, so a receiver that never answers costs a bounded amount of memory.
    var queueEvents = 10_000
    var queueBytes = 8 << 20
    /// Bytes waiting for every system together.
    var totalBytes = 64 << 20
}

/// POSTs each system's lifecycle events to its webhook, in order, in batches: a JSON array,
/// signed `X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body under the system's secret>`.
/// Each system has its own queue and one batch in flight, so a slow or dead receiver delays
/// only its own system. A batch that fails (a non-2xx answer, a timeout) is retried with
/// exponential backoff until `retryHorizon`, then counted as dead letters; so is an event that
/// finds its system's queue full. Every event's `done` is called once, whatever its end, so the
/// feed can move its committed offset past it.
final class WebhookDispatcher: Sendable {
    struct Pending: Sendable {
        var event: LifecycleEvent
        var json: [UInt8]
        var done: (@Sendable () -> Void)?
    }

    struct Queue {
        var events = Deque<Pending>()
        var bytes = 0
    }

    struct State {
        var queues: [String: Queue] = [:]
        /// Bytes queued or in flight, every system together.
        var bytes = 0
    }

    private let settings: WebhookSettings
    /// Made by `start` and shut down by `shutdown` (a client never shut down traps in its deinit).
    private let client = Mutex<HTTPClient?>(nil)
    private let systems: any SystemDirectory
    private let codec: ClientIDCodec
    private let logger: Logger
    /// Named in `X-Herald-Node`: which node delivered (ops, and the tests of the group's moves).
    private let nodeId: @Sendable () -> String
    private let state = Mutex(State())
    private let counters = Counters()

    final class Counters: Sendable {
        let delivered = Atomic<Int>(0)
        let deadLetters = Atomic<Int>(0)
        let failedAttempts = Atomic<Int>(0)
        let batches = Atomic<Int>(0)
    }

    init(
        settings: WebhookSettings, systems: any SystemDirectory, codec: ClientIDCodec, nodeId: @escaping @Sendable () -> String,
        logger: Logger
    ) {
        self.settings = settings
        self.nodeId = nodeId
        self.systems = systems
        self.codec = codec
        self.logger = logger
    }

    /// Makes the HTTP client the deliveries use; before it, batches wait as failed attempts.
    func start() {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(Int64(max(1, settings.timeout.components.seconds))))
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4)
        let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let old = client.withLock { current -> HTTPClient? in
            defer { current = made }
            return current
        }
        if let old { Task { try? await old.shutdown() } }
    }

    /// Takes one event for its system's webhook; never blocks. `done` is called when it was
    /// delivered, skipped (no webhook, or older than it) or dropped as a dead letter. `json` is
    /// the event as already encoded (a Kafka record's value), so it is not encoded again.
    func offer(_ event: LifecycleEvent, json encoded: [UInt8]? = nil, done: (@Sendable () -> Void)? = nil) {
        let json = encoded ?? Array(event.json.utf8)
        let size = json.count + 64
        let (accepted, start) = state.withLock { state -> (Bool, Bool) in
            let queue = state.queues[event.systemId]
            let waiting = queue?.events.count ?? 0
            guard waiting < settings.queueEvents, (queue?.bytes ?? 0) + size <= settings.queueBytes,
                state.bytes + size <= settings.totalBytes
            else { return (false, false) }
            let start = queue == nil
            state.queues[event.systemId, default: Queue()].events.append(Pending(event: event, json: json, done: done))
            state.queues[event.systemId]?.bytes += size
            state.bytes += size
            return (true, start)
        }
        guard accepted else {
            deadLetter(1, systemId: event.systemId, why: "its queue is full (the receiver is slower than its events)")
            done?()
            return
        }
        if start { Task { await self.work(systemId: event.systemId) } }
    }

    /// Delivers a system's queue, batch by batch, until it is empty; then the queue goes (the
    /// next offer starts a new worker).
    private func work(systemId: String) async {
        while true {
            try? await Task.sleep(for: settings.linger)
            let batch = state.withLock { state -> [Pending]? in
                guard var queue = state.queues[systemId], !queue.events.isEmpty else {
                    state.queues[systemId] = nil
                    return nil
                }
                var batch: [Pending] = []
                var bytes = 0
                while let next = queue.events.first, batch.count < settings.batchEvents,
                    batch.isEmpty || bytes + next.json.count <= settings.batchBytes
                {
                    batch.append(queue.events.removeFirst())
                    bytes += next.json.count
                }
                state.queues[systemId] = queue
                return batch
            }
            guard let batch else { return }
            await deliver(batch, systemId: systemId)
            let size = batch.reduce(0) { $0 + $1.json.count + 64 }
            state.withLock { state in
                state.queues[systemId]?.bytes -= size
                state.bytes -= size
            }
            for pending in batch { pending.done?() }
        }
    }

    private func deliver(_ batch: [Pending], systemId: String) async {
        let started = ContinuousClock.now
        var backoff = settings.firstBackoff
        while true {
            let outcome = await attempt(batch, systemId: systemId)
            switch outcome {
            case .delivered(let count):
                counters.delivered.add(count, ordering: .relaxed)
                counters.batches.add(1, ordering: .relaxed)
                return
            case .skipped:
                return
            case .failed(let why):
                counters.failedAttempts.add(1, ordering: .relaxed)
                // Full jitter: receivers that failed together do not come back together.
                let wait = Duration.milliseconds(Int64.random(in: 0...max(1, backoff.milliseconds)))
                if ContinuousClock.now - started + wait > settings.retryHorizon {
                    deadLetter(batch.count, systemId: systemId, why: "not delivered within the retry horizon: \(why)")
                    return
                }
                try? await Task.sleep(for: wait)
                backoff = min(backoff * 2, settings.maxBackoff)
            }
        }
    }

    enum Outcome {
        case delivered(Int)
        /// No webhook, or every event older than it: nothing to send.
        case skipped
        case failed(String)
    }

    private func attempt(_ batch: [Pending], systemId: String) async -> Outcome {
        let system: SystemRecord?
        do {
            system = try await systems.lookup(systemId)
        } catch {
            return .failed("the system's record cannot be read: \(error)")
        }
        guard let system, let url = system.webhook, let secret = system.webhookSecret(codec) else { return .skipped }
        let since = system.webhookSince ?? 0
        let due = batch.filter { $0.event.ts >= since }
        guard !due.isEmpty else { return .skipped }
        var body: [UInt8] = [UInt8(ascii: "[")]
        for (index, pending) in due.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body.append(contentsOf: pending.json)
        }
        body.append(UInt8(ascii: "]"))
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Herald")
        request.headers.add(name: "X-Herald-System", value: systemId)
        request.headers.add(name: "X-Herald-Node", value: nodeId())
        request.headers.add(name: Self.signatureHeader, value: Self.signature(of: body, secret: secret))
        request.body = .bytes(ByteBuffer(bytes: body))
        guard let http = client.withLock({ $0 }) else { return .failed("webhooks are not running") }
        do {
            let response = try await http.execute(request, timeout: .milliseconds(settings.timeout.milliseconds))
            // The answer's body is read (to reuse the connection) and dropped, up to a bound.
            _ = try? await response.body.collect(upTo: 64 << 10)
            guard (200..<300).contains(response.status.code) else { return .failed("answered \(response.status.code)") }
            return .delivered(due.count)
        } catch {
            return .failed("\(error)")
        }
    }

    static let signatureHeader = "X-Herald-Signature"

    /// `sha256=<hex>` of the body under the secret, as Pusher and Soketi sign.
    static func signature(of body: [UInt8], secret: Data) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: secret))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    private func deadLetter(_ count: Int, systemId: String, why: String) {
        let total = counters.deadLetters.add(count, ordering: .relaxed).newValue
        // Counted always; logged for the first and then about every 1,000th.
        if total == count || total / 1000 != (total - count) / 1000 {
            logger.error(
                "webhook events dropped as dead letters", metadata: ["system": .string(systemId), "events": "\(count)", "total": "\(total)", "why": .string(why)])
        }
    }

    /// Prometheus text of the webhook counters.
    var metricsText: String {
        let pending = state.withLock { $0.queues.values.reduce(0) { $0 + $1.events.count } }
        return """
            # TYPE herald_webhook_events_delivered_total counter
            herald_webhook_events_delivered_total \(counters.delivered.load(ordering: .relaxed))
            # TYPE herald_webhook_batches_delivered_total counter
            herald_webhook_batches_delivered_total \(counters.batches.load(ordering: .relaxed))
            # TYPE herald_webhook_failed_attempts_total counter
            herald_webhook_failed_attempts_total \(counters.failedAttempts.load(ordering: .relaxed))
            # TYPE herald_webhook_dead_letters_total counter
            herald_webhook_dead_letters_total \(counters.deadLetters.load(ordering: .relaxed))
            # TYPE herald_webhook_pending_events gauge
            herald_webhook_pending_events \(pending)
            # TYPE herald_webhook_pending_bytes gauge
            herald_webhook_pending_bytes \(state.withLock { $0.bytes })

            """
    }

    func shutdown() async {
        let http = client.withLock { current -> HTTPClient? in
            defer { current = nil }
            return current
        }
        try? await http?.shutdown()
    }
}

extension Duration {
    fileprivate var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
