import Foundation
import HeraldTestSupport
import Testing

/// Faults on the real parts: a node killed and restarted, etcd stopped, the Kafka path cut.
/// Each test puts the cluster back as it found it.
extension ClusterSuite {
    @Suite("Cluster faults")
    struct FaultTests {
        /// The cluster's lease TTL (scripts/cluster.env).
        static let leaseTTL: Duration = .seconds(10)

        @Test("kill -9 a node: its clients answer 4040 within TTL + 3 s; a restart takes a new epoch")
        func killedNode() async throws {
            let system = try await LocalCluster.registerSystem()
            let victim = try await system.via(LocalCluster.node(2)).connect()
            let survivor = try await system.via(LocalCluster.node(1)).connect()
            let before = try await nodeRecord("node2")

            try await LocalCluster.control("kill", "node2")
            let killedAt = ContinuousClock.now
            // Meanwhile the other nodes never stop serving.
            let watcher = Task {
                var failures = 0
                while !Task.isCancelled {
                    for node in [LocalCluster.node(1), LocalCluster.node(3)] {
                        if (try? await node.api.get("/healthz", timeout: .seconds(2)))?.status != 200 {
                            failures += 1
                        }
                    }
                    try? await Task.sleep(for: .milliseconds(200))
                }
                return failures
            }
            let waited = try await LocalCluster.eventually(
                "sends to the dead node's client to answer 4040", timeout: Self.leaseTTL + .seconds(3)
            ) {
                try await system.via(LocalCluster.node(3)).call(
                    "send_to_client", ["clientId": .string(victim.clientId)]
                ).code == 4040
            }
            print(
                "cluster: sends to a killed node's client answered 4040 after \(ContinuousClock.now - killedAt) (poll took \(waited))"
            )
            // The survivor still gets messages.
            let id = try await system.via(LocalCluster.node(3)).send(to: survivor.clientId)
            #expect(try await survivor.ws.nextJSON()["messageId"]?.string == id)

            try await LocalCluster.control("start", "node2")
            watcher.cancel()
            #expect(await watcher.value == 0, "nodes 1 and 3 answered /healthz throughout")
            let after = try await nodeRecord("node2")
            #expect(
                after["epoch"]?.int != before["epoch"]?.int,
                "a restarted node claims its slot with a new epoch")
            // The old ID stays dead; a new client on the restarted node works.
            expectFailure(
                try await system.via(LocalCluster.node(1)).call(
                    "send_to_client", ["clientId": .string(victim.clientId)]), status: 404, code: 4040)
            let fresh = try await system.via(LocalCluster.node(2)).connect()
            let freshId = try await system.via(LocalCluster.node(1)).send(to: fresh.clientId)
            #expect(try await fresh.ws.nextJSON()["messageId"]?.string == freshId)
            try await fresh.ws.close()
            try await survivor.ws.close()
        }

