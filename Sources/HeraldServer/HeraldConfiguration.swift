import HeraldCore
import Logging

/// Everything a node needs to start, already validated.
public struct HeraldConfiguration: Sendable {
    public var host = "0.0.0.0"
    public var port = 7800
    /// The address other nodes and client IDs use to reach this node; host:port by default.
    public var advertise: String?
    public var nodeId: String?
    /// Development mode: /api/register needs no admin token and a missing client-ID key is generated.
    public var dev = false
    public var adminToken: String?
    /// Comma-separated base64 keys; the first seals new client IDs, all open old ones.
    public var clientIdKeys: String?
    public var maxBodyBytes = 1 << 20
    public var maxFrameBytes = 64 << 10
    /// Frames waiting for one slow client before it is closed with 1013.
    public var outboundQueueLimit = 256
    /// Bytes waiting for one slow client before it is closed with 1013.
    public var outboundQueueBytes = 8 << 20
    /// Frames a second one client may send on average (bursts of twice that); more closes 1008. 0 is off.
    public var inboundFrameRate: Double = 100
    /// Patterns of the `Origin` a WebSocket upgrade may carry (`*` any, `https://*.example.com`).
    public var allowedOrigins = ["*"]
    /// Patterns of the browser `Origin` an /api or /admin request may carry; none by default.
    public var apiAllowedOrigins: [String] = []
    /// Seconds a client has to send a whole request head (and to be admitted to a WebSocket).
    public var headerTimeout: Double = 10
    /// Seconds a client has to send a request body once its head arrived.
    public var bodyTimeout: Double = 30
    /// Seconds a kept-alive HTTP connection may wait for its next request.
    public var keepAliveTimeout: Double = 60
    /// Open connections (HTTP and WebSocket) this node accepts; more are answered 503 and closed.
    /// The default leaves headroom under a 20,000-file limit for Kafka, etcd and peers.
    public var maxConnections = 16_000
    /// Open connections one client address may hold; 0 (the default) is no limit.
    public var maxConnectionsPerIP = 0
    /// Peers (IP addresses) whose `X-Forwarded-For` names the client, for the per-address limit.
    public var trustedProxies: [String] = []
    public var pingInterval: Double = 25
    public var idleTimeout: Double = 60
    /// API calls a second per system; 0 turns the limit off.
    public var rateLimit = 0
    /// Presence frames (1001 joined, 1002 left) to a group's members; filling a group of N costs N² frames.
    public var groupPresence = true
    public var journalCapacity = 100_000
    public var traceCapacity = 100_000
    /// How old a resume's position may be, in seconds (by the time the fabric took its record).
    public var resumeWindow: Double = 120
    /// The most messages a resume recovers; more answers `resumed: false`.
    public var resumeMaxMessages = 1_000
    /// How long shutdown waits for clients to take their 1001 close.
    public var shutdownGrace: Double = 2
    public var logLevel: Logger.Level = .info

    // Cluster mode: set `kafka` and `etcd`.
    /// Kafka bootstrap servers (host:port, comma-separated); nil runs standalone.
    public var kafka: String?
    /// etcd client URLs, comma-separated.
    public var etcd: String?
    public var leaseTTL = 10
    public var produceTimeout: Double = 5
    public var unicastPartitions = 64
    public var broadcastPartitions = 4
    public var peerTimeout: Double = 2
    public var fetchWaitMillis = 10
    /// librdkafka's idempotent producer: its retries never duplicate a record. Needs a broker
    /// that implements InitProducerId as Kafka does (Tansu 0.6 fences all but the newest producer).
    public var kafkaIdempotence = true
    /// Replicas of Herald's topics when a node creates them, and `min.insync.replicas`.
    public var replicationFactor = 1
    public var minInsyncReplicas = 1
    public var unicastTopic = Topics.unicast
    public var broadcastTopic = Topics.broadcast
    public var eventsTopic = Topics.events
    public var lifecycleTopic = Topics.lifecycle
    /// Webhooks: one attempt's limit, how long a batch is retried, events one system may have waiting.
    public var webhookTimeout: Double = 5
    public var webhookRetryHorizon: Double = 300
    public var webhookQueueEvents = 10_000
    /// Seconds between the snapshots of a node's connections (`node_lost` reports start there).
    public var lifecycleSnapshotInterval: Double = 30
    public var etcdPrefix = "/herald/"

    public var isCluster: Bool { kafka != nil }

    public init() {}

    public var advertisedAddress: String {
        advertise ?? "\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)"
    }

    /// Checks the settings together and builds the client-ID codec. Errors name the setting.
    public func validated() throws(ConfigurationError) -> ClientIDCodec {
        // One value at a time, by the rules in the settings table; then the rules that tie settings together.
        for setting in ServeSetting.all {
            if let why = setting.violation(self) { throw .invalid(setting.name, why) }
        }
        guard advertisedAddress.utf8.count <= ClientIDCodec.maxAddressBytes else {
            throw .invalid("advertise", "must be at most \(ClientIDCodec.maxAddressBytes) bytes")
        }
        if isCluster {
            guard let etcd, !etcd.isEmpty else { throw .invalid("etcd", "is required with --kafka (e.g. http://127.0.0.1:2379)") }
            guard (adminToken ?? "").isEmpty == false else {
                throw .invalid("admin-token", "is required in cluster mode: nodes authenticate to each other with it")
            }
            guard (1...replicationFactor).contains(minInsyncReplicas) else {
                throw .invalid("min-insync-replicas", "must be 1 up to --replication-factor (\(replicationFactor))")
            }
            guard etcdPrefix.hasPrefix("/"), etcdPrefix.hasSuffix("/") else {
                throw .invalid("etcd-prefix", "must start and end with '/', e.g. /herald/")
            }
            let topics = [unicastTopic, broadcastTopic, eventsTopic, lifecycleTopic]
            guard !topics.contains(""), Set(topics).count == topics.count else {
                throw .invalid(
                    "unicast-topic", "broadcast-topic, events-topic and lifecycle-topic must be four different, non-empty names")
            }
        }
        if !dev, (adminToken ?? "").isEmpty {
            throw .invalid("admin-token", "is required without --dev (--admin-token or HERALD_ADMIN_TOKEN)")
        }
        guard let keys = clientIdKeys, !keys.isEmpty else {
            if dev { return try! ClientIDCodec(base64Keys: ClientIDCodec.generateKey()) }
            throw .invalid("client-id-key", "is required without --dev (--client-id-key or HERALD_CLIENT_ID_KEY; `herald keygen` makes one)")
        }
        do {
            return try ClientIDCodec(base64Keys: keys)
        } catch {
            throw .invalid("client-id-key", error.description)
        }
    }
}

public enum ConfigurationError: Error, CustomStringConvertible {
    case invalid(String, String)

    public var description: String {
        switch self {
        case .invalid(let setting, let why): "invalid setting \(setting): \(why)"
        }
    }
}
