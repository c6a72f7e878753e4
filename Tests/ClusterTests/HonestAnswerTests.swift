import Foundation
import HeraldTestSupport
import Testing

/// Answers that must be true on the real cluster: 5030 only when nothing was sent, 413 (not
/// an outage) for a message too large for Kafka, and Idempotency-Key retries that never send twice.
extension ClusterSuite {
    @Suite("Honest answers")
    struct HonestAnswerTests {
        @Test("Kafka stalled 7 s under concurrent sends: no send answered 5030 is delivered; 5031 retried with its key through another node sends nothing twice")
        func kafkaStall() async throws {
            let system = try await LocalCluster.registerSystem()
            let client = try await system.via(LocalCluster.node(1)).connect()
            let sender = system.via(LocalCluster.node(2))
            // The node must have a working producer connection before the stall.
            _ = try await sender.send(to: client.clientId, ["msg": "warm-up"])
            _ = try await client.ws.nextJSON(timeout: .seconds(10))

            try await LocalCluster.control("pause", "tansu")
            let stalledAt = ContinuousClock.now
            let answers: [(index: Int, code: Int, messageId: String?)]
            do {
                answers = try await withThrowingTaskGroup(of: (Int, Int, String?).self) { group in
                    for index in 0..<40 {
                        group.addTask {
                            try? await Task.sleep(for: .milliseconds(50 * index))
                            let r = try await sender.call(
                                "send_to_client", ["clientId": .string(client.clientId), "msg": .string("stall-\(index)")],
                                headers: [("Idempotency-Key", "stall-\(index)")], timeout: .seconds(30))
                            return (index, r.code ?? -1, r.data?["messageId"]?.string)
                        }
                    }
                    // Resume after 7 s while sends are still in flight.
                    try await Task.sleep(until: stalledAt + .seconds(7))
                    try await LocalCluster.control("resume", "tansu")
                    var all: [(Int, Int, String?)] = []
                    for try await answer in group { all.append(answer) }
                    return all.map { (index: $0.0, code: $0.1, messageId: $0.2) }
                }
            } catch {
                try? await LocalCluster.control("resume", "tansu")
                throw error
            }
            var byCode: [Int: Int] = [:]
            for answer in answers { byCode[answer.code, default: 0] += 1 }
            print("cluster: 40 sends during a 7 s Kafka stall answered \(byCode.sorted { $0.key < $1.key })")
            #expect(Set(byCode.keys).isSubset(of: [0, 5030, 5031]), "only success, nothing sent, or unknown: \(byCode)")

            // Every 5031 retried with its key, through another node: the first answer, no new send.
            for answer in answers where answer.code == 5031 {
                let retry = try await system.via(LocalCluster.node(3)).call(
                    "send_to_client", ["clientId": .string(client.clientId), "msg": .string("stall-\(answer.index)")],
                    headers: [("Idempotency-Key", "stall-\(answer.index)")], timeout: .seconds(30))
                #expect(retry.code == 5031 && retry.data?["messageId"]?.string == answer.messageId, "retry of \(answer.index): \(retry)")
            }
            // Whatever arrives, arrives once, and never a message answered "nothing was sent".
            var received: [String: Int] = [:]
            while let frame = try? await client.ws.nextJSON(timeout: .seconds(8)) {
                if let msg = frame["msg"]?.string { received[msg, default: 0] += 1 }
            }
            let notSent = Set(answers.filter { $0.code == 5030 }.map { "stall-\($0.index)" })
            #expect(notSent.isDisjoint(with: received.keys), "answered 5030 yet delivered: \(notSent.intersection(received.keys))")
            #expect(received.values.allSatisfy { $0 == 1 }, "delivered twice: \(received.filter { $0.value > 1 })")
            for answer in answers where answer.code == 0 {
                #expect(received["stall-\(answer.index)"] == 1, "acknowledged send \(answer.index) must arrive")
            }
            print("cluster: after the stall \(received.count) of 40 arrived (each once); 5030 answers delivered: 0")
            _ = try await LocalCluster.eventually("every node ready again", timeout: .seconds(30)) {
                for node in LocalCluster.nodes where try await node.api.get("/readyz", timeout: .seconds(3)).status != 200 {
                    return false
                }
                return true
            }
            try await client.ws.close()
        }