        @Test("etcd stopped: nodes keep routing from their last view, turn unready, and recover")
        func etcdOutage() async throws {
            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(1)).connect()
            let b = try await system.via(LocalCluster.node(3)).connect()
            try await LocalCluster.control("stop", "etcd")
            do {
                _ = try await LocalCluster.eventually(
                    "readyz to turn 503 without etcd", timeout: .seconds(15)
                ) {
                    try await LocalCluster.node(1).api.get("/readyz", timeout: .seconds(3)).status == 503
                }
                // Routing continues: cross-node sends between known clients still deliver.
                let id = try await system.via(LocalCluster.node(2)).send(to: a.clientId)
                #expect(try await a.ws.nextJSON()["messageId"]?.string == id)
                let id2 = try await system.via(LocalCluster.node(1)).send(to: b.clientId)
                #expect(try await b.ws.nextJSON()["messageId"]?.string == id2)
            } catch {
                try? await LocalCluster.control("start", "etcd")
                throw error
            }
            try await LocalCluster.control("start", "etcd")
            let recovered = try await LocalCluster.eventually(
                "every node ready again", timeout: .seconds(30)
            ) {
                for node in LocalCluster.nodes
                where try await node.api.get("/readyz", timeout: .seconds(3)).status != 200 {
                    return false
                }
                return true
            }
            print("cluster: nodes ready again \(recovered) after etcd restarted")
            // And the clients kept their IDs through it.
            let id3 = try await system.via(LocalCluster.node(2)).send(to: b.clientId)
            #expect(try await b.ws.nextJSON()["messageId"]?.string == id3)
            try await a.ws.close()
            try await b.ws.close()
        }

        @Test("Kafka path cut: sends answer 5030 and nothing is delivered; restored, sends recover")
        func kafkaPathCut() async throws {
            let system = try await LocalCluster.registerSystem()
            let client = try await system.via(LocalCluster.node(1)).connect()
            try await LocalCluster.control("stop", "adapter")
            var refused: String?
            do {
                let started = ContinuousClock.now
                let answer = try await system.via(LocalCluster.node(2)).call(
                    "send_to_client", ["clientId": .string(client.clientId), "msg": "during outage"],
                    timeout: .seconds(20))
                print(
                    "cluster: a send with the Kafka path cut answered \(answer.code ?? -1) after \(ContinuousClock.now - started)"
                )
                expectFailure(answer, status: 503, code: 5030)
                refused = answer.data?["messageId"]?.string
                _ = try await LocalCluster.eventually(
                    "readyz to turn 503 without Kafka", timeout: .seconds(10)
                ) {
                    try await LocalCluster.node(2).api.get("/readyz", timeout: .seconds(3)).status == 503
                }
            } catch {
                try? await LocalCluster.control("start", "adapter")
                throw error
            }
            try await LocalCluster.control("start", "adapter")
            let back = try await LocalCluster.eventually(
                "sends to succeed again", timeout: .seconds(30), every: .milliseconds(500)
            ) {
                try await system.via(LocalCluster.node(2)).call(
                    "send_to_client", ["clientId": .string(client.clientId), "msg": "after"],
                    timeout: .seconds(10)
                ).code == 0
            }
            print("cluster: sends recovered \(back) after the Kafka path was restored")
            // What was refused never arrives; what was accepted does.
            var seen: [String] = []
            while let frame = try? await client.ws.nextJSON(timeout: .seconds(2)) {
                seen.append(frame["msg"]?.string ?? "")
                if let id = frame["messageId"]?.string { #expect(id != refused) }
            }
            #expect(!seen.contains("during outage"))
            #expect(seen.contains("after"))
            _ = try await LocalCluster.eventually("every node ready again", timeout: .seconds(20)) {
                for node in LocalCluster.nodes
                where try await node.api.get("/readyz", timeout: .seconds(3)).status != 200 {
                    return false
                }
                return true
            }
            try await client.ws.close()
        }

        @Test(
            "every slot taken where the broker cannot add partitions: the node stays unready and says why"
        )
        func slotsExhausted() async throws {
            let tag = UUID().uuidString.prefix(8).lowercased()
            let args = [
                "--kafka", "127.0.0.1:9092", "--etcd", "http://127.0.0.1:2379", "--admin-token",
                LocalCluster.adminToken,
                "--unicast-topic", "herald.unicast.t\(tag)", "--broadcast-topic",
                "herald.broadcast.t\(tag)",
                "--etcd-prefix", "/herald-test-\(tag)/", "--unicast-partitions", "1",
                "--client-id-key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ]
            let first = try await HeraldInstance.start(
                dev: false, extraArgs: args + ["--node-id", "first-\(tag)"], waitForReady: true)
            defer { Task { _ = await first.stop() } }
            let second = try await HeraldInstance.start(
                dev: false, extraArgs: args + ["--node-id", "second-\(tag)"])
            defer { Task { _ = await second.stop() } }
            _ = try await LocalCluster.eventually(
                "the second node to explain why it is not ready", timeout: .seconds(15)
            ) {
                let ready = try await second.api.get("/readyz")
                return ready.status == 503 && (ready.msg ?? "").contains("unicast-partitions")
            }
            // It takes no clients (it has no slot to address them by) but keeps answering.
            let system = try await first.api.registerSystem()
            let refused = try? await system.via(second).connect()
            #expect(refused == nil)
            #expect(try await second.api.get("/healthz").status == 200)
            #expect(try await first.api.get("/readyz").status == 200)
        }

        private func nodeRecord(_ nodeId: String) async throws -> JSON {
            let nodes = try await LocalCluster.balancer.api.adminGet("/admin/nodes")
            guard let node = nodes.data?.array?.first(where: { $0["nodeId"]?.string == nodeId }) else {
                throw HeraldLaunchError(description: "\(nodeId) is not in /admin/nodes: \(nodes)")
            }
            return node
        }
    }
}

