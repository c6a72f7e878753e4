import HeraldCore

/// How a node joins the cluster.
public struct ClusterSettings: Sendable {
    /// Kafka bootstrap servers, e.g. "127.0.0.1:9092".
    public var kafka: String
    /// etcd client URLs.
    public var etcd: [String]
    public var nodeId: String
    /// host:port other nodes reach this node's HTTP API at; also sealed into client IDs.
    public var advertise: String
    /// Seconds; the slot and node keys live under a lease of this TTL.
    public var leaseTTL: Int64 = 10
    /// How long a send waits for Kafka's acknowledgement before answering 5030.
    public var produceTimeout: Duration = .seconds(5)
    /// Partitions `herald.unicast` is created with (the slots available before it must grow).
    public var unicastPartitions: Int32 = 64
    public var broadcastPartitions: Int32 = 4
    public var unicastTopic = Topics.unicast
    public var broadcastTopic = Topics.broadcast
    public var eventsTopic = Topics.events
    public var lifecycleTopic = Topics.lifecycle
    /// How often a node writes the snapshot of its connections that a `node_lost` report starts
    /// from (while they change; docs/lifecycle.md).
    public var lifecycleSnapshotInterval: Duration = .seconds(30)
    /// Root of Herald's keys in etcd.
    public var etcdPrefix = "/herald/"
    /// How long a node waits for a peer's answer (online lists, client status).
    public var peerTimeout: Duration = .seconds(2)
    /// Kafka's fetch.wait.max.ms: keep it low against brokers that wait it out in full.
    public var fetchWaitMillis = 10
    /// The largest record the producer sends (librdkafka's `message.max.bytes`, set to match);
    /// a message that would make a larger one is answered 413. Kafka's brokers take 1 MiB by default.
    public var maxRecordBytes = 1_000_000
    /// Replicas of each of Herald's topics, and the in-sync replicas a write needs (`acks=all`
    /// means this many): with one broker both are 1; with three, 3 and 2 (docs/deploy.md).
    public var replicationFactor: Int16 = 1
    public var minInsyncReplicas = 1
    /// librdkafka's idempotent producer (needs a broker with InitProducerId).
    public var idempotentProducer = true
    /// Extra librdkafka properties, applied last.
    public var kafkaProperties: [String: String] = [:]
    /// The admin token, used to authenticate node-to-node queries.
    public var internalToken: String
    public var version = "0.1.0"

    public init(kafka: String, etcd: [String], nodeId: String, advertise: String, internalToken: String) {
        self.kafka = kafka
        self.etcd = etcd
        self.nodeId = nodeId
        self.advertise = advertise
        self.internalToken = internalToken
    }

    /// Where Herald's keys live in etcd.
    public var etcdKeys: EtcdKeys { EtcdKeys(root: etcdPrefix) }

    var kafkaBase: [String: String] {
        [
            "bootstrap.servers": kafka, "client.id": "herald-\(nodeId)",
            // Come back quickly after a broker outage rather than after librdkafka's 10 s default.
            "reconnect.backoff.ms": "100", "reconnect.backoff.max.ms": "1000",
        ].merging(kafkaProperties) { $1 }
    }
}

public enum ClusterError: Error, CustomStringConvertible {
    case noFreeSlot(String)
    case notJoined

    public var description: String {
        switch self {
        case .noFreeSlot(let why): why
        case .notJoined: "this node holds no slot yet"
        }
    }
}
