import Foundation
import NIOCore
import NIOPosix

/// The reconnect scenario (issue 13): clients on one node, each bound to a group, have had a
/// push (so they hold a position); the node is killed (SIGKILL); during the gap messages go to
/// their system, their groups and their old IDs; then every client resumes on the other nodes
/// with its session token and position. Measured: how long each resume takes, how long until
/// 99% have resumed, and how many recovered frames per second the surviving nodes serve;
/// checked: every client recovered exactly what was sent to it during the gap.
struct ReconnectScenario {
    var clients: Int
    var groups: Int
    /// System messages during the gap (each reaches every client).
    var gapSystemMessages: Int
    /// Where the clients first connect (the node that will be killed), and its process.
    var victim: Endpoint
    var victimPid: Int32
    /// Where they resume, round-robin (the surviving nodes).
    var resumeAt: [Endpoint]
    /// Where the API calls go (a surviving node).
    var api: Endpoint
    var adminToken: String?
    /// Connects in flight at once.
    var concurrency: Int
    var timeoutSeconds: Double

    func run() async throws -> ReconnectResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let http = HTTPClientPool(eventLoop: group.next(), endpoint: api, maxConnections: 64)
        let channels = Shared([(any Channel)?](repeating: nil, count: clients))
        do {
            let result = try await measure(group: group, http: http, channels: channels)
            await Self.close(channels, http, group)
            return result
        } catch {
            await Self.close(channels, http, group)
            throw error
        }
    }

    private static func close(_ channels: Shared<[(any Channel)?]>, _ http: HTTPClientPool, _ group: MultiThreadedEventLoopGroup) async {
        for channel in channels.value { try? await channel?.close() }
        try? await http.shutdown().get()
        try? await group.shutdownGracefully()
    }

    private func measure(group: MultiThreadedEventLoopGroup, http: HTTPClientPool, channels: Shared<[(any Channel)?]>) async throws
        -> ReconnectResult
    {
        let ledger = ResumeLedger(count: clients)
        var errors: [String] = []
        let systemId = "bench-reconnect-\(UInt32.random(in: 0...UInt32.max))"
        try await register(systemId, http)

        // 1. Clients on the victim, each in a group, each with a first push (a position).
        let opened = await connectAll(ledger, group: group, errors: &errors) { _ in (victim, "/ws?systemId=\(systemId)", false) }
        channels.withLock { for (index, channel) in opened { $0[index] = channel } }
        let ids = ledger.snapshot.map(\.clientId)
        try await forEach(0..<clients) { index in
            guard !ids[index].isEmpty else { return }
            try await call(http, systemId, "bind_to_group", #"{"clientId":"\#(ids[index])","groupName":"g\#(index % groups)"}"#)
        }
        try await call(http, systemId, "send_to_system", #"{"msg":"warm","data":"before"}"#)
        try await waitUntil("every client has its first push", seconds: 20) {
            ledger.snapshot.allSatisfy { $0.clientId.isEmpty || ($0.pushes >= 1 && $0.token != nil && $0.pos != nil) }
        }
        let ready = ledger.snapshot.filter { !$0.clientId.isEmpty && $0.token != nil && $0.pos != nil }.count

        // 2. The node dies; what is sent meanwhile is what each client must recover.
        let killedAt = MonotonicClock.nanos()
        guard kill(victimPid, SIGKILL) == 0 else { throw HarnessError("cannot kill pid \(victimPid): errno \(errno)") }
        try await waitUntil("every client saw its connection drop", seconds: 20) {
            ledger.snapshot.allSatisfy { $0.clientId.isEmpty || $0.droppedAt != nil }
        }
        let droppedAt = MonotonicClock.nanos()
        for k in 0..<gapSystemMessages {
            try await call(http, systemId, "send_to_system", #"{"msg":"gap","data":"s\#(k)"}"#)
        }
        for g in 0..<groups {
            try await call(http, systemId, "send_to_group", #"{"groupName":"g\#(g)","msg":"gap","data":"g"}"#)
        }
        // Sends to an old ID are taken while the dead node's lease lives (then 4040: nothing sent).
        let unicastTaken = Shared([Bool](repeating: false, count: clients))
        try await forEach(0..<clients) { index in
            guard !ids[index].isEmpty else { return }
            let answer = try await http.send(
                PublishRequest(
                    path: "/api/send_to_client", headers: [("SystemId", systemId)],
                    body: { _ in #"{"clientId":"\#(ids[index])","msg":"gap","data":"u"}"# }))
            if answer.status == 200 { unicastTaken.withLock { $0[index] = true } }
        }
        let gapSentAt = MonotonicClock.nanos()
        let taken = unicastTaken.value

        // 3. Every client resumes on a surviving node.
        let reconnectAt = MonotonicClock.nanos()
        let before = ledger.snapshot
        let resumed = await connectAll(ledger, group: group, errors: &errors) { index in
            let client = before[index]
            guard !client.clientId.isEmpty, let token = client.token, let pos = client.pos else { return nil }
            return (resumeAt[index % resumeAt.count], "/ws?systemId=\(systemId)&resume=\(token)&since=\(pos)", true)
        }
        channels.withLock {
            for (index, channel) in resumed {
                $0[index]?.close(promise: nil)
                $0[index] = channel
            }
        }
        _ = try? await waitUntil("every resumed client has its recovered frames", seconds: timeoutSeconds) {
            ledger.snapshot.allSatisfy { $0.clientId.isEmpty || $0.recoveredAt != nil || $0.resumed == false || $0.closeCode != nil }
        }
        let done = ledger.snapshot

        // 4. Figures.
        var result = ReconnectResult(clients: clients, ready: ready, groups: groups, gapSystemMessages: gapSystemMessages)
        result.gapUnicastTaken = taken.filter { $0 }.count
        result.killToDroppedMs = Double(droppedAt - killedAt) / 1e6
        result.gapSendMs = Double(gapSentAt - droppedAt) / 1e6
        var welcomeMs: [Double] = []
        var recoveredMs: [Double] = []
        var sinceKill: [Double] = []
        var lastRecovered: UInt64 = reconnectAt
        for (index, client) in done.enumerated() where !client.clientId.isEmpty && before[index].token != nil {
            switch client.resumed {
            case true?:
                result.resumed += 1
                let expected = gapSystemMessages + 1 + (taken[index] ? 1 : 0)
                if client.expected != expected || (client.recoveredAt != nil && client.recovered != expected) {
                    result.mismatched += 1
                    if result.errors.count < 5 {
                        result.errors.append("client \(index): expected \(expected), welcome said \(client.expected), got \(client.recovered)")
                    }
                }
                result.recoveredFrames += client.recovered
                if let welcomed = client.welcomedAt { welcomeMs.append(Double(welcomed - reconnectAt) / 1e6) }
                if let recovered = client.recoveredAt {
                    recoveredMs.append(Double(recovered - reconnectAt) / 1e6)
                    sinceKill.append(Double(recovered - killedAt) / 1e6)
                    lastRecovered = max(lastRecovered, recovered)
                } else {
                    result.incomplete += 1
                }
            case false?:
                result.refused += 1
                result.refusedReasons[client.reason ?? "?", default: 0] += 1
            case nil:
                result.failed += 1
                if let code = client.closeCode { result.refusedReasons["closed \(code)", default: 0] += 1 }
            }
        }
        result.resumeMs = ReconnectResult.Spread(welcomeMs)
        result.recoveredMs = ReconnectResult.Spread(recoveredMs)
        result.sinceKillMs = ReconnectResult.Spread(sinceKill)
        // 99% of the clients that held a position, from the kill.
        let sorted = sinceKill.sorted()
        let needed = Int((Double(ready) * 0.99).rounded(.up))
        result.secondsTo99PercentResumed = needed > 0 && sorted.count >= needed ? sorted[needed - 1] / 1000 : nil
        let span = Double(lastRecovered - reconnectAt) / 1e9
        result.reconnectSpanSeconds = span
        result.recoveredFramesPerSecond = span > 0 ? Double(result.recoveredFrames) / span : 0
        result.errors += errors.prefix(5)
        return result
    }

    private func register(_ systemId: String, _ http: HTTPClientPool) async throws {
        var headers: [(String, String)] = []
        if let adminToken { headers.append(("Authorization", "Bearer \(adminToken)")) }
        let answer = try await http.send(
            PublishRequest(path: "/api/register", headers: headers, body: { _ in #"{"systemId":"\#(systemId)"}"# }))
        guard answer.status == 200 else { throw HarnessError("register: HTTP \(answer.status) \(answer.body.prefix(300))") }
    }

    private func call(_ http: HTTPClientPool, _ systemId: String, _ route: String, _ body: String) async throws {
        let answer = try await http.send(PublishRequest(path: "/api/\(route)", headers: [("SystemId", systemId)], body: { _ in body }))
        guard answer.status == 200 else { throw HarnessError("\(route): HTTP \(answer.status) \(answer.body.prefix(300))") }
    }

    private func forEach(_ range: Range<Int>, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        let next = Shared(range.lowerBound)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for _ in 0..<64 {
                tasks.addTask {
                    while true {
                        let k = next.withLock { n in
                            defer { n += 1 }
                            return n
                        }
                        guard k < range.upperBound else { return }
                        try await body(k)
                    }
                }
            }
            try await tasks.waitForAll()
        }
    }

    /// Opens a connection for each client `plan` names (endpoint, path, whether a resume),
    /// `concurrency` at a time; answers the channels that got their welcome.
    private func connectAll(
        _ ledger: ResumeLedger, group: MultiThreadedEventLoopGroup, errors: inout [String],
        plan: @escaping @Sendable (Int) -> (Endpoint, String, Bool)?
    ) async -> [(Int, any Channel)] {
        let next = Shared(0)
        let outcome = Shared((channels: [(Int, any Channel)](), errors: [String]()))
        let count = clients
        let timeout = timeoutSeconds
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<max(1, concurrency) {
                tasks.addTask {
                    while true {
                        let index = next.withLock { n in
                            defer { n += 1 }
                            return n
                        }
                        guard index < count else { return }
                        guard let (endpoint, path, resuming) = plan(index) else { continue }
                        do {
                            let channel = try await Self.open(
                                index: index, endpoint: endpoint, path: path, resuming: resuming, ledger: ledger,
                                loop: group.next(), timeoutSeconds: timeout)
                            outcome.withLock { $0.channels.append((index, channel)) }
                        } catch {
                            outcome.withLock { if $0.errors.count < 5 { $0.errors.append("client \(index): \(error)") } }
                        }
                    }
                }
            }
        }
        let result = outcome.value
        errors += result.errors
        return result.channels
    }

    /// Opens one WebSocket and waits for its welcome (the lifecycle scenario opens its clients so too).
    static func open(
        index: Int, endpoint: Endpoint, path: String, resuming: Bool, ledger: ResumeLedger, loop: any EventLoop,
        timeoutSeconds: Double
    ) async throws -> any Channel {
        let welcomed = loop.makePromise(of: Void.self)
        let request = WebSocketClientHandler.upgradeRequest(host: endpoint.host, port: endpoint.port, path: path)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(Int64(timeoutSeconds)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ResumingClientHandler(request: request, index: index, resuming: resuming, ledger: ledger, welcomed: welcomed))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            welcomed.fail(error)
            throw error
        }
        let timeout = loop.scheduleTask(in: .milliseconds(Int64(timeoutSeconds * 1000))) { channel.close(promise: nil) }
        defer { timeout.cancel() }
        do {
            try await welcomed.futureResult.get()
            return channel
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }
}

struct ReconnectResult: Codable, Sendable {
    /// Percentiles of a set of durations (ms), by rank.
    struct Spread: Codable, Sendable {
        var count = 0
        var p50 = 0.0
        var p90 = 0.0
        var p99 = 0.0
        var max = 0.0

        init() {}

        init(_ values: [Double]) {
            let sorted = values.sorted()
            func at(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
            count = sorted.count
            p50 = at(0.5)
            p90 = at(0.9)
            p99 = at(0.99)
            max = sorted.last ?? 0
        }
    }

    var clients: Int
    /// Clients that held a token and a position when the node was killed.
    var ready: Int
    var groups: Int
    var gapSystemMessages: Int
    var gapUnicastTaken = 0
    var killToDroppedMs = 0.0
    var gapSendMs = 0.0
    var resumed = 0
    var refused = 0
    var refusedReasons: [String: Int] = [:]
    var failed = 0
    /// Resumed, but the recovered frames did not all arrive in time.
    var incomplete = 0
    /// Resumed with another count of recovered frames than was sent to the client.
    var mismatched = 0
    var recoveredFrames = 0
    /// From its reconnect to its welcome, and to its last recovered frame (ms).
    var resumeMs = Spread()
    var recoveredMs = Spread()
    /// From the kill to the last recovered frame, per client (ms).
    var sinceKillMs = Spread()
    var secondsTo99PercentResumed: Double?
    var reconnectSpanSeconds = 0.0
    var recoveredFramesPerSecond = 0.0
    var errors: [String] = []
}