extension ClusterSuite.FaultTests {
    /// Tansu keeps its log in memory, so a restart is a broker that comes back empty, as a
    /// wiped or replaced Kafka cluster would: every topic and offset is gone.
    @Test("the broker comes back empty (Tansu restarted under load): nodes recover and deliver across nodes again; what answered 0 after recovery arrives")
    func brokerComesBackEmpty() async throws {
        let system = try await LocalCluster.registerSystem()
        var connected: [ConnectedClient] = []
        for n in 1...3 {
            let client = try await system.via(LocalCluster.node(n)).connect()
            expectSuccess(
                try await system.call("bind_to_group", ["clientId": .string(client.clientId), "groupName": "room"]))
            connected.append(client)
        }
        let clients = connected
        // Load through every node while the broker goes away and comes back.
        let targets = clients.map(\.clientId)
        let load = Task {
            var answers: [Int: Int] = [:]
            var round = 0
            while !Task.isCancelled {
                round += 1
                let via = LocalCluster.node(round % 3 + 1)
                let code = (try? await system.via(via).call(
                    "send_to_client", ["clientId": .string(targets[(round + 1) % 3]), "msg": "load"],
                    timeout: .seconds(8)))?.code ?? -1
                answers[code, default: 0] += 1
                try? await Task.sleep(for: .milliseconds(20))
            }
            return answers
        }
        try await Task.sleep(for: .seconds(1))
        let restarted = ContinuousClock.now
        do {
            try await LocalCluster.control("stop", "tansu")
            try await LocalCluster.control("start", "tansu")
        } catch {
            load.cancel()
            throw error
        }
        // Recovered when a unicast from every node to a client on the next one, and a group send,
        // arrive; each probe has its own marker so load frames are skipped.
        let recovered = try await LocalCluster.eventually(
            "unicast and group sends to reach clients on every node again", timeout: .seconds(60), every: .seconds(1)
        ) {
            for n in 0..<3 {
                let marker = "probe-\(UUID().uuidString.prefix(8))"
                let target = clients[(n + 1) % 3]
                let answer = try await system.via(LocalCluster.node(n + 1)).call(
                    "send_to_client", ["clientId": .string(target.clientId), "msg": .string(marker)], timeout: .seconds(8))
                guard answer.code == 0, try await Self.receive(marker, on: target) else { return false }
            }
            let marker = "room-\(UUID().uuidString.prefix(8))"
            guard try await system.call("send_to_group", ["groupName": "room", "msg": .string(marker)]).code == 0 else {
                return false
            }
            for client in clients where try await !Self.receive(marker, on: client) { return false }
            return true
        }
        load.cancel()
        let answers = await load.value
        print("cluster: after an empty broker restart, delivery across nodes recovered in \(ContinuousClock.now - restarted) (probing \(recovered)); send answers under load: \(answers.sorted { $0.key < $1.key })")
        // Once recovered, every acknowledged send arrives, through every node.
        for n in 0..<3 {
            let target = clients[(n + 2) % 3]
            var sent: Set<String> = []
            for i in 0..<20 {
                let marker = "after-\(n)-\(i)"
                expectSuccess(
                    try await system.via(LocalCluster.node(n + 1)).call(
                        "send_to_client", ["clientId": .string(target.clientId), "msg": .string(marker)]))
                sent.insert(marker)
            }
            var seen: Set<String> = []
            while !sent.isSubset(of: seen), let frame = try? await target.ws.nextJSON(timeout: .seconds(5)) {
                if let msg = frame["msg"]?.string, sent.contains(msg) { seen.insert(msg) }
            }
            #expect(seen == sent, "node\(n + 1) → client of node\((n + 2) % 3 + 1): \(sent.subtracting(seen).sorted()) missing")
        }
        _ = try await LocalCluster.eventually("every node ready again", timeout: .seconds(20)) {
            for node in LocalCluster.nodes where try await node.api.get("/readyz", timeout: .seconds(3)).status != 200 {
                return false
            }
            return true
        }
        for client in clients { try await client.ws.close() }
    }

