import NIOCore

/// Everything a scenario needs: the target, where its clients connect and where the
/// publisher posts, the processes whose memory and CPU are the server's, and the load generator.
struct ScenarioEnvironment: Sendable {
    var targetName: String
    var target: any PushTarget
    var clientEndpoints: [Endpoint]
    var publishEndpoint: Endpoint
    var server: [WatchedProcess]
    var infra: [WatchedProcess]
    var loadgen: LoadGenerator
    var publisherLoop: any EventLoop
    var publisherConnections: Int
    var connectConcurrency: Int
    var payloadBytes: Int

    var meter: CPUMeter { CPUMeter(server: server, infra: infra, loadgen: loadgen) }

    func httpPool(connections: Int? = nil) -> HTTPClientPool {
        HTTPClientPool(
            eventLoop: publisherLoop, endpoint: publishEndpoint, maxConnections: connections ?? publisherConnections)
    }

    /// Connects `total` clients to `path`, spread over the workers; `errors` leads with how many
    /// failed to connect, naming them `noun` ("clients", "members").
    func connectClients(_ total: Int, path: String, noun: String) async throws -> (
        connected: LoadGenerator.Connected, errors: [String]
    ) {
        let connected = try await loadgen.connect(
            total: total, endpoints: clientEndpoints, pathTemplate: path, expectWelcome: target.expectWelcome,
            keepaliveSeconds: target.keepaliveSeconds, concurrency: connectConcurrency)
        var errors = connected.errors
        if connected.failed > 0 { errors.insert("\(connected.failed) of \(total) \(noun) failed to connect", at: 0) }
        return (connected, errors)
    }

    var serverRSS: UInt64 { server.compactMap { ProcFS.rssBytes(pid: $0.pid) }.reduce(0, +) }
    var serverPSS: UInt64 { server.compactMap { ProcFS.pssBytes(pid: $0.pid) }.reduce(0, +) }

    /// The data of message `seq` in `phase`: its stamp, padded to the payload size.
    func data(phase: UInt32, seq: UInt64) -> @Sendable (UInt64) -> String {
        let size = payloadBytes
        return { sentAt in BenchStamp(phase: phase, seq: seq, sentAt: sentAt).text(size: size) }
    }

    /// Waits until the clients hold `expected` messages of `phase`, or nothing more has come
    /// for `quietSeconds`, or `maxSeconds` have passed. Returns what they hold.
    func drain(phase: UInt32, expected: UInt64, quietSeconds: Double = 3, maxSeconds: Double = 60) async throws
        -> UInt64
    {
        let deadline = ContinuousClock.now + .milliseconds(Int64(maxSeconds * 1000))
        var last: UInt64 = 0
        var lastChange = ContinuousClock.now
        while true {
            let received = try await loadgen.received(phase: phase)
            if received >= expected { return received }
            let now = ContinuousClock.now
            if received != last {
                last = received
                lastChange = now
            } else if now - lastChange > .milliseconds(Int64(quietSeconds * 1000)) || now > deadline {
                return received
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Publishes at a low rate before measuring (connections, Kafka producers and consumers
    /// warm up), then drains: these messages are accounted for but not in the figures.
    func warmup(
        _ http: HTTPClientPool, rate: Double, seconds: Double, recipients: UInt64,
        make: @escaping @Sendable (_ phase: UInt32, _ k: Int) -> PublishRequest
    ) async throws -> WarmupResult {
        guard seconds > 0 else {
            return WarmupResult(seconds: 0, rate: 0, published: 0, publishErrors: 0, received: 0, lost: 0)
        }
        let phase = Self.warmupPhase
        let report = await Pacer(pool: http, accepts: target.accepts).run(rate: rate, seconds: seconds) { k in
            make(phase, k)
        }
        let expected = UInt64(report.ok) * recipients
        let received = try await drain(phase: phase, expected: report.errors > 0 ? .max : expected, maxSeconds: 30)
        let accounting = try await loadgen.phase(phase).account(accepted: report.accepted, recipients: recipients)
        return WarmupResult(
            seconds: seconds, rate: rate, published: report.ok, publishErrors: report.errors, received: received,
            lost: accounting.lost)
    }

    static let warmupPhase: UInt32 = 99

    static func sleep(_ seconds: Double) async throws {
        try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
    }
}