        @Test("a message too large for a Kafka record answers 413/4130, leaves the node ready, and sends nothing")
        func tooLargeForKafka() async throws {
            let system = try await LocalCluster.registerSystem()
            let client = try await system.via(LocalCluster.node(1)).connect()
            let sender = system.via(LocalCluster.node(2))
            // Under the 1 MiB body limit, over the record limit once enveloped (each "/" stays
            // one byte now, but the envelope and headers add to it).
            let data = String(repeating: "/", count: 999_950)
            let answer = try await sender.call(
                "send_to_client", ["clientId": .string(client.clientId), "data": .string(data)], timeout: .seconds(20))
            expectFailure(answer, status: 413, code: 4130)
            #expect(try await LocalCluster.node(2).api.get("/readyz").status == 200, "a client's mistake is not an outage")
            let fits = try await sender.send(to: client.clientId, ["msg": "after"])
            let frame = try await client.ws.nextJSON(timeout: .seconds(10))
            #expect(frame["messageId"]?.string == fits, "the refused send was not delivered; the next one was")
            try await client.ws.close()
        }
    }
}

extension ClusterSuite.HonestAnswerTests {
    @Test("etcd frozen 7.5 s, shorter than the lease: nothing changes, clients keep their IDs and sends answer 0 throughout")
    func shortEtcdCut() async throws {
        let system = try await LocalCluster.registerSystem()
        let client = try await system.via(LocalCluster.node(1)).connect()
        try await LocalCluster.control("pause", "etcd")
        let started = ContinuousClock.now
        var codes: [Int] = []
        do {
            while ContinuousClock.now - started < .milliseconds(7_500) {
                let r = try await system.via(LocalCluster.node(2)).call(
                    "send_to_client", ["clientId": .string(client.clientId), "msg": "during"], timeout: .seconds(10))
                codes.append(r.code ?? -1)
                try await Task.sleep(for: .milliseconds(500))
            }
        } catch {
            try? await LocalCluster.control("resume", "etcd")
            throw error
        }
        try await LocalCluster.control("resume", "etcd")
        #expect(codes.allSatisfy { $0 == 0 }, "every send during a short cut answered 0: \(codes)")
        var delivered = 0
        while let frame = try? await client.ws.nextJSON(timeout: .seconds(3)), frame["msg"]?.string == "during" { delivered += 1 }
        #expect(delivered == codes.count, "each acknowledged send arrived (\(delivered) of \(codes.count))")
        let after = try await system.via(LocalCluster.node(3)).send(to: client.clientId, ["msg": "after"])
        #expect(try await client.ws.nextJSON(timeout: .seconds(5))["messageId"]?.string == after, "the same client ID still works")
        try await client.ws.close()
    }

    @Test("etcd frozen 14 s: past its lease deadline a node admits no clients and answers 5030 for its own; back, it serves again")
    func leaseDeadline() async throws {
        let system = try await LocalCluster.registerSystem()
        let client = try await system.via(LocalCluster.node(1)).connect()
        let node1 = LocalCluster.node(1)
        try await LocalCluster.control("pause", "etcd")
        let cutAt = ContinuousClock.now
        do {
            let waited = try await LocalCluster.eventually(
                "node1 to stop answering for its own slot", timeout: ClusterSuite.FaultTests.leaseTTL + .seconds(2),
                every: .milliseconds(250)
            ) {
                try await system.via(node1).call("send_to_client", ["clientId": .string(client.clientId)], timeout: .seconds(5))
                    .code == 5030
            }
            let deadline = ContinuousClock.now - cutAt
            print("cluster: node1 answered 5030 for its own client \(deadline) after etcd froze (poll \(waited))")
            #expect(deadline >= .seconds(7), "not before the lease could have run out")
            // No new client gets an ID under a slot the node cannot prove it holds.
            let ws = try await TestWebSocket.connect(host: node1.host, port: node1.port, path: "/ws?systemId=\(system.id)")
            let (code, texts) = try await ws.waitForClose(timeout: .seconds(5))
            #expect(code == 1013 && texts == 0, "refused with 1013 and no welcome, got \(code.map(String.init) ?? "none")")
            await ws.abort()
            #expect(try await node1.api.get("/readyz", timeout: .seconds(5)).status == 503)
            try await Task.sleep(until: cutAt + .seconds(14))
        } catch {
            try? await LocalCluster.control("resume", "etcd")
            throw error
        }
        try await LocalCluster.control("resume", "etcd")
        let back = try await LocalCluster.eventually("node1 to serve a new client again", timeout: .seconds(40), every: .seconds(1)) {
            guard try await node1.api.get("/readyz", timeout: .seconds(3)).status == 200 else { return false }
            let fresh = try await system.via(node1).connect()
            let id = try await system.via(LocalCluster.node(2)).send(to: fresh.clientId)
            let ok = try await fresh.ws.nextJSON(timeout: .seconds(5))["messageId"]?.string == id
            try? await fresh.ws.close()
            return ok
        }
        print("cluster: node1 served new clients again \(back) after etcd resumed")
        await client.ws.abort()
        _ = try await LocalCluster.eventually("every node ready again", timeout: .seconds(30)) {
            for node in LocalCluster.nodes where try await node.api.get("/readyz", timeout: .seconds(3)).status != 200 {
                return false
            }
            return true
        }
    }
}