    /// Reads `client`'s frames until one carries `marker` (true) or none comes for 3 s (false).
    private static func receive(_ marker: String, on client: ConnectedClient) async throws -> Bool {
        while let frame = try? await client.ws.nextJSON(timeout: .seconds(3)) {
            if frame["msg"]?.string == marker { return true }
        }
        return false
    }
}

extension ClusterSuite.FaultTests {
    /// A join fails after its slot claim when etcd refuses the node's record: a private etcd
    /// refuses requests over 8 KiB, and a node id of 5,000 bytes fits in the slot claim (its
    /// value is the node id) but not in the record (the node id as key and again in the value).
    @Test("a join that fails after claiming a slot gives the slot back: failed attempts leave no slot taken")
    func failedJoinReleasesSlot() async throws {
        let clientPort = try await freePort()
        let peerPort = try await freePort()
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-etcd-\(UUID().uuidString)")
        let etcd = Process()
        etcd.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
        etcd.arguments = [
            "--name", "joins", "--data-dir", dataDir.path, "--max-request-bytes", "8192",
            "--listen-client-urls", "http://127.0.0.1:\(clientPort)", "--advertise-client-urls", "http://127.0.0.1:\(clientPort)",
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "joins=http://127.0.0.1:\(peerPort)",
        ]
        etcd.standardOutput = FileHandle.nullDevice
        etcd.standardError = FileHandle.nullDevice
        try etcd.run()
        defer {
            etcd.terminate()
            try? FileManager.default.removeItem(at: dataDir)
        }
        let etcdAPI = RemoteHerald(port: clientPort, adminToken: nil).api
        _ = try await LocalCluster.eventually("the private etcd to answer", timeout: .seconds(15)) {
            try await etcdAPI.get("/health", timeout: .seconds(1)).status == 200
        }
        /// Slot keys under the node's prefix, counted by etcd.
        let slotsPrefix = "/herald-joins/slots/"
        let countQuery = Data(
            JSON.object([
                "key": .string(Data(slotsPrefix.utf8).base64EncodedString()),
                "range_end": .string(Data("/herald-joins/slots0".utf8).base64EncodedString()),
                "count_only": true,
            ]).encoded.utf8)
        @Sendable func slotKeys() async throws -> Int {
            let answer = try await etcdAPI.request(.POST, "/v3/kv/range", body: countQuery, timeout: .seconds(2))
            return Int(answer.json?["count"]?.string ?? "0") ?? 0
        }

        let tag = UUID().uuidString.prefix(8).lowercased()
        let node = try await HeraldInstance.start(
            dev: false,
            extraArgs: [
                "--kafka", "127.0.0.1:9092", "--etcd", "http://127.0.0.1:\(clientPort)", "--admin-token", LocalCluster.adminToken,
                "--unicast-topic", "herald.unicast.j\(tag)", "--broadcast-topic", "herald.broadcast.j\(tag)",
                "--events-topic", "herald.events.j\(tag)", "--etcd-prefix", "/herald-joins/", "--lease-ttl", "30",
                "--node-id", "n" + String(repeating: "x", count: 5000),
                "--client-id-key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ])
        defer { Task { _ = await node.stop() } }
        // Watch the slots while the node tries, and fails, to join, for several attempts.
        var most = 0
        let watched = ContinuousClock.now
        while ContinuousClock.now - watched < .seconds(8) {
            most = max(most, try await slotKeys())
            try await Task.sleep(for: .milliseconds(50))
        }
        let log = tailOfFile(node.stderrURL, lines: 1_000_000)
        let attempts = log.components(separatedBy: "cannot join the cluster").count - 1
        print("cluster: \(attempts) failed joins in 8 s (a 30 s lease each); slot keys held at once: at most \(most), now \(try await slotKeys())")
        #expect(attempts >= 3, "the node should have tried to join several times: \(log.suffix(600))")
        #expect(log.contains("too large"), "etcd should refuse the node record as too large: \(log.suffix(600))")
        // Each failed attempt revoked its lease, so its claim went with it; without that, every
        // attempt would hold a slot for the whole 30 s lease.
        #expect(most <= 1, "slot keys held at once during failed joins: \(most)")
        #expect(try await slotKeys() <= 1)
        #expect(try await node.api.get("/readyz").status == 503)
    }
}
