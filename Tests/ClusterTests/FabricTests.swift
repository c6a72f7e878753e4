import Foundation
import HeraldTestSupport
import Testing

/// All cluster tests share one cluster and some of them break it on purpose, so they run
/// one at a time: the fabric first, the faults after.
@Suite("Local cluster", .serialized)
enum ClusterSuite {}

extension ClusterSuite {
    /// Delivery, groups, presence and queries across the three nodes of the local cluster.
    @Suite("Cluster fabric")
    struct FabricTests {
        @Test("unicast from every node reaches clients on every node")
        func crossNodeUnicast() async throws {
            let system = try await LocalCluster.registerSystem()
            var clients: [ConnectedClient] = []
            for node in LocalCluster.nodes {
                clients.append(try await system.via(node).connect())
            }
            for (sender, node) in LocalCluster.nodes.enumerated() {
                for (index, client) in clients.enumerated() {
                    let marker = "from\(sender)to\(index)"
                    let messageId = try await system.via(node).send(
                        to: client.clientId, ["msg": .string(marker)])
                    let frame = try await nextNonPresence(client.ws)
                    #expect(frame["messageId"]?.string == messageId)
                    #expect(frame["msg"]?.string == marker)
                }
            }
            for client in clients { try await client.ws.close() }
        }

