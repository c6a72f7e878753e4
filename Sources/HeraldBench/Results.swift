/// What `herald-bench run` writes for one scenario against one target.
struct ScenarioRun: Codable, Sendable {
    var scenario: String
    var target: String
    var kind: String
    var settings: [String: String]
    var connections: ConnectionsResult?
    var fanout: FanoutResult?
    var unicast: UnicastResult?
    var reconnect: ReconnectResult?
    var lifecycle: LifecycleResult?
    /// Anything that kept the harness from measuring (not a server error).
    var harnessErrors: [String] = []
}

struct ConnectionsResult: Codable, Sendable {
    var clients: Int
    var connected: Int
    var failed: Int
    var connectSeconds: Double
    var connectRate: Double
    var serverRSSBeforeBytes: UInt64
    var serverRSSAfterBytes: UInt64
    var rssPerConnectionBytes: Double
    /// The same from PSS: shared pages counted once over the server's processes.
    var pssPerConnectionBytes: Double
    var loadgenRSSBytes: UInt64
    /// Clients the server closed while they were held open.
    var serverCloses: [String: Int]
    var connectLatency: LatencySummary
    var cdf: [[Double]]
    var cpu: CPUFigures
    var bottleneck: String
    var errors: [String]
}

struct FanoutResult: Codable, Sendable {
    var members: Int
    var connected: Int
    var joined: Int
    var joinSeconds: Double
    /// Frames that were neither bench messages nor pongs (Herald: presence) while the group filled.
    var presenceFrames: UInt64
    var presenceSettleSeconds: Double
    var membersOpenAtStart: Int
    var warmup: WarmupResult
    var steps: [FanoutStep]
    var peakDeliveriesPerSecond: Double
    var stopReason: String
    var errors: [String]
}

struct FanoutStep: Codable, Sendable {
    var rate: Double
    var seconds: Double
    var members: Int
    var published: Int
    var publishErrors: Int
    var expectedDeliveries: UInt64
    var received: UInt64
    var lost: UInt64
    var duplicates: UInt64
    /// Deliveries of messages whose publish failed (e.g. answered after the timeout).
    var deliveredDespiteError: UInt64
    var outOfOrder: UInt64
    var offeredDeliveriesPerSecond: Double
    var deliveriesPerSecond: Double
    var sendRate: Double
    var latency: LatencySummary
    var cdf: [[Double]]
    var publishAck: LatencySummary
    var publisherLag: LatencySummary
    var serverCloses: [String: Int]
    var cpu: CPUFigures
    var bottleneck: String
    var keptUp: Bool
    var verdict: String
    var errors: [String]
}

/// What a fan-out step and a unicast step both measure.
protocol MeasuredStep {
    var latency: LatencySummary { get }
    var publishAck: LatencySummary { get }
    var lost: UInt64 { get }
    var publishErrors: Int { get }
    var cpu: CPUFigures { get }
    var bottleneck: String { get }
}

extension FanoutStep: MeasuredStep {}
extension UnicastStep: MeasuredStep {}

struct UnicastStep: Codable, Sendable {
    var rate: Double
    var seconds: Double
    var published: Int
    var publishErrors: Int
    var received: UInt64
    var lost: UInt64
    var duplicates: UInt64
    var deliveredDespiteError: UInt64
    var outOfOrder: UInt64
    var sendRate: Double
    var latency: LatencySummary
    var cdf: [[Double]]
    var publishAck: LatencySummary
    var publisherLag: LatencySummary
    var serverCloses: [String: Int]
    var cpu: CPUFigures
    var bottleneck: String
    var passed: Bool
    var verdict: String
    var errors: [String]
}

struct UnicastResult: Codable, Sendable {
    var clients: Int
    var connected: Int
    var connectErrors: [String]
    var warmup: WarmupResult
    var steps: [UnicastStep]
    /// The highest rate whose step passed (p99 within the limit, no errors, no loss, rate kept).
    var highestSustainedRate: Double
    var stopReason: String
}

/// The unmeasured warm-up before a scenario's publishing: still accounted for.
struct WarmupResult: Codable, Sendable {
    var seconds: Double
    var rate: Double
    var published: Int
    var publishErrors: Int
    var received: UInt64
    var lost: UInt64
}

extension WarmupResult {
    var problems: [String] {
        var problems: [String] = []
        if publishErrors > 0 { problems.append("warm-up: \(publishErrors) publish errors") }
        if lost > 0 { problems.append("warm-up: \(lost) messages lost") }
        return problems
    }
}
