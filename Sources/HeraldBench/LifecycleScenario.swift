import Foundation
import HeraldCluster
import HeraldCore
import Logging
import NIOCore
import NIOPosix

/// The lifecycle scenario (issue 14): clients connect and disconnect at a steady rate on the
/// cluster's nodes, for a system with a webhook; the bench reads `herald.lifecycle` itself and
/// runs the webhook receiver. Measured: each event's latency from its cause (`ts`, set on the
/// node when it happened) to its Kafka record reaching a consumer and to its webhook POST
/// arriving; the nodes' CPU per connect and disconnect; then, for a node killed under its
/// clients, how long until every one of them is reported `node_lost`, in Kafka and by webhook.
struct LifecycleScenario {
    var nodes: [Endpoint]
    /// The nodes' processes (their CPU is the cost measured).
    var nodePids: [Int32]
    var victim: Endpoint
    var victimPid: Int32
    var api: Endpoint
    var adminToken: String?
    var brokers: String
    var cycles: Int
    var rate: Double
    var lostClients: Int
    var leaseTTL: Double

    func run() async throws -> LifecycleResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let http = HTTPClientPool(eventLoop: group.next(), endpoint: api, maxConnections: 16)
        let sink = try await WebhookSink.start(group: group)
        let held = Shared([any Channel]())
        defer {
            Task {
                for channel in held.value { try? await channel.close() }
                await sink.close()
                try? await http.shutdown().get()
                try? await group.shutdownGracefully()
            }
        }
        var result = LifecycleResult(cycles: cycles, rate: rate, lostClients: lostClients, leaseTTL: leaseTTL)
        let systemId = "bench-lifecycle-\(UInt32.random(in: 0...UInt32.max))"
        let secret = "bench-\(UUID().uuidString)"
        var headers: [(String, String)] = []
        if let adminToken { headers.append(("Authorization", "Bearer \(adminToken)")) }
        let answer = try await http.send(
            PublishRequest(
                path: "/api/register", headers: headers,
                body: { _ in #"{"systemId":"\#(systemId)","secret":"\#(secret)","webhook":"\#(sink.url)"}"# }))
        guard answer.status == 200 else { throw HarnessError("register: HTTP \(answer.status) \(answer.body.prefix(300))") }

        // The bench's own reader of herald.lifecycle: when each event reached a consumer.
        let seen = Shared([String: (event: LifecycleEvent, at: Int64)]())
        let tail = LifecycleTail(kafka: brokers, logger: Logger(label: "bench-lifecycle"))
        let reader = Task {
            try await tail.follow(since: Clock.nowMillis() - 1000, systemId: systemId) { event in
                let now = Clock.nowMillis()
                seen.withLock { if $0[event.eventId] == nil { $0[event.eventId] = (event, now) } }
            }
        }
        defer { reader.cancel() }
        // The nodes idle (their consumers' fetches, keepalives): what the churn's cost is over.
        let idleBefore = nodePids.map { ProcFS.cpuNanos(pid: $0) ?? 0 }
        let idleStarted = MonotonicClock.nanos()
        try await Task.sleep(for: .seconds(5))
        let idleNanos = zip(idleBefore, nodePids.map { ProcFS.cpuNanos(pid: $0) ?? 0 }).reduce(UInt64(0)) { $0 + ($1.1 &- $1.0) }
        let idleCores = Double(idleNanos) / Double(MonotonicClock.nanos() - idleStarted)
        result.nodesIdleCores = idleCores

        // 1. Churn: connect, welcome, close; paced.
        let ledger = ResumeLedger(count: cycles)
        let cpuBefore = nodePids.map { ProcFS.cpuNanos(pid: $0) ?? 0 }
        let machineBefore = ProcFS.machineCPU().busy
        let started = MonotonicClock.nanos()
        let next = Shared(0)
        let failures = Shared(0)
        let interval = 1e9 / max(1, rate)
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<32 {
                tasks.addTask {
                    while true {
                        let index = next.withLock { n in
                            defer { n += 1 }
                            return n
                        }
                        guard index < cycles else { return }
                        let due = started + UInt64(Double(index) * interval)
                        let now = MonotonicClock.nanos()
                        if due > now { try? await Task.sleep(for: .nanoseconds(Int64(due - now))) }
                        do {
                            let channel = try await ReconnectScenario.open(
                                index: index, endpoint: nodes[index % nodes.count], path: "/ws?systemId=\(systemId)", resuming: false,
                                ledger: ledger, loop: group.next(), timeoutSeconds: 10)
                            try? await channel.close()
                        } catch {
                            failures.withLock { $0 += 1 }
                        }
                    }
                }
            }
        }
        let churnSeconds = Double(MonotonicClock.nanos() - started) / 1e9
        // The disconnects' own work finishes just after the last close.
        try await Task.sleep(for: .milliseconds(300))
        let cpuAfter = nodePids.map { ProcFS.cpuNanos(pid: $0) ?? 0 }
        let machineAfter = ProcFS.machineCPU().busy
        result.failedCycles = failures.value
        result.churnSeconds = churnSeconds
        let nodeCPU = zip(cpuBefore, cpuAfter).reduce(UInt64(0)) { $0 + ($1.1 &- $1.0) }
        let done = Double(max(1, cycles - failures.value))
        result.nodeCPUMicrosPerCycle = Double(nodeCPU) / 1e3 / done
        result.nodeCPUOverIdleMicrosPerCycle = max(0, Double(nodeCPU) / 1e3 - idleCores * (churnSeconds + 0.3) * 1e6) / done
        result.machineCores = Double(machineAfter &- machineBefore) / 1e9 / (churnSeconds + 0.3)
        let expected = 2 * (cycles - failures.value)
        do {
            try await waitUntil("\(expected) events in Kafka and by webhook", seconds: 60) {
                seen.value.count >= expected && sink.arrivals.value.count >= expected
            }
        } catch {
            // Which clients' events are missing, and where they were.
            let kinds = Dictionary(grouping: seen.value.values.map(\.event), by: \.clientId)
            let missing = ledger.snapshot.enumerated().filter { !$0.element.clientId.isEmpty }.compactMap { index, client -> String? in
                let got = Set(kinds[client.clientId]?.map(\.event.rawValue) ?? [])
                guard got.count < 2 else { return nil }
                return "cycle \(index) on \(nodes[index % nodes.count]) has only [\(got.sorted().joined(separator: ","))]: \(client.clientId.prefix(12))"
            }
            let unsent = seen.value.filter { sink.arrivals.value[$0.key] == nil }.map { "\($0.value.event.event.rawValue) \($0.value.event.clientId.prefix(12))" }
            throw HarnessError(
                "\(error): \(seen.value.count) in Kafka, \(sink.arrivals.value.count) by webhook; missing in Kafka: \(missing.prefix(5)); not by webhook: \(unsent.prefix(5))")
        }
        let events = seen.value
        let arrivals = sink.arrivals.value
        result.eventsInKafka = events.count
        result.eventsByWebhook = arrivals.count
        result.kafkaMs = LifecycleResult.Spread(events.values.map { Double($0.at - $0.event.ts) })
        result.webhookMs = LifecycleResult.Spread(events.compactMap { id, seen in arrivals[id].map { Double($0 - seen.event.ts) } })

        // 2. A node killed under `lostClients` clients: until each is reported node_lost.
        let lostLedger = ResumeLedger(count: lostClients)
        for index in 0..<lostClients {
            let channel = try await ReconnectScenario.open(
                index: index, endpoint: victim, path: "/ws?systemId=\(systemId)", resuming: false, ledger: lostLedger,
                loop: group.next(), timeoutSeconds: 10)
            held.withLock { $0.append(channel) }
        }
        let victimIds = Set(lostLedger.snapshot.map(\.clientId).filter { !$0.isEmpty })
        try await waitUntil("the victim's connected events in Kafka", seconds: 30) {
            Set(seen.value.values.filter { $0.event.event == .connected }.map(\.event.clientId)).isSuperset(of: victimIds)
        }
        let killedAt = Clock.nowMillis()
        guard kill(victimPid, SIGKILL) == 0 else { throw HarnessError("cannot kill pid \(victimPid): errno \(errno)") }
        func lost() -> [(event: LifecycleEvent, at: Int64)] {
            seen.value.values.filter { $0.event.reason == .nodeLost && victimIds.contains($0.event.clientId) }
        }
        try await waitUntil("\(victimIds.count) node_lost events in Kafka and by webhook", seconds: leaseTTL + 40) {
            let reported = lost()
            return reported.count >= victimIds.count && reported.allSatisfy { sink.arrivals.value[$0.event.eventId] != nil }
        }
        let reported = lost()
        result.lostReported = reported.count
        result.lostReporters = Set(reported.compactMap(\.event.reportedBy)).count
        result.killToLostInKafkaMs = Double((reported.map(\.at).max() ?? killedAt) - killedAt)
        let webhookArrivals = sink.arrivals.value
        result.killToLostByWebhookMs = Double((reported.compactMap { webhookArrivals[$0.event.eventId] }.max() ?? killedAt) - killedAt)
        return result
    }
}

struct LifecycleResult: Codable, Sendable {
    typealias Spread = ReconnectResult.Spread

    var cycles: Int
    var rate: Double
    var lostClients: Int
    var leaseTTL: Double
    var failedCycles = 0
    var churnSeconds = 0.0
    /// The three nodes' CPU over the churn, per connect and disconnect (µs).
    var nodeCPUMicrosPerCycle = 0.0
    /// The same less what the nodes used idle over as long.
    var nodeCPUOverIdleMicrosPerCycle = 0.0
    var nodesIdleCores = 0.0
    var machineCores = 0.0
    var eventsInKafka = 0
    var eventsByWebhook = 0
    /// From an event's `ts` to the bench's consumer, and to the webhook receiver (ms).
    var kafkaMs = Spread()
    var webhookMs = Spread()
    var lostReported = 0
    var lostReporters = 0
    var killToLostInKafkaMs = 0.0
    var killToLostByWebhookMs = 0.0
}
