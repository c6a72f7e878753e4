import ArgumentParser
import Foundation
import HeraldServer
import Logging
import NIOCore

/// `herald serve`: every option can also come from HERALD_<NAME> in the environment or from a JSON
/// config file (`--config`); the command line wins over the environment, which wins over the file.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Herald node.",
        discussion: """
            Every option below can also be set with the environment variable shown beside it, or \
            in a JSON config file given with --config (keys are the option names, e.g. \
            {"port": 7801, "lease-ttl": 10}). The command line wins over the environment, which \
            wins over the file. An invalid value stops the node at start, naming the setting.
            """)

    private static let defaults = HeraldConfiguration()

    @Option(parsing: .unconditional, help: help("JSON file of settings, keyed by option name.", "config", default: "none"))
    var config: String?

    @Flag(help: help(
        "Development mode: /api/register needs no admin token; an ephemeral client-ID key is made when none is given.",
        "dev", default: "off"))
    var dev = false

    @Option(parsing: .unconditional, help: help("Address to listen on.", "host", default: defaults.host))
    var host: String?

    @Option(parsing: .unconditional, help: help("Port to listen on.", "port", default: defaults.port))
    var port: Int?

    @Option(parsing: .unconditional, help: help(
        "Address other nodes and client IDs use to reach this node.", "advertise", default: "host:port"))
    var advertise: String?

    @Option(name: .customLong("node-id"), parsing: .unconditional, help: help("This node's name.", "node-id", default: "derived from the address"))
    var nodeId: String?

    @Option(name: .customLong("admin-token"), parsing: .unconditional, help: help(
        "Admin token for /api/register and /admin; required without --dev.", "admin-token", default: "none"))
    var adminToken: String?

    @Option(name: .customLong("client-id-key"), parsing: .unconditional, help: help(
        "Base64 AES-256 keys, comma-separated; the first seals new client IDs, all open old ones. Required without --dev; `herald keygen` makes one.",
        "client-id-key", default: "none"))
    var clientIdKey: String?

    @Option(name: .customLong("max-body-bytes"), parsing: .unconditional, help: help(
        "Largest request body; larger answers 413.", "max-body-bytes", default: defaults.maxBodyBytes))
    var maxBodyBytes: Int?

    @Option(name: .customLong("max-frame-bytes"), parsing: .unconditional, help: help(
        "Largest WebSocket frame from a client; larger closes 1009.", "max-frame-bytes", default: defaults.maxFrameBytes))
    var maxFrameBytes: Int?

    @Option(name: .customLong("outbound-queue"), parsing: .unconditional, help: help(
        "Frames queued for one client before it is closed 1013.", "outbound-queue", default: defaults.outboundQueueLimit))
    var outboundQueue: Int?

    @Option(name: .customLong("outbound-queue-bytes"), parsing: .unconditional, help: help(
        "Bytes queued for one client before it is closed 1013.", "outbound-queue-bytes", default: defaults.outboundQueueBytes))
    var outboundQueueBytes: Int?

    @Option(name: .customLong("inbound-frame-rate"), parsing: .unconditional, help: help(
        "Frames a second one client may send (bursts of twice that); more closes 1008; 0 is off.", "inbound-frame-rate",
        default: defaults.inboundFrameRate))
    var inboundFrameRate: Double?

    @Option(name: .customLong("allowed-origins"), parsing: .unconditional, help: help(
        "Origins a WebSocket upgrade may come from, comma-separated patterns (* any, https://*.example.com); others get 403.",
        "allowed-origins", default: "*"))
    var allowedOrigins: String?

    @Option(name: .customLong("api-allowed-origins"), parsing: .unconditional, help: help(
        "Browser origins allowed to call /api and /admin (comma-separated patterns); a request with another Origin gets 403.",
        "api-allowed-origins", default: "none"))
    var apiAllowedOrigins: String?

    @Option(name: .customLong("header-timeout"), parsing: .unconditional, help: help(
        "Seconds a client has to send a request head (and be admitted to a WebSocket).", "header-timeout",
        default: defaults.headerTimeout))
    var headerTimeout: Double?

    @Option(name: .customLong("body-timeout"), parsing: .unconditional, help: help(
        "Seconds a client has to send a request body.", "body-timeout", default: defaults.bodyTimeout))
    var bodyTimeout: Double?

    @Option(name: .customLong("keepalive-timeout"), parsing: .unconditional, help: help(
        "Seconds a kept-alive HTTP connection may wait for its next request.", "keepalive-timeout",
        default: defaults.keepAliveTimeout))
    var keepaliveTimeout: Double?

    @Option(name: .customLong("max-connections"), parsing: .unconditional, help: help(
        "Open connections the node accepts; more are answered 503 and closed.", "max-connections",
        default: defaults.maxConnections))
    var maxConnections: Int?

    @Option(name: .customLong("max-connections-per-ip"), parsing: .unconditional, help: help(
        "Open connections one client address may hold (429 past it); 0 is no limit.", "max-connections-per-ip",
        default: defaults.maxConnectionsPerIP))
    var maxConnectionsPerIp: Int?

    @Option(name: .customLong("trusted-proxies"), parsing: .unconditional, help: help(
        "Proxy IP addresses whose X-Forwarded-For names the client, for --max-connections-per-ip (comma-separated).",
        "trusted-proxies", default: "none"))
    var trustedProxies: String?

    @Option(name: .customLong("ping-interval"), parsing: .unconditional, help: help(
        "Seconds between WebSocket pings.", "ping-interval", default: defaults.pingInterval))
    var pingInterval: Double?

    @Option(name: .customLong("idle-timeout"), parsing: .unconditional, help: help(
        "Seconds a client may send nothing before it is closed.", "idle-timeout", default: defaults.idleTimeout))
    var idleTimeout: Double?

    @Option(name: .customLong("rate-limit"), parsing: .unconditional, help: help(
        "API calls a second per system; 0 is off.", "rate-limit", default: defaults.rateLimit))
    var rateLimit: Int?

    @Option(name: .customLong("group-presence"), parsing: .unconditional, help: help(
        "Send members of a group 1001/1002 frames when others join or leave (true or false); every node of a cluster must agree.",
        "group-presence", default: "true"))
    var groupPresence: Bool?

    @Option(name: .customLong("journal-capacity"), parsing: .unconditional, help: help(
        "Messages the standalone journal keeps for replay.", "journal-capacity", default: defaults.journalCapacity))
    var journalCapacity: Int?

    @Option(name: .customLong("trace-capacity"), parsing: .unconditional, help: help(
        "Delivery events the standalone trace keeps.", "trace-capacity", default: defaults.traceCapacity))
    var traceCapacity: Int?

    @Option(name: .customLong("shutdown-grace"), parsing: .unconditional, help: help(
        "Seconds shutdown waits for clients to take their 1001 close.", "shutdown-grace", default: defaults.shutdownGrace))
    var shutdownGrace: Double?

    @Option(name: .customLong("log-level"), parsing: .unconditional, help: help(
        "trace, debug, info, notice, warning, error or critical.", "log-level", default: "info"))
    var logLevel: String?

    @Option(parsing: .unconditional, help: help(
        "Kafka bootstrap servers (host:port,...): runs the node in a cluster.", "kafka", default: "none, standalone"))
    var kafka: String?

    @Option(parsing: .unconditional, help: help("etcd client URLs (http://host:port,...), required with --kafka.", "etcd", default: "none"))
    var etcd: String?

    @Option(name: .customLong("lease-ttl"), parsing: .unconditional, help: help(
        "Seconds the node's slot outlives it in etcd.", "lease-ttl", default: defaults.leaseTTL))
    var leaseTTL: Int?

    @Option(name: .customLong("produce-timeout"), parsing: .unconditional, help: help(
        "Seconds a send waits for Kafka before answering 5030.", "produce-timeout", default: defaults.produceTimeout))
    var produceTimeout: Double?

    @Option(name: .customLong("unicast-partitions"), parsing: .unconditional, help: help(
        "Partitions the unicast topic is created with (the slots).", "unicast-partitions",
        default: defaults.unicastPartitions))
    var unicastPartitions: Int?

    @Option(name: .customLong("broadcast-partitions"), parsing: .unconditional, help: help(
        "Partitions the broadcast topic is created with.", "broadcast-partitions", default: defaults.broadcastPartitions))
    var broadcastPartitions: Int?

    @Option(name: .customLong("peer-timeout"), parsing: .unconditional, help: help(
        "Seconds to wait for another node's answer (online lists, status).", "peer-timeout",
        default: defaults.peerTimeout))
    var peerTimeout: Double?

    @Option(name: .customLong("fetch-wait-ms"), parsing: .unconditional, help: help(
        "Kafka fetch.wait.max.ms for the node's consumer.", "fetch-wait-ms", default: defaults.fetchWaitMillis))
    var fetchWaitMs: Int?

    @Option(name: .customLong("replication-factor"), parsing: .unconditional, help: help(
        "Replicas of each Herald topic a node creates (3 on a three-broker Kafka).", "replication-factor",
        default: defaults.replicationFactor))
    var replicationFactor: Int?

    @Option(name: .customLong("min-insync-replicas"), parsing: .unconditional, help: help(
        "min.insync.replicas of the topics a node creates: the replicas acks=all waits for (2 with three brokers).",
        "min-insync-replicas", default: defaults.minInsyncReplicas))
    var minInsyncReplicas: Int?

    @Option(name: .customLong("kafka-idempotence"), parsing: .unconditional, help: help(
        "Use librdkafka's idempotent producer (true or false); false only for brokers without InitProducerId (Tansu).",
        "kafka-idempotence", default: "true"))
    var kafkaIdempotence: Bool?

    @Option(name: .customLong("unicast-topic"), parsing: .unconditional, help: help(
        "Topic whose partitions are the nodes' slots.", "unicast-topic", default: defaults.unicastTopic))
    var unicastTopic: String?

    @Option(name: .customLong("broadcast-topic"), parsing: .unconditional, help: help(
        "Topic every node reads for group and system sends.", "broadcast-topic", default: defaults.broadcastTopic))
    var broadcastTopic: String?

    @Option(name: .customLong("etcd-prefix"), parsing: .unconditional, help: help(
        "Root of Herald's keys in etcd.", "etcd-prefix", default: defaults.etcdPrefix))
    var etcdPrefix: String?

    /// The options given on the command line, as text, by option name.
    private var commandLineValues: [String: String] {
        let values: [String: (any CustomStringConvertible)?] = [
            "dev": dev ? true : nil, "host": host, "port": port, "advertise": advertise, "node-id": nodeId,
            "admin-token": adminToken, "client-id-key": clientIdKey, "max-body-bytes": maxBodyBytes,
            "max-frame-bytes": maxFrameBytes, "outbound-queue": outboundQueue, "ping-interval": pingInterval,
            "outbound-queue-bytes": outboundQueueBytes, "inbound-frame-rate": inboundFrameRate,
            "allowed-origins": allowedOrigins, "api-allowed-origins": apiAllowedOrigins, "header-timeout": headerTimeout,
            "body-timeout": bodyTimeout, "keepalive-timeout": keepaliveTimeout, "max-connections": maxConnections,
            "max-connections-per-ip": maxConnectionsPerIp, "trusted-proxies": trustedProxies,
            "idle-timeout": idleTimeout, "rate-limit": rateLimit, "group-presence": groupPresence, "journal-capacity": journalCapacity,
            "trace-capacity": traceCapacity, "shutdown-grace": shutdownGrace, "log-level": logLevel,
            "kafka": kafka, "etcd": etcd, "lease-ttl": leaseTTL, "produce-timeout": produceTimeout,
            "unicast-partitions": unicastPartitions, "broadcast-partitions": broadcastPartitions,
            "peer-timeout": peerTimeout, "fetch-wait-ms": fetchWaitMs, "kafka-idempotence": kafkaIdempotence,
            "replication-factor": replicationFactor, "min-insync-replicas": minInsyncReplicas, "unicast-topic": unicastTopic,
            "broadcast-topic": broadcastTopic, "etcd-prefix": etcdPrefix,
        ]
        return values.compactMapValues { $0?.description }
    }

    func run() async throws {
        let configuration: HeraldConfiguration
        let level: Logger.Level
        do {
            let environment = ProcessInfo.processInfo.environment
            let settings = try SettingsReader(
                commandLine: commandLineValues, environment: environment,
                configFile: config ?? environment[SettingsReader.environmentName(of: "config")])
            configuration = try Self.configuration(from: settings)
            let levelName = settings.string("log-level", default: "info")
            try settings.rejectUnknownFileKeys()
            guard let parsed = Logger.Level(rawValue: levelName) else {
                throw ConfigurationError.invalid("log-level", "expected trace, debug, info, notice, warning, error or critical, got \"\(levelName)\"")
            }
            level = parsed
        } catch {
            FileHandle.standardError.write(Data("herald: \(error)\n".utf8))
            throw ExitCode(2)
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
        if configuration.dev, configuration.clientIdKeys == nil {
            logger.warning("dev mode: using an ephemeral client-ID key; client IDs will not survive a restart")
        }
        do {
            try await node.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            let message = "port \(configuration.port) on \(configuration.host) is in use by another process; stop it or choose another with --port"
            logger.critical("cannot start: \(message)")
            FileHandle.standardError.write(Data("herald: \(message)\n".utf8))
            throw ExitCode(1)
        }
    }

    private static func configuration(from settings: SettingsReader) throws(ConfigurationError) -> HeraldConfiguration {
        var c = HeraldConfiguration()
        c.dev = try settings.bool("dev", default: c.dev)
        c.host = settings.string("host", default: c.host)
        c.port = try settings.int("port", default: c.port)
        c.advertise = settings.string("advertise")
        c.nodeId = settings.string("node-id")
        c.adminToken = settings.string("admin-token")
        c.clientIdKeys = settings.string("client-id-key")
        c.maxBodyBytes = try settings.int("max-body-bytes", default: c.maxBodyBytes)
        c.maxFrameBytes = try settings.int("max-frame-bytes", default: c.maxFrameBytes)
        c.outboundQueueLimit = try settings.int("outbound-queue", default: c.outboundQueueLimit)
        c.outboundQueueBytes = try settings.int("outbound-queue-bytes", default: c.outboundQueueBytes)
        c.inboundFrameRate = try settings.double("inbound-frame-rate", default: c.inboundFrameRate)
        c.allowedOrigins = Self.list(settings.string("allowed-origins", default: "*"))
        c.apiAllowedOrigins = Self.list(settings.string("api-allowed-origins", default: ""))
        c.headerTimeout = try settings.double("header-timeout", default: c.headerTimeout)
        c.bodyTimeout = try settings.double("body-timeout", default: c.bodyTimeout)
        c.keepAliveTimeout = try settings.double("keepalive-timeout", default: c.keepAliveTimeout)
        c.maxConnections = try settings.int("max-connections", default: c.maxConnections)
        c.maxConnectionsPerIP = try settings.int("max-connections-per-ip", default: c.maxConnectionsPerIP)
        c.trustedProxies = Self.list(settings.string("trusted-proxies", default: ""))
        c.pingInterval = try settings.double("ping-interval", default: c.pingInterval)
        c.idleTimeout = try settings.double("idle-timeout", default: c.idleTimeout)
        c.rateLimit = try settings.int("rate-limit", default: c.rateLimit)
        c.groupPresence = try settings.bool("group-presence", default: c.groupPresence)
        c.journalCapacity = try settings.int("journal-capacity", default: c.journalCapacity)
        c.traceCapacity = try settings.int("trace-capacity", default: c.traceCapacity)
        c.shutdownGrace = try settings.double("shutdown-grace", default: c.shutdownGrace)
        c.kafka = settings.string("kafka")
        c.etcd = settings.string("etcd")
        c.leaseTTL = try settings.int("lease-ttl", default: c.leaseTTL)
        c.produceTimeout = try settings.double("produce-timeout", default: c.produceTimeout)
        c.unicastPartitions = try settings.int("unicast-partitions", default: c.unicastPartitions)
        c.broadcastPartitions = try settings.int("broadcast-partitions", default: c.broadcastPartitions)
        c.peerTimeout = try settings.double("peer-timeout", default: c.peerTimeout)
        c.fetchWaitMillis = try settings.int("fetch-wait-ms", default: c.fetchWaitMillis)
        c.kafkaIdempotence = try settings.bool("kafka-idempotence", default: c.kafkaIdempotence)
        c.replicationFactor = try settings.int("replication-factor", default: c.replicationFactor)
        c.minInsyncReplicas = try settings.int("min-insync-replicas", default: c.minInsyncReplicas)
        c.unicastTopic = settings.string("unicast-topic", default: c.unicastTopic)
        c.broadcastTopic = settings.string("broadcast-topic", default: c.broadcastTopic)
        c.etcdPrefix = settings.string("etcd-prefix", default: c.etcdPrefix)
        return c
    }

    /// A comma-separated list, blanks dropped.
    private static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// "<text> (default: <value>; env HERALD_<NAME>)"
    private static func help(_ text: String, _ name: String, default value: some CustomStringConvertible) -> ArgumentHelp {
        var shown = value.description
        if let number = value as? Double, number == number.rounded() { shown = String(Int(number)) }
        return ArgumentHelp("\(text) (default: \(shown); env \(SettingsReader.environmentName(of: name)))")
    }
}
