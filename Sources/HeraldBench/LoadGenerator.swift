/// The worker processes of one run, each binding its client sockets to its own 127.x source
/// address, seen as one load generator: clients spread evenly, reports merged.
struct LoadGenerator: Sendable {
    let workers: [WorkerProcess]
    let sourceAddresses: [String]

    static func start(workers count: Int, sourceAddresses: [String]) throws -> LoadGenerator {
        LoadGenerator(workers: try (0..<count).map { try WorkerProcess(index: $0) }, sourceAddresses: sourceAddresses)
    }

    struct Connected: Sendable {
        var connected = 0
        var failed = 0
        var seconds = 0.0
        /// Client IDs by client index ("" where it failed); empty when the target sends none.
        var clientIds: [String] = []
        var errors: [String] = []
        var latency = LatencyHistogram()

        var rate: Double { seconds > 0 ? Double(connected) / seconds : 0 }
    }

    /// Opens `total` clients, numbered 0..<total, spread over the workers.
    func connect(
        total: Int, endpoints: [Endpoint], pathTemplate: String, expectWelcome: Bool, keepaliveSeconds: Double,
        concurrency: Int
    ) async throws -> Connected {
        let shares = Self.split(total, into: workers.count)
        let reports = try await withThrowingTaskGroup(of: (Int, ConnectReport).self) { tasks in
            var first = 0
            for (w, share) in shares.enumerated() {
                let spec = ConnectSpec(
                    endpoints: endpoints, pathTemplate: pathTemplate, firstIndex: first, count: share,
                    sourceAddress: sourceAddresses.isEmpty ? nil : sourceAddresses[w % sourceAddresses.count],
                    concurrency: max(1, concurrency / workers.count), expectWelcome: expectWelcome,
                    keepaliveSeconds: keepaliveSeconds, timeoutSeconds: 15)
                first += share
                let worker = workers[w]
                tasks.addTask { (w, try await worker.request(.connect(spec)).connect!) }
            }
            var all: [(Int, ConnectReport)] = []
            for try await report in tasks { all.append(report) }
            return all.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var merged = Connected()
        let start = reports.map(\.startNanos).min() ?? 0
        let end = reports.map(\.lastEstablishedNanos).max() ?? 0
        merged.seconds = end > start ? Double(end - start) / 1e9 : 0
        for report in reports {
            merged.connected += report.connected
            merged.failed += report.failed
            merged.clientIds += report.clientIds
            merged.errors += report.errors
            merged.latency.add(sparse: report.latencyMicros)
        }
        return merged
    }

    static func split(_ total: Int, into parts: Int) -> [Int] {
        (0..<parts).map { total / parts + ($0 < total % parts ? 1 : 0) }
    }

    func stats() async throws -> PoolStats {
        var merged = PoolStats(open: 0, serverCloses: [:], stampedFrames: 0, otherFrames: 0)
        for stats in try await all(.stats).map({ $0.stats! }) {
            merged.open += stats.open
            merged.stampedFrames += stats.stampedFrames
            merged.otherFrames += stats.otherFrames
            merged.serverCloses.merge(stats.serverCloses, uniquingKeysWith: +)
        }
        return merged
    }

    /// Stamped messages received so far in `phase`, over all workers.
    func received(phase: UInt32) async throws -> UInt64 {
        try await all(.counts).reduce(0) { $0 + ($1.counts?[String(phase)] ?? 0) }
    }

    struct Phase: Sendable {
        var received: UInt64 = 0
        var outOfOrder: UInt64 = 0
        var firstReceiveNanos: UInt64 = 0
        var lastReceiveNanos: UInt64 = 0
        var latency = LatencyHistogram()
        var perMessage: [UInt32] = []

        /// Checks the deliveries against what was sent: message k was accepted (`accepted[k]`)
        /// and should reach `recipients` clients.
        func account(accepted: [Bool], recipients: UInt64) -> Accounting {
            var accounting = Accounting()
            for (k, ok) in accepted.enumerated() {
                let got = k < perMessage.count ? UInt64(perMessage[k]) : 0
                if ok {
                    if got < recipients { accounting.lost += recipients - got }
                    if got > recipients { accounting.duplicates += got - recipients }
                } else {
                    accounting.deliveredDespiteError += got
                }
            }
            if perMessage.count > accepted.count {
                accounting.unexpected = perMessage[accepted.count...].reduce(0) { $0 + UInt64($1) }
            }
            return accounting
        }
    }

    struct Accounting: Sendable {
        var lost: UInt64 = 0
        var duplicates: UInt64 = 0
        /// Deliveries of messages whose publish failed (timed out, say): not lost, not expected.
        var deliveredDespiteError: UInt64 = 0
        /// Deliveries of message numbers never sent: a harness fault.
        var unexpected: UInt64 = 0
    }

    func phase(_ id: UInt32) async throws -> Phase {
        var merged = Phase()
        for report in try await all(.phase(id)).map({ $0.phase! }) {
            merged.received += report.received
            merged.outOfOrder += report.outOfOrder
            if report.firstReceiveNanos > 0 {
                merged.firstReceiveNanos =
                    merged.firstReceiveNanos == 0
                    ? report.firstReceiveNanos : min(merged.firstReceiveNanos, report.firstReceiveNanos)
            }
            merged.lastReceiveNanos = max(merged.lastReceiveNanos, report.lastReceiveNanos)
            merged.latency.add(sparse: report.latencyMicros)
            if report.perMessage.count > merged.perMessage.count {
                merged.perMessage += [UInt32](repeating: 0, count: report.perMessage.count - merged.perMessage.count)
            }
            for (k, n) in report.perMessage.enumerated() where n > 0 { merged.perMessage[k] += n }
        }
        return merged
    }

    /// CPU time used by all workers so far (asks each for a fresh figure).
    func cpuNanos() async throws -> UInt64 {
        try await all(.stats).reduce(0) { $0 + $1.cpuNanos }
    }

    func rssBytes() async throws -> UInt64 {
        try await all(.stats).reduce(0) { $0 + $1.rssBytes }
    }

    func closeAll() async throws {
        _ = try await all(.closeAll)
    }

    func stop() async {
        for worker in workers { await worker.stop() }
    }

    private func all(_ request: WorkerRequest) async throws -> [WorkerReply] {
        try await withThrowingTaskGroup(of: (Int, WorkerReply).self) { tasks in
            for (w, worker) in workers.enumerated() {
                tasks.addTask { (w, try await worker.request(request)) }
            }
            var replies: [(Int, WorkerReply)] = []
            for try await reply in tasks { replies.append(reply) }
            return replies.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }
}