extension ClusterSuite.HonestAnswerTests {
    @Test("an Idempotency-Key holds across the cluster: retries through other nodes, and concurrent twins, send once")
    func idempotencyAcrossNodes() async throws {
        let system = try await LocalCluster.registerSystem()
        let client = try await system.via(LocalCluster.node(1)).connect()
        let body: JSON = ["clientId": .string(client.clientId), "msg": "once"]
        let key = "k-" + UUID().uuidString
        let first = try await system.via(LocalCluster.node(1)).call("send_to_client", body, headers: [("Idempotency-Key", key)])
        #expect(first.code == 0)
        for index in [2, 3] {
            let retry = try await system.via(LocalCluster.node(index)).call("send_to_client", body, headers: [("Idempotency-Key", key)])
            #expect(retry.code == 0 && retry.data?["messageId"] == first.data?["messageId"], "retry via node\(index): \(retry)")
        }
        let other = try await system.via(LocalCluster.node(2)).call(
            "send_to_client", ["clientId": .string(client.clientId), "msg": "another body"], headers: [("Idempotency-Key", key)])
        expectFailure(other, status: 409, code: 4091)

        // Two at once through two nodes: one sends, both get its answer.
        let twinKey = "t-" + UUID().uuidString
        let twinBody: JSON = ["clientId": .string(client.clientId), "msg": "twin"]
        async let a = system.via(LocalCluster.node(2)).call("send_to_client", twinBody, headers: [("Idempotency-Key", twinKey)])
        async let b = system.via(LocalCluster.node(3)).call("send_to_client", twinBody, headers: [("Idempotency-Key", twinKey)])
        let (ra, rb) = try await (a, b)
        #expect(ra.code == 0 && rb.code == 0 && ra.data?["messageId"] == rb.data?["messageId"], "\(ra) / \(rb)")

        var counts: [String: Int] = [:]
        while let frame = try? await client.ws.nextJSON(timeout: .seconds(3)) {
            counts[frame["msg"]?.string ?? "", default: 0] += 1
        }
        #expect(counts["once"] == 1 && counts["twin"] == 1 && counts["another body"] == nil, "delivered: \(counts)")

        // What a key costs: the same sends with and without one, through one node.
        var plain: [Duration] = []
        var keyed: [Duration] = []
        for index in 0..<100 {
            let started = ContinuousClock.now
            _ = try await system.via(LocalCluster.node(2)).call("send_to_client", ["clientId": .string(client.clientId), "msg": "p"])
            plain.append(ContinuousClock.now - started)
            let keyedStart = ContinuousClock.now
            _ = try await system.via(LocalCluster.node(2)).call(
                "send_to_client", ["clientId": .string(client.clientId), "msg": "k"], headers: [("Idempotency-Key", "m-\(key)-\(index)")])
            keyed.append(ContinuousClock.now - keyedStart)
        }
        func percentile(_ values: [Duration], _ p: Double) -> Duration { values.sorted()[min(values.count - 1, Int(Double(values.count) * p))] }
        print(
            "cluster: send without a key p50 \(percentile(plain, 0.5)) p99 \(percentile(plain, 0.99)); "
                + "with a shared key p50 \(percentile(keyed, 0.5)) p99 \(percentile(keyed, 0.99))")
        try await client.ws.close()
    }
}

