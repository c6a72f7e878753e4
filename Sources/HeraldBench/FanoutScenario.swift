/// One group of `members` clients (Nchan: one channel), a publisher sending to the group at
/// a fixed rate: deliveries per second and publish-to-receive latency.
struct FanoutScenario: Sendable {
    var members: Int
    var rate: Double
    var seconds: Double
    var warmupSeconds: Double
    var joinConcurrency = 16
    /// How long to wait for presence frames (Herald) to stop arriving once the group is full.
    var presenceTimeoutSeconds = 300.0

    static let phase: UInt32 = 1

    func run(_ env: ScenarioEnvironment) async throws -> FanoutResult {
        let http = env.httpPool()
        try await env.target.prepare(http)
        let connected = try await env.loadgen.connect(
            total: members, endpoints: env.clientEndpoints, pathTemplate: env.target.groupPath,
            expectWelcome: env.target.expectWelcome, keepaliveSeconds: env.target.keepaliveSeconds,
            concurrency: env.connectConcurrency)
        var errors = connected.errors
        if connected.failed > 0 { errors.insert("\(connected.failed) of \(members) members failed to connect", at: 0) }

        // Herald: bind every member; each bind announces the newcomer to every member (presence).
        let joinStart = ContinuousClock.now
        let join = try await env.target.join(clientIds: connected.clientIds, http: http, concurrency: joinConcurrency)
        let joinSeconds = (ContinuousClock.now - joinStart).seconds
        errors += join.errors
        let settleStart = ContinuousClock.now
        let presence = try await settlePresence(env, expected: env.target.presenceFrames(joined: join.joined))
        let settleSeconds = (ContinuousClock.now - settleStart).seconds

        let before = try await env.loadgen.stats()
        let membersOpen = before.open
        if membersOpen < connected.connected {
            errors.append("\(connected.connected - membersOpen) members were closed before publishing: \(before.serverCloses)")
        }
        let target = env.target
        let warmup = try await env.warmup(http, rate: min(rate, 5), seconds: warmupSeconds, recipients: UInt64(membersOpen)) { phase, k in
            target.publishToGroup(data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        errors += warmup.problems
        let meter = env.meter
        let cpuStart = try await meter.sample()
        let phase = Self.phase
        let report = await Pacer(pool: http, accepts: env.target.accepts).run(rate: rate, seconds: seconds) { k in
            target.publishToGroup(data: env.data(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1)))
        }
        let expected = UInt64(report.ok) * UInt64(membersOpen)
        _ = try await env.drain(phase: phase, expected: expected)
        let cpuEnd = try await meter.sample()
        let received = try await env.loadgen.phase(phase)
        let after = try await env.loadgen.stats()
        try await env.loadgen.closeAll()
        _ = try? await http.shutdown().get()

        errors += report.errorSamples
        let lost = expected > received.received ? expected - received.received : 0
        if lost > 0 { errors.append("\(lost) deliveries lost") }
        var closes = after.serverCloses
        for (code, count) in before.serverCloses { closes[code, default: 0] -= count }
        closes = closes.filter { $0.value > 0 }
        if !closes.isEmpty { errors.append("the server closed members while publishing: \(closes)") }
        let window = received.lastReceiveNanos > report.firstSentNanos ? Double(received.lastReceiveNanos - report.firstSentNanos) / 1e9 : 0
        let cpu = meter.figures(from: cpuStart, to: cpuEnd)
        return FanoutResult(
            members: members, connected: connected.connected, joined: join.joined, joinSeconds: joinSeconds,
            presenceFrames: presence, presenceSettleSeconds: settleSeconds, membersOpenAtStart: membersOpen, warmup: warmup, rate: rate,
            seconds: seconds, published: report.ok, publishErrors: report.errors, expectedDeliveries: expected,
            received: received.received, lost: lost, duplicates: received.received > expected ? received.received - expected : 0,
            outOfOrder: received.outOfOrder, offeredDeliveriesPerSecond: rate * Double(membersOpen),
            deliveriesPerSecond: window > 0 ? Double(received.received) / window : 0, sendRate: report.sendRate,
            latency: received.latency.summary, cdf: received.latency.cdf, publishAck: report.ack.summary,
            publisherLag: report.lag.summary, serverCloses: closes, cpu: cpu,
            bottleneck: cpu.bottleneck(publisher: report, rate: rate, connections: env.publisherConnections), errors: errors)
    }

    /// Waits until the members have every presence frame, or none has come for two seconds;
    /// returns how many came.
    private func settlePresence(_ env: ScenarioEnvironment, expected: UInt64) async throws -> UInt64 {
        let deadline = ContinuousClock.now + .milliseconds(Int64(presenceTimeoutSeconds * 1000))
        var last = try await env.loadgen.stats().otherFrames
        var quietSince = ContinuousClock.now
        while ContinuousClock.now < deadline, last < expected {
            try await ScenarioEnvironment.sleep(0.25)
            let now = try await env.loadgen.stats().otherFrames
            if now != last {
                last = now
                quietSince = ContinuousClock.now
            } else if ContinuousClock.now - quietSince > .seconds(2) {
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
