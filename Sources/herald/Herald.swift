import ArgumentParser
import Foundation
import HeraldCore
import HeraldServer
import Logging

@main
struct Herald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Herald, a WebSocket push fabric.",
        subcommands: [Serve.self, Replay.self, Trace.self, Nodes.self, Keygen.self])
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a fresh base64 client-ID key (AES-256).")

    func run() {
        print(ClientIDCodec.generateKey())
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a Herald node.")

    @Flag(help: "Development mode: /api/register needs no admin token; an ephemeral client-ID key is made when none is given.")
    var dev = false

    @Option(help: "Address to listen on.")
    var host = "0.0.0.0"

    @Option(help: "Port to listen on.")
    var port = 7800

    @Option(help: "Address other nodes and client IDs use to reach this node (default host:port).")
    var advertise: String?

    @Option(name: .customLong("node-id"), help: "This node's name (default derived from the address).")
    var nodeId: String?

    @Option(name: .customLong("admin-token"), help: "Admin token for /api/register and /admin (env HERALD_ADMIN_TOKEN).")
    var adminToken: String?

    @Option(
        name: .customLong("client-id-key"),
        help: "Base64 AES-256 keys, comma-separated; the first seals new client IDs (env HERALD_CLIENT_ID_KEY).")
    var clientIdKey: String?

    @Option(name: .customLong("max-body-bytes"), help: "Largest request body; larger answers 413.")
    var maxBodyBytes = 1 << 20

    @Option(name: .customLong("max-frame-bytes"), help: "Largest WebSocket frame from a client; larger closes 1009.")
    var maxFrameBytes = 64 << 10

    @Option(name: .customLong("outbound-queue"), help: "Frames queued for one client before it is closed 1013.")
    var outboundQueue = 256

    @Option(name: .customLong("ping-interval"), help: "Seconds between WebSocket pings.")
    var pingInterval: Double = 25

    @Option(name: .customLong("idle-timeout"), help: "Seconds a client may send nothing before it is closed.")
    var idleTimeout: Double = 60

    @Option(name: .customLong("rate-limit"), help: "API calls a second per system; 0 is off.")
    var rateLimit = 0

    @Option(name: .customLong("journal-capacity"), help: "Messages the standalone journal keeps for replay.")
    var journalCapacity = 100_000

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(help: "Kafka bootstrap servers (host:port,...): runs the node in a cluster (env HERALD_KAFKA).")
    var kafka: String?

    @Option(help: "etcd client URLs (http://host:port,...), required with --kafka (env HERALD_ETCD).")
    var etcd: String?

    @Option(name: .customLong("lease-ttl"), help: "Seconds the node's slot outlives it in etcd.")
    var leaseTTL = 10

    @Option(name: .customLong("produce-timeout"), help: "Seconds a send waits for Kafka before answering 5030.")
    var produceTimeout: Double = 5

    @Option(name: .customLong("unicast-partitions"), help: "Partitions herald.unicast is created with (the slots).")
    var unicastPartitions = 64

    @Option(name: .customLong("broadcast-partitions"), help: "Partitions herald.broadcast is created with.")
    var broadcastPartitions = 4

    @Option(name: .customLong("peer-timeout"), help: "Seconds to wait for another node's answer (online lists, status).")
    var peerTimeout: Double = 2

    @Option(name: .customLong("fetch-wait-ms"), help: "Kafka fetch.wait.max.ms for the node's consumer.")
    var fetchWaitMs = 10

    @Option(name: .customLong("unicast-topic"), help: "Topic whose partitions are the nodes' slots.")
    var unicastTopic = "herald.unicast"

    @Option(name: .customLong("broadcast-topic"), help: "Topic every node reads for group and system sends.")
    var broadcastTopic = "herald.broadcast"

    @Option(name: .customLong("etcd-prefix"), help: "Root of Herald's keys in etcd.")
    var etcdPrefix = "/herald/"

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var configuration = HeraldConfiguration()
        configuration.dev = dev
        configuration.host = host
        configuration.port = port
        configuration.advertise = advertise
        configuration.nodeId = nodeId
        configuration.adminToken = adminToken ?? environment["HERALD_ADMIN_TOKEN"]
        configuration.clientIdKeys = clientIdKey ?? environment["HERALD_CLIENT_ID_KEY"]
        configuration.maxBodyBytes = maxBodyBytes
        configuration.maxFrameBytes = maxFrameBytes
        configuration.outboundQueueLimit = outboundQueue
        configuration.pingInterval = pingInterval
        configuration.idleTimeout = idleTimeout
        configuration.rateLimit = rateLimit
        configuration.journalCapacity = journalCapacity
        configuration.kafka = kafka ?? environment["HERALD_KAFKA"]
        configuration.etcd = etcd ?? environment["HERALD_ETCD"]
        configuration.leaseTTL = leaseTTL
        configuration.produceTimeout = produceTimeout
        configuration.unicastPartitions = unicastPartitions
        configuration.broadcastPartitions = broadcastPartitions
        configuration.peerTimeout = peerTimeout
        configuration.fetchWaitMillis = fetchWaitMs
        configuration.unicastTopic = unicastTopic
        configuration.broadcastTopic = broadcastTopic
        configuration.etcdPrefix = etcdPrefix

        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("invalid setting log-level: \(logLevel)")
        }
        LoggingSystem.bootstrap { JSONLogHandler(label: $0, level: level) }
        let logger = Logger(label: "herald")
        let node: HeraldNode
        do {
            node = try HeraldNode(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            FileHandle.standardError.write(Data("herald: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if dev, configuration.clientIdKeys == nil {
            logger.warning("dev mode: using an ephemeral client-ID key; client IDs will not survive a restart")
        }
        try await node.run()
    }
}
