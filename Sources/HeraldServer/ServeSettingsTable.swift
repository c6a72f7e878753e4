import HeraldCore

extension ServeSetting {
    /// Every `herald serve` setting, in the order `--help` and docs/configuration.md list them.
    public static var all: [ServeSetting] {
        [
            source("config", "JSON file of settings, keyed by option name."),
            bool(
                "dev", \.dev,
                "Development mode: /api/register needs no admin token; an ephemeral client-ID key is made when none is given.",
                details: "Development mode: `/api/register` needs no admin token; an ephemeral client-ID key is made when none is given.",
                flag: true),
            text("host", \.host, "Address to listen on."),
            int(
                "port", \.port, "Port to listen on.", details: "Port to listen on (HTTP API, `/ws`, `/admin`, `/metrics`).",
                rule: .range(0...65535)),
            optionalText(
                "advertise", \.advertise, "Address other nodes and client IDs use to reach this node.",
                details: "Address other nodes and client IDs use to reach this node; in a container, its service name (`herald1:7800`).",
                shown: "host:port"),
            optionalText(
                "node-id", \.nodeId, "This node's name.", details: "This node's name in `/admin/nodes`, logs and traces.",
                shown: "derived from the address"),
            optionalText(
                "admin-token", \.adminToken, "Admin token for /api/register and /admin; required without --dev.",
                details: "Bearer token for `/api/register`, `/admin/*` and the nodes' `/internal/*` calls. Required without `--dev`."),
            optionalText(
                "client-id-key", \.clientIdKeys,
                "Base64 AES-256 keys, comma-separated; the first seals new client IDs, all open old ones. Required without --dev; `herald keygen` makes one.",
                details: "Base64 AES-256 keys, comma-separated: the first seals new client IDs, all of them open old ones (key rotation). Required without `--dev`; `herald keygen` makes one. Every node of a cluster needs the same keys."),
            int(
                "max-body-bytes", \.maxBodyBytes, "Largest request body; larger answers 413.",
                details: "Largest request body; a larger one answers 413.", rule: .positive),
            int(
                "max-frame-bytes", \.maxFrameBytes, "Largest WebSocket message from a client; larger closes 1009.",
                details: "Largest WebSocket message from a client: one frame, or the fragments of one message added up; a larger one closes the connection with 1009.",
                rule: .positive),
            int(
                "outbound-queue", \.outboundQueueLimit, "Frames queued for one client before it is closed 1013.",
                details: "Frames queued for one client; a client further behind is closed with 1013.", rule: .positive),
            int(
                "outbound-queue-bytes", \.outboundQueueBytes, "Bytes queued for one client before it is closed 1013.",
                details: "Bytes queued for one client (with `--outbound-queue`, whichever comes first); a client further behind is closed with 1013.",
                rule: .positive),
            number(
                "inbound-frame-rate", \.inboundFrameRate,
                "Frames a second one client may send (bursts of twice that); more closes 1008; 0 is off.",
                details: "Frames a second one client may send on average, in bursts of up to twice that; a client that sends faster is closed with 1008. 0 turns the limit off.",
                rule: .zeroOrPositive),
            list(
                "allowed-origins", \.allowedOrigins,
                "Origins a WebSocket upgrade may come from, comma-separated patterns (* any, https://*.example.com); others get 403.",
                details: "Comma-separated patterns of the `Origin` a WebSocket upgrade may carry: `*` (any, the default, as go-websocket), an exact origin (`https://app.example.com`) or a wildcard host (`https://*.example.com`). An upgrade from another origin is answered 403/4031. Requests without `Origin` (non-browser clients) are not affected."),
            list(
                "api-allowed-origins", \.apiAllowedOrigins,
                "Browser origins allowed to call /api and /admin (comma-separated patterns); a request with another Origin gets 403.",
                details: "Browser origins allowed to call `/api` and `/admin`. A request carrying any other `Origin` header is refused 403/4031, so a page on another site cannot drive the API from a visitor's browser; the node's own origin is always allowed. Business systems send no `Origin`."),
            number(
                "header-timeout", \.headerTimeout, "Seconds a client has to send a request head (and be admitted to a WebSocket).",
                details: "Seconds a connection has to send a whole request head, and a WebSocket upgrade to be admitted; past it the connection is closed."),
            number(
                "body-timeout", \.bodyTimeout, "Seconds a client has to send a request body.",
                details: "Seconds a request body may take once its head arrived."),
            number("keepalive-timeout", \.keepAliveTimeout, "Seconds a kept-alive HTTP connection may wait for its next request."),
            int(
                "max-connections", \.maxConnections, "Open connections the node accepts; more are answered 503 and closed.",
                details: "Open connections (HTTP and WebSocket) the node accepts; one more is answered 503/5030 and closed. The default leaves headroom under a 20,000-file limit for Kafka, etcd and peer connections.",
                rule: .positive),
            int(
                "max-connections-per-ip", \.maxConnectionsPerIP,
                "Open connections one client address may hold (429 past it); 0 is no limit.",
                details: "Open connections one client address may hold; one more is answered 429/4290 and closed. 0 turns the limit off. Behind a proxy listed in `--trusted-proxies`, WebSocket upgrades are counted by the client address the proxy puts in `X-Forwarded-For`.",
                rule: .zeroOrPositive),
            list(
                "trusted-proxies", \.trustedProxies,
                "Proxy IP addresses whose X-Forwarded-For names the client, for --max-connections-per-ip (comma-separated).",
                details: "Comma-separated IP addresses of proxies (nginx) whose `X-Forwarded-For` header is believed; any other peer's is ignored."),
            number(
                "ping-interval", \.pingInterval, "Seconds between WebSocket pings.",
                details: "Seconds between the server's WebSocket pings."),
            number(
                "idle-timeout", \.idleTimeout, "Seconds a client may send nothing before it is closed.",
                details: "Seconds a client may send no frame at all (its pongs to the server's pings count) before it is closed with 1000."),
            int(
                "rate-limit", \.rateLimit, "API calls a second per system; 0 is off.",
                details: "API calls a second per system (answered 4290 above it); 0 turns it off.", rule: .zeroOrPositive),
            bool(
                "group-presence", \.groupPresence,
                "Send members of a group 1001/1002 frames when others join or leave (true or false); every node of a cluster must agree.",
                details: "Send a group's members `1001` / `1002` frames when others join or leave (as go-websocket does). Filling a group of N costs N² frames; `false` turns them off for very large groups. Every node of a cluster must agree."),
            int(
                "journal-capacity", \.journalCapacity, "Messages a standalone node keeps for /admin/replay.",
                details: "Messages a standalone node keeps for `/admin/replay` (and at most about 256 MiB of them; the oldest go first).",
                rule: .positive),
            number(
                "resume-window", \.resumeWindow, "Seconds a reconnect may resume from (its position's age).",
                details: "How old, in seconds, the position a reconnect resumes from (`since`) may be, by the time the fabric took its record; older answers `resumed: false` (\"window exceeded\"). The same on every node.",
                rule: .positive),
            int(
                "resume-max-messages", \.resumeMaxMessages, "The most messages a resume recovers.",
                details: "The most messages a resume recovers; more answers `resumed: false` (\"too many messages\") and the client resyncs from its business system. The same on every node.",
                rule: .positive),
            int(
                "trace-capacity", \.traceCapacity, "Messages whose delivery events a standalone node keeps for /admin/trace.",
                details: "Messages whose delivery events a standalone node keeps for `/admin/trace` (and at most about 64 MiB of events; the oldest go first).",
                rule: .positive),
            number(
                "shutdown-grace", \.shutdownGrace, "Seconds a SIGTERM waits for clients to take their 1001 close.",
                details: "Seconds a SIGTERM waits for clients to take their 1001 close before the node exits.", rule: .zeroOrPositive),
            logLevel(
                "log-level", "trace, debug, info, notice, warning, error or critical.",
                details: "`trace`, `debug`, `info`, `notice`, `warning`, `error` or `critical`; logs are JSON lines on stderr."),
            optionalText(
                "kafka", \.kafka, "Kafka bootstrap servers (host:port,...); setting it runs the node in a cluster.",
                details: "Kafka bootstrap servers (`host:port,...`); setting it runs the node in a cluster.", shown: "none, standalone"),
            optionalText(
                "etcd", \.etcd, "etcd client URLs (http://host:port,...); required with --kafka.",
                details: "etcd client URLs (`http://host:port,...`); required with `--kafka`."),
            int(
                "lease-ttl", \.leaseTTL, "Seconds the node's slot outlives it in etcd.",
                details: "Seconds a node's slot outlives it in etcd: how long after a crash its clients answer 4040.",
                rule: .range(2...3600), clusterOnly: true),
            number(
                "produce-timeout", \.produceTimeout, "Seconds a send waits for Kafka before answering 5030.",
                details: "Seconds a send waits for Kafka's acknowledgement before answering 5030.", clusterOnly: true),
            int(
                "unicast-partitions", \.unicastPartitions, "Partitions the unicast topic is created with (the slots).",
                details: "Partitions the unicast topic is created with: the most nodes a cluster can hold without growing it.",
                rule: .positive, clusterOnly: true),
            int(
                "broadcast-partitions", \.broadcastPartitions, "Partitions the broadcast topic is created with.",
                rule: .positive, clusterOnly: true),
            number(
                "peer-timeout", \.peerTimeout, "Seconds to wait for another node's answer (online lists, status).",
                details: "Seconds to wait for another node's answer to an online list or client status; silent nodes are listed as unreachable.",
                clusterOnly: true),
            int(
                "fetch-wait-ms", \.fetchWaitMillis, "Kafka fetch.wait.max.ms for the node's consumer.",
                details: "The consumer's `fetch.wait.max.ms`: an upper bound on delivery latency when traffic is light.",
                rule: .zeroOrPositive),
            int(
                "replication-factor", \.replicationFactor,
                "Replicas of each Herald topic a node creates (3 on a three-broker Kafka).",
                details: "Replicas of each Herald topic a node creates. With one broker (compose, the local cluster) 1; with three brokers 3, or `acks=all` guarantees nothing beyond one disk. A node warns at start when an existing topic has fewer replicas than this.",
                rule: .range(1...32), clusterOnly: true),
            int(
                "min-insync-replicas", \.minInsyncReplicas,
                "min.insync.replicas of the topics a node creates: the replicas acks=all waits for (2 with three brokers).",
                details: "`min.insync.replicas` of the topics a node creates: how many replicas a write waits for under `acks=all` (2 with three brokers)."),
            bool(
                "kafka-idempotence", \.kafkaIdempotence,
                "Use librdkafka's idempotent producer (true or false); false only for brokers without InitProducerId (Tansu).",
                details: "librdkafka's idempotent producer, so its internal retries never write a record twice. Turn it off only for a broker without a Kafka-compatible InitProducerId: the local Tansu cluster (`scripts/cluster`) does, because Tansu 0.6 answers all but the newest producer `PRODUCER_FENCED`."),
            text("unicast-topic", \.unicastTopic, "Topic whose partitions are the nodes' slots."),
            text("broadcast-topic", \.broadcastTopic, "Topic every node reads for group and system sends."),
            text(
                "events-topic", \.eventsTopic, "Topic of delivery events, read by /admin/trace.",
                details: "Topic of the nodes' delivery events, read by `/admin/trace` and `herald trace`."),
            text(
                "lifecycle-topic", \.lifecycleTopic, "Topic of client lifecycle events (docs/lifecycle.md).",
                details: "Topic of the clients' lifecycle events (connected, disconnected, bound, unbound, resumed), keyed by system ID: docs/lifecycle.md."),
            number(
                "webhook-timeout", \.webhookTimeout, "Seconds one webhook POST may take.",
                details: "Seconds one webhook POST may take, from connect to the answer's last byte; longer counts as a failure and is retried.",
                rule: .positive),
            number(
                "webhook-retry-horizon", \.webhookRetryHorizon, "Seconds a failed webhook batch is retried before it is a dead letter.",
                details: "Seconds a webhook batch that fails (a non-2xx answer, a timeout) is retried, with exponential backoff and jitter, before its events count as dead letters (`herald_webhook_dead_letters_total`).",
                rule: .positive),
            int(
                "webhook-queue-events", \.webhookQueueEvents, "Events one system's webhook may have waiting on a node.",
                details: "Events one system's webhook may have waiting on a node (and at most 8 MiB of them); past it an event is a dead letter at once, so a receiver that never answers costs bounded memory.",
                rule: .positive),
            number(
                "lifecycle-snapshot-interval", \.lifecycleSnapshotInterval,
                "Seconds between snapshots of a node's connections, for node_lost reports.",
                details: "Seconds between the snapshots a node writes of its live connections (to `<lifecycle-topic>.snapshots`, while they change): a survivor reporting a dead node's clients `node_lost` reads its newest snapshot and its events since (docs/lifecycle.md).",
                rule: .positive, clusterOnly: true),
            text(
                "etcd-prefix", \.etcdPrefix, "Root of Herald's keys in etcd.",
                details: "Root of Herald's keys in etcd (slots, nodes, systems)."),
        ]
    }

