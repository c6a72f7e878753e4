import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOFoundationCompat
import HeraldCluster
import HeraldCore
import Logging

/// `herald replay`: what the fabric carried, read from Kafka.
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the messages the fabric carried (from Kafka), oldest first; optionally send them again.")

    @Option(help: "Kafka bootstrap servers (env HERALD_KAFKA).")
    var kafka: String?

    @Option(help: "Ask this node's /admin/replay instead of reading Kafka (a standalone node's journal), e.g. http://127.0.0.1:7800.")
    var node: String?

    @Option(name: .customLong("admin-token"), help: "Admin token for --node (env HERALD_ADMIN_TOKEN).")
    var adminToken: String?

    // Unconditional: the value may start with a dash (-15m).
    @Option(parsing: .unconditional, help: "From this time: RFC 3339 or relative (-15m, -2h, now).")
    var since: String?

    @Option(parsing: .unconditional, help: "Until this time: RFC 3339 or relative.")
    var until: String?

    @Option(name: .customLong("client-id"), help: "Only messages to this client.")
    var clientId: String?

    @Option(help: "Only messages to this group.")
    var group: String?

    @Option(help: "Only messages of this system.")
    var system: String?

    @Option(name: .customLong("message-id"), help: "Only this message.")
    var messageId: String?

    @Option(help: "At most this many messages.")
    var limit: String?

    @Option(help: "json (one object a line) or table.")
    var format: OutputFormat = .json

    @OptionGroup var topics: TopicOptions

    @Flag(help: "Send the matches again to their targets that are online now (needs --etcd and the client-ID key).")
    var redeliver = false

    @Option(help: "etcd client URLs, for --redeliver (env HERALD_ETCD).")
    var etcd: String?

    @Option(name: .customLong("client-id-key"), help: "Client-ID keys, for --redeliver (env HERALD_CLIENT_ID_KEY).")
    var clientIdKey: String?

    enum OutputFormat: String, ExpressibleByArgument {
        case json, table
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let logger = opsLogger()
        var options = ["since": since, "until": until, "clientId": clientId, "groupName": group]
        options["systemId"] = system
        options["messageId"] = messageId
        options["limit"] = limit
        let filter: ReplayFilter
        do {
            filter = try ReplayFilter.parse(options.compactMapValues { $0 })
        } catch {
            fail("invalid filter: \(error.message)")
        }
        if let node {
            try await replayFromNode(
                node, options: options.compactMapValues { $0 }, token: adminToken ?? environment["HERALD_ADMIN_TOKEN"],
                table: format == .table && !redeliver)
            return
        }
        guard let kafka = kafka ?? environment["HERALD_KAFKA"] else { fail("--kafka (or HERALD_KAFKA) or --node is required") }
        // Check what redelivery needs before the scan, not after.
        var redelivery: ClusterRedelivery?
        if redeliver {
            guard let etcd = etcd ?? environment["HERALD_ETCD"] else { fail("--redeliver needs --etcd (or HERALD_ETCD)") }
            guard let keys = clientIdKey ?? environment["HERALD_CLIENT_ID_KEY"], let codec = try? ClientIDCodec(base64Keys: keys) else {
                fail("--redeliver needs --client-id-key (or HERALD_CLIENT_ID_KEY) to check that targets are online")
            }
            let settings = ClusterSettings(
                kafka: kafka, etcd: etcd.split(separator: ",").map(String.init), nodeId: "herald-replay",
                advertise: "-", internalToken: "")
            redelivery = ClusterRedelivery(settings: settings, codec: codec, logger: logger)
        }
        let replay = ClusterReplay(
            kafka: kafka, logger: logger, unicastTopic: topics.unicastTopic, broadcastTopic: topics.broadcastTopic,
            eventsTopic: topics.eventsTopic)
        let started = ContinuousClock.now
        let matches = try await replay.matches(filter) { scanned in
            FileHandle.standardError.write(Data("replay: scanned \(scanned) records\n".utf8))
        }
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18
            + Double((ContinuousClock.now - started).components.seconds)
        FileHandle.standardError.write(Data("replay: \(matches.count) matching in \(String(format: "%.2f", seconds)) s\n".utf8))
        if let redelivery {
            let (sent, skipped) = try await redelivery.redeliver(matches)
            print("{\"redelivered\":\(sent),\"skipped\":\(skipped)}")
            return
        }
        switch format {
        case .json:
            for match in matches { print(match.line.json) }
        case .table:
            printTable(matches.map(\.line))
        }
    }

    /// A node's /admin/replay (or /admin/replay/redeliver), printed as it answers.
    private func replayFromNode(_ node: String, options: [String: String], token: String?, table: Bool) async throws {
        var components = URLComponents(string: node + (redeliver ? "/admin/replay/redeliver" : "/admin/replay"))
        components?.queryItems = options.map { URLQueryItem(name: $0.key, value: $0.value) }
        guard let url = components?.url?.absoluteString else { fail("--node is not a URL: \(node)") }
        var request = HTTPClientRequest(url: url)
        request.method = redeliver ? .POST : .GET
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 30))
        guard response.status == .ok else { fail("\(node) answered \(response.status.code): \(body)") }
        guard table else {
            print(body, terminator: body.hasSuffix("\n") || body.isEmpty ? "" : "\n")
            return
        }
        // The node's NDJSON, one replay line an object, as a table.
        var rows: [[String]] = []
        for line in body.split(separator: "\n") where !line.isEmpty {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            let payload = object["payload"].flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.fragmentsAllowed]) }
            rows.append(
                [
                    object["timestamp"] as? String ?? "", object["topic"] as? String ?? "",
                    (object["partition"] as? NSNumber)?.stringValue ?? "", (object["offset"] as? NSNumber)?.stringValue ?? "",
                    object["kind"] as? String ?? "", object["messageId"] as? String ?? "", object["systemId"] as? String ?? "",
                    String((object["target"] as? String ?? "").prefix(24)),
                    String((payload.map { String(decoding: $0, as: UTF8.self) } ?? "").prefix(60)),
                ])
        }
        Self.printTable(rows)
    }

    private func printTable(_ lines: [ReplayLine]) {
        Self.printTable(
            lines.map {
                [
                    $0.timestamp, $0.topic, String($0.partition), String($0.offset), $0.kind, $0.messageId, $0.systemId,
                    String($0.target.prefix(24)), String($0.payload.text.prefix(60)),
                ]
            })
    }

    private static func printTable(_ rows: [[String]]) {
        let header = ["TIMESTAMP", "TOPIC", "PART", "OFFSET", "KIND", "MESSAGE", "SYSTEM", "TARGET", "PAYLOAD"]
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}