        @Test("group and system sends reach members on every node exactly once")
        func groupAndSystemAcrossNodes() async throws {
            let system = try await LocalCluster.registerSystem()
            let other = try await LocalCluster.registerSystem()
            let group = unique("g")
            var members: [ConnectedClient] = []
            for (index, node) in LocalCluster.nodes.enumerated() {
                let client = try await system.via(node).connect()
                // Bind through a node other than the owner: control messages travel the fabric.
                try await system.via(LocalCluster.nodes[(index + 1) % 3]).bind(
                    client.clientId, group: group, userId: "u\(index)")
                members.append(client)
            }
            let outsider = try await other.via(LocalCluster.node(2)).connect()

            let groupMessage = try await system.via(LocalCluster.balancer).ok(
                "send_to_group", ["groupName": .string(group), "data": ["n": 1]])["messageId"]?.string
            let systemMessage = try await system.via(LocalCluster.node(3)).ok(
                "send_to_system", ["data": "all"])["messageId"]?.string
            for member in members {
                // Group and system sends travel different partitions: their order may differ.
                var frames: [String: JSON] = [:]
                for _ in 0..<2 {
                    let frame = try await nextNonPresence(member.ws)
                    frames[frame["messageId"]?.string ?? ""] = frame
                }
                #expect(Set(frames.keys) == Set([groupMessage, systemMessage].compactMap { $0 }))
                #expect(frames[groupMessage ?? ""]?["groupName"]?.string == group)
                #expect(frames[groupMessage ?? ""]?["data"]?["n"]?.int == 1)
                #expect(frames[systemMessage ?? ""]?["data"]?.string == "all")
                // Exactly once: nothing else arrives.
                await #expect(throws: (any Error).self) {
                    _ = try await nextNonPresence(member.ws, timeout: .milliseconds(500))
                }
            }
            await #expect(throws: (any Error).self) {
                _ = try await outsider.ws.next(timeout: .milliseconds(500))
            }
            for client in members + [outsider] { try await client.ws.close() }
        }

        @Test("presence crosses nodes: joins and leaves reach members elsewhere")
        func presenceAcrossNodes() async throws {
            let system = try await LocalCluster.registerSystem()
            let group = unique("p")
            let first = try await system.via(LocalCluster.node(1)).connect()
            try await system.via(LocalCluster.node(1)).bind(first.clientId, group: group, userId: "alice")
            expectPresence(
                try await first.ws.nextJSON(), code: 1001, group: group, clientId: first.clientId,
                userId: "alice")

            let second = try await system.via(LocalCluster.node(3)).connect()
            try await system.via(LocalCluster.node(2)).bind(
                second.clientId, group: group, userId: "bob", extend: "x")
            expectPresence(
                try await first.ws.nextJSON(), code: 1001, group: group, clientId: second.clientId,
                userId: "bob", extend: "x")
            expectPresence(
                try await second.ws.nextJSON(), code: 1001, group: group, clientId: second.clientId,
                userId: "bob")

            try await system.via(LocalCluster.node(2)).ok(
                "unbind_from_group", ["clientId": .string(second.clientId), "groupName": .string(group)])
            expectPresence(
                try await first.ws.nextJSON(), code: 1002, group: group, clientId: second.clientId,
                userId: "bob")

            try await system.via(LocalCluster.node(3)).bind(second.clientId, group: group, userId: "bob")
            expectPresence(
                try await first.ws.nextJSON(), code: 1001, group: group, clientId: second.clientId)
            try await second.ws.close()
            expectPresence(
                try await first.ws.nextJSON(), code: 1002, group: group, clientId: second.clientId)
            try await first.ws.close()
        }

        @Test("online list and client status answer for clients on any node")
        func queriesAcrossNodes() async throws {
            let system = try await LocalCluster.registerSystem()
            let group = unique("q")
            var ids: [String] = []
            var clients: [ConnectedClient] = []
            for node in LocalCluster.nodes {
                let client = try await system.via(node).connect()
                try await system.via(node).bind(client.clientId, group: group, userId: "u-\(node.port)")
                // A bind is applied when its owner consumes it; its own 1001 says it was.
                expectPresence(try await client.ws.nextJSON(), code: 1001, group: group, clientId: client.clientId)
                clients.append(client)
                ids.append(client.clientId)
            }
            for node in LocalCluster.nodes + [LocalCluster.balancer] {
                let list = try await system.via(node).ok("get_online_list", ["groupName": .string(group)])
                #expect(list["count"]?.int == 3)
                #expect(Set(list["list"]?.array?.compactMap { $0["clientId"]?.string } ?? []) == Set(ids))
                #expect(list["unreachable"] == nil)
                for id in ids {
                    let status = try await system.via(node).ok("client_status", ["clientId": .string(id)])
                    #expect(status["online"]?.bool == true)
                    #expect(status["groups"]?.array?.compactMap(\.string) == [group])
                }
            }
            // close through a node that does not hold the client
            try await system.via(LocalCluster.node(2)).ok("close_client", ["clientId": .string(ids[0])])
            let closed = try await clients[0].ws.waitForClose()
            #expect(closed.code == 1000)
            let closedId = ids[0]
            _ = try await LocalCluster.eventually("client_status to say offline", timeout: .seconds(5)) {
                let status = try await system.via(LocalCluster.node(3)).ok(
                    "client_status", ["clientId": .string(closedId)])
                return status["online"]?.bool == false
            }
            for client in clients.dropFirst() { try await client.ws.close() }
        }

        @Test("the single-node contract holds on every node", arguments: [1, 2, 3])
        func contractOnEveryNode(node number: Int) async throws {
            let node = LocalCluster.node(number)
            let system = try await LocalCluster.registerSystem()
            let api = node.api
            expectFailure(
                try await api.post(
                    "/api/send_to_client", systemId: system.id, json: ["clientId": "garbage"]), status: 400,
                code: 4001)
            expectFailure(
                try await api.post(
                    "/api/send_to_client", systemId: "nope-\(UUID())", json: ["clientId": "x"]), status: 404,
                code: 4041)
            expectFailure(
                try await api.postRaw("/api/send_to_group", systemId: system.id, body: Data("{".utf8)),
                status: 400, code: 4000)
            expectFailure(try await api.get("/api/send_to_group"), status: 405, code: 4050)
            expectFailure(
                try await api.post("/api/register", systemId: nil, auth: "wrong", json: ["systemId": "x"]),
                status: 401, code: 4010)
            expectFailure(
                try await api.post(
                    "/api/register", systemId: nil, auth: LocalCluster.adminToken,
                    json: ["systemId": .string(system.id)]),
                status: 409, code: 4090)
            let foreign = try await (try await LocalCluster.registerSystem()).via(node).connect()
            expectFailure(
                try await system.via(node).call("send_to_client", ["clientId": .string(foreign.clientId)]),
                status: 403, code: 4030)
            expectFailure(
                try await system.via(node).call(
                    "send_to_client", ["clientId": .string(tamper(foreign.clientId))]), status: 400,
                code: 4001)
            try await foreign.ws.close()
            try await expectStillServing(system.via(node))
        }

        @Test("10,000 messages to clients on three nodes: each acknowledged one delivered exactly once")
        func tenThousandMessages() async throws {
            let system = try await LocalCluster.registerSystem()
            var clients: [ConnectedClient] = []
            for index in 0..<30 {
                clients.append(try await system.via(LocalCluster.node(index % 3 + 1)).connect())
            }
            let targets = clients.map(\.clientId)
            let total = 10_000
            let senders = 24
            let clock = ContinuousClock.now
            // Each sender posts its share through the node it is given; answers are the acknowledged set.
            let acknowledged = try await withThrowingTaskGroup(of: [String: String].self) { group in
                for sender in 0..<senders {
                    group.addTask {
                        var sent: [String: String] = [:]
                        let via = system.via(LocalCluster.node(sender % 3 + 1))
                        for index in stride(from: sender, to: total, by: senders) {
                            let target = targets[index % targets.count]
                            let answer = try await via.call(
                                "send_to_client", ["clientId": .string(target), "data": .number(Double(index))])
                            if answer.status == 200, let id = answer.data?["messageId"]?.string {
                                sent[id] = target
                            }
                        }
                        return sent
                    }
                }
                var all: [String: String] = [:]
                for try await part in group { all.merge(part) { a, _ in a } }
                return all
            }
            let sendTime = ContinuousClock.now - clock
            #expect(acknowledged.count == total, "every send should be acknowledged on a healthy cluster")

            // Read until every client has what was sent to it.
            var expected: [String: Int] = [:]
            for target in acknowledged.values { expected[target, default: 0] += 1 }
            let received = try await withThrowingTaskGroup(of: (String, [String]).self) { group in
                for client in clients {
                    let count = expected[client.clientId] ?? 0
                    group.addTask {
                        var ids: [String] = []
                        while ids.count < count {
                            let frame = try await client.ws.nextJSON(timeout: .seconds(20))
                            if let id = frame["messageId"]?.string, !id.isEmpty { ids.append(id) }
                        }
                        // and nothing more
                        if let extra = try? await client.ws.next(timeout: .milliseconds(300)) {
                            ids.append("extra:\(extra)")
                        }
                        return (client.clientId, ids)
                    }
                }
                var all: [String: [String]] = [:]
                for try await (id, ids) in group { all[id] = ids }
                return all
            }
            var deliveredTo: [String: String] = [:]
            var duplicates = 0
            for (client, ids) in received {
                for id in ids {
                    if deliveredTo.updateValue(client, forKey: id) != nil { duplicates += 1 }
                }
            }
            #expect(duplicates == 0)
            #expect(deliveredTo.count == acknowledged.count)
            #expect(deliveredTo == acknowledged, "each acknowledged message reached its own client")
            print(
                "cluster: \(total) sends acknowledged in \(sendTime) (\(Int(Double(total) / sendTime.seconds)) msg/s with \(senders) senders)"
            )
            for client in clients { try await client.ws.close() }
        }
    }

}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