extension ClusterSuite.HonestAnswerTests {
    /// FNV-1a as the nodes place group keys, to check which partition a send went to.
    static func partition(for key: String, count: UInt32) -> Int {
        var hash: UInt32 = 2_166_136_261
        for byte in key.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return Int(hash % count)
    }

    @Test("topics weaker than configured: the node warns at start; the broadcast partition count comes from the topic, not the setting")
    func topicSettings() async throws {
        let tag = UUID().uuidString.prefix(8).lowercased()
        let args = [
            "--kafka", "127.0.0.1:9092", "--etcd", "http://127.0.0.1:2379", "--admin-token", LocalCluster.adminToken,
            "--unicast-topic", "herald.unicast.r\(tag)", "--broadcast-topic", "herald.broadcast.r\(tag)",
            "--etcd-prefix", "/herald-test-r\(tag)/", "--unicast-partitions", "4", "--kafka-idempotence", "false",
            "--client-id-key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ]
        // The first node creates the topics: one replica (one broker), 4 broadcast partitions.
        let first = try await HeraldInstance.start(
            dev: false, extraArgs: args + ["--node-id", "first-\(tag)", "--broadcast-partitions", "4"], waitForReady: true)
        defer { Task { _ = await first.stop() } }
        // The second asks for 2 replicas and believes in 3 broadcast partitions.
        let second = try await HeraldInstance.start(
            dev: false,
            extraArgs: args + ["--node-id", "second-\(tag)", "--broadcast-partitions", "3", "--replication-factor", "2"],
            waitForReady: true)
        defer { Task { _ = await second.stop() } }
        _ = try await LocalCluster.eventually("the warning about the replication factor", timeout: .seconds(10)) {
            second.stderrTail.contains("replication factor 1, weaker than the configured 2")
        }
        let system = try await first.api.registerSystem()
        let member = try await system.via(first).connect()
        let group = "rp-\(tag)"
        try await system.via(second).bind(member.clientId, group: group)
        let sent = try await system.via(second).ok("send_to_group", ["groupName": .string(group), "msg": "placed"])
        #expect(try await member.ws.nextJSON(timeout: .seconds(10))["msg"]?.string == "placed")
        let messageId = try #require(sent["messageId"]?.string)
        // The trace is read from the events topic, which the node writes in batches.
        var produced: JSON?
        var trace: APIResponse?
        let deadline = ContinuousClock.now + .seconds(10)
        while produced == nil, ContinuousClock.now < deadline {
            trace = try await second.api.adminGet("/admin/trace/\(messageId)")
            produced = trace?.data?["steps"]?.array?.first { $0["step"]?.string == "produced" }
            if produced == nil { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(
            produced?["partition"]?.int == Self.partition(for: "\(system.id)/\(group)", count: 4),
            "placed by the topic's 4 partitions, not the setting's 3: \(trace.map { "\($0)" } ?? "no trace")")
        try await member.ws.close()
    }
}

extension ClusterSuite.HonestAnswerTests {
    /// etcd's own count of range (read) requests it served.
    static func etcdReads() async throws -> Int {
        let metrics = try await RemoteHerald(host: "127.0.0.1", port: 2379, adminToken: nil).api.get("/metrics")
        let line = metrics.body.split(separator: "\n").first { $0.hasPrefix("etcd_mvcc_range_total ") }
        return Int(Double(line?.split(separator: " ").last ?? "") ?? -1)
    }

    @Test("unknown system IDs cost etcd at most a read per ID and 2 s, not one per request")
    func unknownSystemsAreCheap() async throws {
        let node = LocalCluster.node(2)
        let before = try await Self.etcdReads()
        var codes: [Int: Int] = [:]
        for _ in 0..<200 {
            let r = try await node.api.post("/api/send_to_system", systemId: "no-such-system", json: ["msg": "x"])
            codes[r.code ?? -1, default: 0] += 1
        }
        let after = try await Self.etcdReads()
        print("cluster: 200 sends for one unknown system cost etcd \(after - before) reads; answers \(codes)")
        #expect(codes == [4041: 200])
        // The nodes' own traffic (watch progress, renewals, record refreshes) reads a little too.
        #expect(after - before < 40, "etcd served \(after - before) reads for 200 requests naming one unknown system")
    }
}