/// `herald events`: clients' lifecycle events, read from `herald.lifecycle`.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the clients' lifecycle events (docs/lifecycle.md) from Kafka, one JSON object a line; --follow keeps printing new ones.")

    @Option(help: "Kafka bootstrap servers (env HERALD_KAFKA).")
    var kafka: String?

    @Option(help: "Only the events of this system.")
    var system: String?

    // Unconditional: the value may start with a dash (-15m).
    @Option(parsing: .unconditional, help: "From this time: RFC 3339 or relative (-15m, -2h, now); default -1h, or now with --follow.")
    var since: String?

    @Flag(help: "After what is there, print each new event as it comes, until interrupted.")
    var follow = false

    @Option(name: .customLong("lifecycle-topic"), help: "The cluster's lifecycle topic (env HERALD_LIFECYCLE_TOPIC).")
    var lifecycleTopic: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let kafka = kafka ?? environment["HERALD_KAFKA"] else { fail("--kafka (or HERALD_KAFKA) is required") }
        let now = Clock.nowMillis()
        var from: Int64?
        if let since {
            guard let parsed = TimeExpression.parse(since, now: now) else {
                fail("--since is not an RFC 3339 time or a relative time like -15m: \(since)")
            }
            from = parsed
        }
        if let system, !SystemIDRule.isValid(system) { fail("--system must be \(SystemIDRule.description)") }
        let tail = LifecycleTail(
            kafka: kafka, topic: lifecycleTopic ?? environment["HERALD_LIFECYCLE_TOPIC"] ?? Topics.lifecycle, logger: opsLogger())
        if follow {
            try await tail.follow(since: from, systemId: system) { event in
                // Unbuffered: each event shows when it comes.
                FileHandle.standardOutput.write(Data((event.json + "\n").utf8))
            }
            return
        }
        for event in try await tail.events(since: from ?? now - 3_600_000, systemId: system) { print(event.json) }
    }
}

