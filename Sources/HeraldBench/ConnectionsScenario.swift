/// N idle WebSocket clients: how fast they connect, and what each costs the server in RSS.
struct ConnectionsScenario: Sendable {
    var clients: Int
    /// How long the clients stay open before the RSS is read (the server settles).
    var holdSeconds: Double

    func run(_ env: ScenarioEnvironment) async throws -> ConnectionsResult {
        let http = env.httpPool(connections: 4)
        try await env.target.prepare(http)
        try await ScenarioEnvironment.sleep(1)
        let rssBefore = env.serverRSS
        let pssBefore = env.serverPSS
        let meter = env.meter
        let before = try await meter.sample()
        var (connected, errors) = try await env.connectClients(clients, path: env.target.unicastPath, noun: "clients")
        let after = try await meter.sample()
        try await ScenarioEnvironment.sleep(holdSeconds)
        let rssAfter = env.serverRSS
        let pssAfter = env.serverPSS
        let stats = try await env.loadgen.stats()
        let loadgenRSS = try await env.loadgen.rssBytes()
        try await env.loadgen.closeAll()
        _ = try? await http.shutdown().get()

        let closes = stats.serverCloses.values.reduce(0, +)
        if closes > 0 { errors.append("the server closed \(closes) idle clients: \(stats.serverCloses)") }
        let cpu = meter.figures(from: before, to: after)
        return ConnectionsResult(
            clients: clients, connected: connected.connected, failed: connected.failed,
            connectSeconds: connected.seconds,
            connectRate: connected.rate, serverRSSBeforeBytes: rssBefore, serverRSSAfterBytes: rssAfter,
            rssPerConnectionBytes: connected.connected > 0
                ? (Double(rssAfter) - Double(rssBefore)) / Double(connected.connected) : 0,
            pssPerConnectionBytes: connected.connected > 0
                ? (Double(pssAfter) - Double(pssBefore)) / Double(connected.connected) : 0,
            loadgenRSSBytes: loadgenRSS, serverCloses: stats.serverCloses, connectLatency: connected.latency.summary,
            cdf: connected.latency.cdf, cpu: cpu, bottleneck: cpu.bottleneck(), errors: errors)
    }
}