    /// The setting called `name`.
    public static func named(_ name: String) -> ServeSetting? {
        all.first { $0.name == name }
    }

    /// The option list `serve --help` prints: `  --name <value>` and its summary, default and
    /// environment variable, wrapped under 72 columns (ArgumentParser wraps again at 80) with continuation lines indented.
    public static var helpText: String {
        all.map { setting in
            let option = setting.isFlag ? "--\(setting.name)" : "--\(setting.name) <value>"
            let text = "\(setting.summary) (default: \(setting.shownDefault); env \(setting.environmentName))"
            return "  \(option)\n" + wrap(text, width: 66, indent: "      ")
        }.joined(separator: "\n")
    }

    /// The settings table of docs/configuration.md.
    public static var markdownTable: String {
        var lines = ["| option | environment | default | what it does |", "|---|---|---|---|"]
        for setting in all {
            lines.append(
                "| `--\(setting.name)` | `\(setting.environmentName)` | `\(setting.shownDefault)` | \(setting.details ?? setting.summary) |")
        }
        return lines.joined(separator: "\n")
    }

    private static func wrap(_ text: String, width: Int, indent: String) -> String {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty, line.count + 1 + word.count > width {
                lines.append(indent + line)
                line = ""
            }
            line += line.isEmpty ? String(word) : " " + word
        }
        if !line.isEmpty { lines.append(indent + line) }
        return lines.joined(separator: "\n")
    }
}