/// `herald trace`: one message's path through the fabric, from the events topic.
struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a message's path: accepted, produced, delivered, acked, dropped.",
        discussion: "Reads the events topic with --kafka, or asks a node's /admin/trace with --node (a standalone node, or any node of a cluster).")

    @Argument(help: "The message id a send answered.")
    var messageId: String

    @Option(help: "Kafka bootstrap servers (env HERALD_KAFKA).")
    var kafka: String?

    @Option(help: "Ask this node's /admin/trace instead of reading Kafka (a standalone node), e.g. http://127.0.0.1:7800.")
    var node: String?

    @Option(name: .customLong("admin-token"), help: "Admin token for --node (env HERALD_ADMIN_TOKEN).")
    var adminToken: String?

    @OptionGroup var topics: TopicOptions

    func run() async throws {
        if let node {
            var request = HTTPClientRequest(url: node + "/admin/trace/" + messageId)
            if let token = adminToken ?? ProcessInfo.processInfo.environment["HERALD_ADMIN_TOKEN"] {
                request.headers.add(name: "Authorization", value: "Bearer \(token)")
            }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let body = try await response.body.collect(upTo: 64 << 20)
            guard response.status == .ok,
                let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
                let data = object["data"]
            else { fail("no record of message \(messageId) (\(node) answered \(response.status.code))") }
            print(String(decoding: try JSONSerialization.data(withJSONObject: data, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        guard let kafka = kafka ?? ProcessInfo.processInfo.environment["HERALD_KAFKA"] else {
            fail("--kafka (or HERALD_KAFKA) or --node is required")
        }
        let replay = ClusterReplay(
            kafka: kafka, logger: opsLogger(), unicastTopic: topics.unicastTopic, broadcastTopic: topics.broadcastTopic,
            eventsTopic: topics.eventsTopic)
        guard let steps = try await replay.trace(messageId) else {
            fail("no record of message \(messageId)")
        }
        print(FrameEncoding.encode(MessageTrace(messageId: messageId, steps: steps)))
    }
}

/// The topics the cluster was configured with (`herald serve --unicast-topic ...`), so the
/// ops commands read the same ones.
struct TopicOptions: ParsableArguments {
    @Option(name: .customLong("unicast-topic"), help: "The cluster's unicast topic (env HERALD_UNICAST_TOPIC).")
    var unicastTopicOption: String?

    @Option(name: .customLong("broadcast-topic"), help: "The cluster's broadcast topic (env HERALD_BROADCAST_TOPIC).")
    var broadcastTopicOption: String?

    @Option(name: .customLong("events-topic"), help: "The cluster's trace events topic (env HERALD_EVENTS_TOPIC).")
    var eventsTopicOption: String?

    private var environment: [String: String] { ProcessInfo.processInfo.environment }
    var unicastTopic: String { unicastTopicOption ?? environment["HERALD_UNICAST_TOPIC"] ?? Topics.unicast }
    var broadcastTopic: String { broadcastTopicOption ?? environment["HERALD_BROADCAST_TOPIC"] ?? Topics.broadcast }
    var eventsTopic: String { eventsTopicOption ?? environment["HERALD_EVENTS_TOPIC"] ?? Topics.events }
}

/// `herald nodes`: the live nodes, from etcd.
struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the live nodes: id, address, slot, epoch, connections, since.")

    @Option(help: "etcd client URLs (env HERALD_ETCD).")
    var etcd: String?

    @Option(name: .customLong("etcd-prefix"), help: "Root of Herald's keys in etcd.")
    var etcdPrefix = "/herald/"

    func run() async throws {
        guard let etcd = etcd ?? ProcessInfo.processInfo.environment["HERALD_ETCD"] else {
            fail("--etcd is required (or HERALD_ETCD)")
        }
        let nodes = try await ClusterDirectory.liveNodes(
            etcd: etcd.split(separator: ",").map(String.init), prefix: etcdPrefix, logger: opsLogger())
        for node in nodes { print(FrameEncoding.encode(node)) }
    }
}

private func opsLogger() -> Logger {
    var logger = Logger(label: "herald-ops")
    logger.logLevel = .warning
    return logger
}

/// Prints to stderr and exits 2: a bad option or an answer of "nothing".
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("herald: \(message)\n".utf8))
    Foundation.exit(2)
}
