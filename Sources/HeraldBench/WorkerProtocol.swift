/// The coordinator and its worker processes talk in JSON lines over the workers' stdin and
/// stdout: one request, one reply.

struct Endpoint: Codable, Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int

    /// "host:port".
    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        self.host = String(text[..<colon])
        self.port = port
    }

    var description: String { "\(host):\(port)" }
}

/// Open `count` WebSocket clients, numbered from `firstIndex`; client `i` connects to
/// `endpoints[i % endpoints.count]` at `pathTemplate` with `{i}` replaced by `i`.
struct ConnectSpec: Codable, Sendable {
    var endpoints: [Endpoint]
    var pathTemplate: String
    var firstIndex: Int
    var count: Int
    /// Local address the client sockets bind to (several 127.0.0.x spread the ephemeral ports).
    var sourceAddress: String?
    /// Connects in flight at once.
    var concurrency: Int
    /// Herald sends a first frame with the client ID; the client counts as connected once it has it.
    var expectWelcome: Bool
    /// Each client sends a `ping` text frame this often (Herald closes clients that send nothing); 0: never.
    var keepaliveSeconds: Double
    var timeoutSeconds: Double
}

struct ConnectReport: Codable, Sendable {
    var connected: Int
    var failed: Int
    var startNanos: UInt64
    var lastEstablishedNanos: UInt64
    /// Client IDs by index from `firstIndex` ("" where the connect failed); empty without a welcome frame.
    var clientIds: [String]
    var errors: [String]
    /// Connect-to-established latency of each client, sparse µs histogram.
    var latencyMicros: [[UInt64]]
}

struct PoolStats: Codable, Sendable {
    var open: Int
    /// Closes the server started, by close code ("none" when the TCP connection just ended).
    var serverCloses: [String: Int]
    var stampedFrames: UInt64
    var otherFrames: UInt64
}

struct PhaseReport: Codable, Sendable {
    var phase: UInt32
    var received: UInt64
    var outOfOrder: UInt64
    var firstReceiveNanos: UInt64
    var lastReceiveNanos: UInt64
    var latencyMicros: [[UInt64]]
    /// Deliveries of each message of the phase, by message number - 1.
    var perMessage: [UInt32]
}

enum WorkerRequest: Codable, Sendable {
    case connect(ConnectSpec)
    case stats
    /// Received counts of every phase so far (cheap, for draining).
    case counts
    case phase(UInt32)
    case closeAll
    case exit
}

struct WorkerReply: Codable, Sendable {
    var error: String?
    var connect: ConnectReport?
    var stats: PoolStats?
    var counts: [String: UInt64]?
    var phase: PhaseReport?
    /// This worker's CPU time so far (user + system) and its RSS, with every reply.
    var cpuNanos: UInt64
    var rssBytes: UInt64
}
