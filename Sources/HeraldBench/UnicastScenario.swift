/// `clients` clients, each with its own address; the publisher sends to random clients at
/// rising rates until a step misses: p99 over the limit, an error, a lost message, or a rate
/// the publisher could not keep.
struct UnicastScenario: Sendable {
    var clients: Int
    var rates: [Double]
    var secondsPerStep: Double
    var warmupSeconds: Double
    var p99LimitMillis = 50.0

    func run(_ env: ScenarioEnvironment) async throws -> UnicastResult {
        let http = env.httpPool()
        try await env.target.prepare(http)
        var (connected, connectErrors) = try await env.connectClients(clients, path: env.target.unicastPath, noun: "clients")
        // Publish only to clients that are there (Nchan's channels exist for every index).
        let reachable: [Int] =
            env.target.expectWelcome
            ? connected.clientIds.indices.filter { !connected.clientIds[$0].isEmpty } : Array(0..<connected.connected)
        let target = env.target
        let ids = connected.clientIds
        let warmup = try await env.warmup(
            http, rate: min(rates.first ?? 100, 200), seconds: reachable.isEmpty ? 0 : warmupSeconds, recipients: 1
        ) {
            phase, k in
            target.publish(
                toClient: reachable[Int.random(in: 0..<reachable.count)], clientIds: ids,
                data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        connectErrors += warmup.problems
        var steps: [UnicastStep] = []
        var highest = 0.0
        var stopReason = "every step passed"
        if reachable.isEmpty {
            stopReason = "no client connected"
        }
        for (i, rate) in rates.enumerated() where !reachable.isEmpty {
            let step = try await runStep(
                env, http: http, phase: UInt32(100 + i), rate: rate, clientIds: connected.clientIds,
                reachable: reachable)
            steps.append(step)
            if step.passed {
                highest = rate
            } else {
                stopReason = "at \(Int(rate))/s: \(step.verdict)"
                break
            }
        }
        try await env.loadgen.closeAll()
        _ = try? await http.shutdown().get()
        return UnicastResult(
            clients: clients, connected: connected.connected, connectErrors: connectErrors, warmup: warmup,
            steps: steps,
            highestSustainedRate: highest, stopReason: stopReason)
    }

    private func runStep(
        _ env: ScenarioEnvironment, http: HTTPClientPool, phase: UInt32, rate: Double, clientIds: [String],
        reachable: [Int]
    ) async throws -> UnicastStep {
        let before = try await env.loadgen.stats()
        let meter = env.meter
        let cpuStart = try await meter.sample()
        let target = env.target
        let report = await Pacer(pool: http, accepts: env.target.accepts).run(rate: rate, seconds: secondsPerStep) {
            k in
            let index = reachable[Int.random(in: 0..<reachable.count)]
            return target.publish(
                toClient: index, clientIds: clientIds,
                data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        let expected = UInt64(report.ok)
        _ = try await env.drain(phase: phase, expected: report.errors > 0 ? .max : expected, maxSeconds: 30)
        let cpuEnd = try await meter.sample()
        let received = try await env.loadgen.phase(phase)
        let after = try await env.loadgen.stats()

        var errors = report.errorSamples
        let accounting = received.account(accepted: report.accepted, recipients: 1)
        let lost = accounting.lost
        if lost > 0 { errors.append("\(lost) messages lost") }
        if accounting.deliveredDespiteError > 0 {
            errors.append("\(accounting.deliveredDespiteError) deliveries of messages whose publish failed")
        }
        if accounting.unexpected > 0 {
            errors.append("harness: \(accounting.unexpected) deliveries of messages never sent")
        }
        var closes = after.serverCloses
        for (code, count) in before.serverCloses { closes[code, default: 0] -= count }
        closes = closes.filter { $0.value > 0 }
        if !closes.isEmpty { errors.append("the server closed clients: \(closes)") }
        let latency = received.latency.summary
        let verdict = UnicastStep.verdict(
            errors: report.errors, lost: lost, closed: !closes.isEmpty, p99: latency.p99, limit: p99LimitMillis,
            sendRate: report.sendRate, rate: rate)
        let cpu = meter.figures(from: cpuStart, to: cpuEnd)
        return UnicastStep(
            rate: rate, seconds: secondsPerStep, published: report.ok, publishErrors: report.errors,
            received: received.received,
            lost: lost, duplicates: accounting.duplicates, deliveredDespiteError: accounting.deliveredDespiteError,
            outOfOrder: received.outOfOrder, sendRate: report.sendRate, latency: latency, cdf: received.latency.cdf,
            publishAck: report.ack.summary, publisherLag: report.lag.summary, serverCloses: closes, cpu: cpu,
            bottleneck: cpu.bottleneck(publisher: report, rate: rate, connections: env.publisherConnections),
            passed: verdict == "ok",
            verdict: verdict, errors: errors)
    }
}

extension UnicastStep {
    /// Why a step of a unicast ramp failed, in the order that matters, or "ok".
    static func verdict(
        errors: Int, lost: UInt64, closed: Bool, p99: Double, limit: Double, sendRate: Double, rate: Double,
        noun: String = "publish", sender: String = "publisher"
    ) -> String {
        if errors > 0 { return "\(errors) \(noun) errors" }
        if lost > 0 { return "\(lost) messages lost" }
        if closed { return "clients closed by the server" }
        if p99 > limit { return String(format: "p99 %.1f ms over %.0f ms", p99, limit) }
        if sendRate < 0.95 * rate { return String(format: "%@ reached only %.0f/s", sender, sendRate) }
        return "ok"
    }
}
