/// One group of `members` clients (Nchan: one channel) and a publisher sending to the group
/// at fixed rates, one step each, rising: deliveries per second and publish-to-receive
/// latency at each rate. The ramp ends at the first step the server cannot keep up with
/// (deliveries under 90% of the offered rate) or that loses messages or fails publishes.
struct FanoutScenario: Sendable {
    var members: Int
    var rates: [Double]
    var secondsPerStep: Double
    var warmupSeconds: Double
    var joinConcurrency = 16
    /// How long to wait for presence frames (Herald) to stop arriving once the group is full.
    var presenceTimeoutSeconds = 300.0

    func run(_ env: ScenarioEnvironment) async throws -> FanoutResult {
        let http = env.httpPool()
        try await env.target.prepare(http)
        var (connected, errors) = try await env.connectClients(members, path: env.target.groupPath, noun: "members")

        // Herald: bind every member; each bind announces the newcomer to every member (presence).
        let joinStart = ContinuousClock.now
        // Under the presence storm a bind can take long to answer: its own pool, a long timeout.
        let joinHTTP = HTTPClientPool(
            eventLoop: env.publisherLoop, endpoint: env.publishEndpoint, maxConnections: joinConcurrency,
            requestTimeout: .seconds(120))
        let join = try await env.target.join(
            clientIds: connected.clientIds, http: joinHTTP, concurrency: joinConcurrency)
        _ = try? await joinHTTP.shutdown().get()
        let joinSeconds = (ContinuousClock.now - joinStart).seconds
        errors += join.errors
        let settleStart = ContinuousClock.now
        let presence = try await settlePresence(env, expected: env.target.presenceFrames(joined: join.joined))
        let settleSeconds = (ContinuousClock.now - settleStart).seconds

        let before = try await env.loadgen.stats()
        let membersOpen = before.open
        if membersOpen < connected.connected {
            errors.append(
                "\(connected.connected - membersOpen) members were closed before publishing: \(before.serverCloses)")
        }
        let target = env.target
        let warmup = try await env.warmup(
            http, rate: min(rates.first ?? 5, 5), seconds: membersOpen > 0 ? warmupSeconds : 0,
            recipients: UInt64(membersOpen)
        ) { phase, k in
            target.publishToGroup(data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        errors += warmup.problems
        var steps: [FanoutStep] = []
        var stopReason = membersOpen > 0 ? "every step kept up" : "no member left to publish to"
        for (i, rate) in rates.enumerated() where membersOpen > 0 {
            let step = try await runStep(env, http: http, phase: UInt32(1 + i), rate: rate)
            steps.append(step)
            if !step.keptUp {
                stopReason = "at \(Int(rate)) msg/s: \(step.verdict)"
                break
            }
        }
        try await env.loadgen.closeAll()
        _ = try? await http.shutdown().get()
        return FanoutResult(
            members: members, connected: connected.connected, joined: join.joined, joinSeconds: joinSeconds,
            presenceFrames: presence, presenceSettleSeconds: settleSeconds, membersOpenAtStart: membersOpen,
            warmup: warmup,
            steps: steps, peakDeliveriesPerSecond: steps.map(\.deliveriesPerSecond).max() ?? 0, stopReason: stopReason,
            errors: errors)
    }

    private func runStep(_ env: ScenarioEnvironment, http: HTTPClientPool, phase: UInt32, rate: Double) async throws
        -> FanoutStep
    {
        let before = try await env.loadgen.stats()
        let members = before.open
        let meter = env.meter
        let cpuStart = try await meter.sample()
        let target = env.target
        let report = await Pacer(pool: http, accepts: env.target.accepts).run(rate: rate, seconds: secondsPerStep) {
            k in
            target.publishToGroup(data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        let expected = UInt64(report.ok) * UInt64(members)
        _ = try await env.drain(phase: phase, expected: report.errors > 0 ? .max : expected)
        let cpuEnd = try await meter.sample()
        let received = try await env.loadgen.phase(phase)
        let after = try await env.loadgen.stats()

        var errors = report.errorSamples
        let accounting = received.account(accepted: report.accepted, recipients: UInt64(members))
        if accounting.lost > 0 { errors.append("\(accounting.lost) deliveries lost") }
        if accounting.duplicates > 0 { errors.append("\(accounting.duplicates) duplicate deliveries") }
        if accounting.deliveredDespiteError > 0 {
            errors.append("\(accounting.deliveredDespiteError) deliveries of messages whose publish failed")
        }
        if accounting.unexpected > 0 {
            errors.append("harness: \(accounting.unexpected) deliveries of messages never sent")
        }
        var closes = after.serverCloses
        for (code, count) in before.serverCloses { closes[code, default: 0] -= count }
        closes = closes.filter { $0.value > 0 }
        if !closes.isEmpty { errors.append("the server closed members while publishing: \(closes)") }
        // From the first send to the last delivery: a server that falls behind stretches it.
        let window =
            received.lastReceiveNanos > report.firstSentNanos
            ? Double(received.lastReceiveNanos - report.firstSentNanos) / 1e9 : 0
        let deliveriesPerSecond = window > 0 ? Double(received.received) / window : 0
        let offered = rate * Double(members)
        let verdict: String
        if report.errors > 0 {
            verdict = "\(report.errors) publish errors"
        } else if accounting.lost > 0 {
            verdict = "\(accounting.lost) deliveries lost"
        } else if !closes.isEmpty {
            verdict = "members closed by the server"
        } else if deliveriesPerSecond < 0.9 * offered {
            verdict = String(format: "delivered %.0f/s of %.0f/s offered", deliveriesPerSecond, offered)
        } else {
            verdict = "ok"
        }
        let cpu = meter.figures(from: cpuStart, to: cpuEnd)
        return FanoutStep(
            rate: rate, seconds: secondsPerStep, members: members, published: report.ok, publishErrors: report.errors,
            expectedDeliveries: expected, received: received.received, lost: accounting.lost,
            duplicates: accounting.duplicates,
            deliveredDespiteError: accounting.deliveredDespiteError, outOfOrder: received.outOfOrder,
            offeredDeliveriesPerSecond: offered, deliveriesPerSecond: deliveriesPerSecond, sendRate: report.sendRate,
            latency: received.latency.summary, cdf: received.latency.cdf, publishAck: report.ack.summary,
            publisherLag: report.lag.summary, serverCloses: closes, cpu: cpu,
            bottleneck: cpu.bottleneck(publisher: report, rate: rate, connections: env.publisherConnections),
            keptUp: verdict == "ok", verdict: verdict, errors: errors)
    }

    /// Waits for the presence frames to stop: at least `expected` of them (binds in flight
    /// together can each reach members bound after them, so up to N² in all), then nothing
    /// new for a second; or nothing new for two seconds whatever the count. Returns how many came.
    private func settlePresence(_ env: ScenarioEnvironment, expected: UInt64) async throws -> UInt64 {
        guard expected > 0 else { return try await env.loadgen.stats().otherFrames }
        let deadline = ContinuousClock.now + .milliseconds(Int64(presenceTimeoutSeconds * 1000))
        var last = try await env.loadgen.stats().otherFrames
        var quietSince = ContinuousClock.now
        while ContinuousClock.now < deadline {
            try await ScenarioEnvironment.sleep(0.25)
            let now = try await env.loadgen.stats().otherFrames
            if now != last {
                last = now
                quietSince = ContinuousClock.now
            } else if ContinuousClock.now - quietSince > .seconds(last >= expected ? 1 : 2) {
                break
            }
        }
        return last
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
