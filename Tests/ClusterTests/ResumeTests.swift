import Foundation
import HeraldCore
import HeraldTestSupport
import Testing

/// Resume on the cluster (docs/websocket.md, "Resume"): a client whose connection ended
/// reconnects through nginx, to whichever node, with its session token and last position, and
/// gets what it missed from Kafka exactly once, in order, marked recovered, then live frames.
extension ClusterSuite {
    @Suite("Cluster resume")
    struct ClusterResumeTests {
        /// How the first connection ends.
        enum Disruption: String {
            /// kill -9 of the node it is on.
            case killNode = "node killed"
            /// The client closes with a close frame.
            case cleanClose = "clean close"
            /// The client's socket drops without a close handshake; the node stays up.
            case networkCut = "network cut"
        }

        /// A client on node1, bound to two groups, with what it has seen so far.
        struct Resumable {
            let system: TestSystem
            let client: ConnectedClient
            let groups: [String]
            let token: String
            let pos: String
        }

        static func resumable() async throws -> Resumable {
            let system = try await LocalCluster.registerSystem()
            let sender = system.via(LocalCluster.node(2))
            let client = try await system.via(LocalCluster.node(1)).connect()
            let groups = [unique("g"), unique("h")]
            for group in groups { try await sender.bind(client.clientId, group: group) }
            // One of each kind, received: the binds are in effect and the token carries them.
            var last: JSON = .null
            for target in groups.map({ ("send_to_group", ["groupName": JSON.string($0)]) }) + [
                ("send_to_system", [:]), ("send_to_client", ["clientId": .string(client.clientId)]),
            ] {
                let id = try #require(try await sender.ok(target.0, .object(target.1))["messageId"]?.string)
                last = try await nextNonPresence(client.ws)
                #expect(last["messageId"]?.string == id)
            }
            let token = try #require(client.ws.flags.session.withLock { $0 })
            let pos = try #require(last["pos"]?.string, "a push carries pos: \(last)")
            return Resumable(system: system, client: client, groups: groups, token: token, pos: pos)
        }

        /// Sends `count` messages round-robin to the groups, the system and the old ID; answers
        /// the message ids Kafka took, in the order they were sent (old-ID sends may answer
        /// 4040 once the dead node's lease is gone: nothing is then sent).
        static func sendDuringGap(_ r: Resumable, count: Int) async throws -> [String] {
            var sent: [String] = []
            let senders = [r.system.via(LocalCluster.node(2)), r.system.via(LocalCluster.node(3))]
            for k in 0..<count {
                let sender = senders[k % 2]
                let (route, body): (String, [String: JSON]) =
                    switch k % 4 {
                    case 0: ("send_to_group", ["groupName": .string(r.groups[0]), "data": .string("m\(k)")])
                    case 1: ("send_to_group", ["groupName": .string(r.groups[1]), "data": .string("m\(k)")])
                    case 2: ("send_to_system", ["data": .string("m\(k)")])
                    default: ("send_to_client", ["clientId": .string(r.client.clientId), "data": .string("m\(k)")])
                    }
                let answer = try await sender.call(route, .object(body))
                if answer.status == 200, let id = answer.data?["messageId"]?.string {
                    sent.append(id)
                } else {
                    #expect(route == "send_to_client" && answer.code == 4040, "\(route) during the gap: \(answer)")
                }
            }
            return sent
        }

        static func reconnect(_ r: Resumable, since pos: String? = nil) async throws -> TestWebSocket {
            let balancer = LocalCluster.balancer
            return try await TestWebSocket.connect(
                host: balancer.host, port: balancer.port,
                path: "/ws?systemId=\(r.system.id)&resume=\(r.token)&since=\(pos ?? r.pos)")
        }

        func lossless(_ disruption: Disruption) async throws {
            let r = try await Self.resumable()
            switch disruption {
            case .killNode: try await LocalCluster.control("kill", "node1")
            case .cleanClose: try await r.client.ws.close()
            case .networkCut: try await r.client.ws.channel.close()
            }
            do {
                let sent = try await Self.sendDuringGap(r, count: 100)
                #expect(sent.count >= 75, "every group and system send is taken: \(sent.count)")
                let ws = try await Self.reconnect(r)
                defer { Task { try? await ws.close() } }
                let welcome = try await ws.nextJSON(timeout: .seconds(15))
                #expect(welcome["data"]?["resumed"]?.bool == true, "\(disruption): \(welcome)")
                #expect(welcome["data"]?["recovered"]?.int == sent.count, "\(disruption): \(welcome)")
                let newId = try #require(welcome["data"]?["clientId"]?.string)
                #expect(newId != r.client.clientId)
                var recovered: [String] = []
                for _ in 0..<sent.count {
                    let frame = try await nextNonPresence(ws)
                    #expect(frame["recovered"]?.bool == true, "\(frame)")
                    #expect(frame["pos"]?.string != nil)
                    if let id = frame["messageId"]?.string { recovered.append(id) }
                }
                #expect(recovered == sent, "\(disruption): every message once, in the order sent")
                // Then live: the restored groups and the new ID, not marked recovered.
                let sender = r.system.via(LocalCluster.node(3))
                let live = try #require(try await sender.ok("send_to_group", ["groupName": .string(r.groups[1])])["messageId"]?.string)
                let direct = try await sender.send(to: newId)
                let f1 = try await nextNonPresence(ws)
                let f2 = try await nextNonPresence(ws)
                // Two partitions: no order between them.
                #expect(Set([f1["messageId"]?.string, f2["messageId"]?.string]) == [live, direct])
                #expect(f1["recovered"] == nil && f2["recovered"] == nil)
                try await expectNothingElseBefore(marker: ws, clientId: newId, sys: sender)
                print("cluster resume after \(disruption.rawValue): \(sent.count) recovered")
            } catch {
                if disruption == .killNode { try? await LocalCluster.control("start", "node1") }
                throw error
            }
            if disruption == .killNode { try await LocalCluster.control("start", "node1") }
        }

        @Test("kill -9 the client's node: it resumes through nginx on another node and gets every group, system and old-ID message exactly once, in order, then live ones")
        func afterKill() async throws { try await lossless(.killNode) }

        @Test("the same after a clean close")
        func afterCleanClose() async throws { try await lossless(.cleanClose) }

        @Test("the same after a network cut (the socket dropped, the node alive)")
        func afterNetworkCut() async throws { try await lossless(.networkCut) }

        @Test("sends that go on while the client resumes: each arrives once, recovered or live, in the order sent")
        func sendsDuringTheResume() async throws {
            let r = try await Self.resumable()
            try await r.client.ws.channel.close()
            let sender = r.system.via(LocalCluster.node(2))
            let group = r.groups[0]
            let sending = Task {
                var sent: [String] = []
                for k in 0..<150 {
                    let data = try await sender.ok("send_to_group", ["groupName": .string(group), "data": .number(Double(k))])
                    if let id = data["messageId"]?.string { sent.append(id) }
                }
                return sent
            }
            try await Task.sleep(for: .milliseconds(100))
            let ws = try await Self.reconnect(r)
            defer { Task { try? await ws.close() } }
            let welcome = try await ws.nextJSON(timeout: .seconds(15))
            #expect(welcome["data"]?["resumed"]?.bool == true, "\(welcome)")
            let recoveredCount = try #require(welcome["data"]?["recovered"]?.int)
            let sent = try await sending.value
            var got: [String] = []
            var recovered = 0
            while got.count < sent.count {
                guard let frame = try? await nextNonPresence(ws) else {
                    Issue.record("\(got.count) of \(sent.count) arrived (\(recovered) of \(recoveredCount) recovered); missing \(sent.filter { !got.contains($0) }.prefix(5)); got \(got.prefix(3))…; sent \(sent.prefix(3))…")
                    return
                }
                if frame["recovered"]?.bool == true {
                    recovered += 1
                    #expect(got.count == recovered - 1, "recovered frames come before live ones")
                }
                if let id = frame["messageId"]?.string { got.append(id) }
            }
            #expect(recovered == recoveredCount)
            #expect(got == sent, "none missed, none twice, in order (\(recoveredCount) recovered)")
            print("cluster resume while sending: \(recoveredCount) recovered, \(sent.count - recoveredCount) live")
        }

        @Test("a client that read no push resumes on another node from its session frame's pos")
        func fromTheSessionPosition() async throws {
            let system = try await LocalCluster.registerSystem()
            let node1 = LocalCluster.node(1)
            let ws = try await TestWebSocket.connect(host: node1.host, port: node1.port, path: "/ws?systemId=\(system.id)")
            ws.flags.sessionFrames.store(true, ordering: .relaxed)
            let clientId = try #require(try await ws.nextJSON()["data"]?["clientId"]?.string)
            let first = try await ws.nextJSON()
            #expect(first["data"]?["pos"]?.string != nil, "\(first)")
            let group = unique("g")
            let sender = system.via(LocalCluster.node(3))
            try await sender.bind(clientId, group: group)
            let bound = try await nextNonPresence(ws)
            let token = try #require(bound["data"]?["session"]?.string, "\(bound)")
            let pos = try #require(bound["data"]?["pos"]?.string, "\(bound)")
            try await ws.channel.close()
            let missed = try #require(try await sender.ok("send_to_group", ["groupName": .string(group)])["messageId"]?.string)
            let node2 = LocalCluster.node(2)
            let again = try await TestWebSocket.connect(
                host: node2.host, port: node2.port, path: "/ws?systemId=\(system.id)&resume=\(token)&since=\(pos)")
            defer { Task { try? await again.close() } }
            let welcome = try await again.nextJSON(timeout: .seconds(15))
            #expect(welcome["data"]?["resumed"]?.bool == true, "\(welcome)")
            // Recovered, or live when node2 had not read it yet as the client joined: once either way.
            let count = try #require(welcome["data"]?["recovered"]?.int)
            #expect(count <= 1)
            let frame = try await nextNonPresence(again)
            #expect(frame["messageId"]?.string == missed, "\(frame)")
            #expect((frame["recovered"]?.bool == true) == (count == 1), "marked recovered exactly when counted: \(frame)")
            try await expectNothingElseBefore(marker: again, clientId: try #require(welcome["data"]?["clientId"]?.string), sys: sender)
        }

        @Test("a position older than the window, or more to recover than --resume-max-messages: resumed false, no groups")
        func bounds() async throws {
            let r = try await Self.resumable()
            try await r.client.ws.close()
            // A position claiming to be from before the window (120 s on the local cluster).
            var old = try #require(LogCut(encoded: r.pos))
            old.at -= 200_000
            let stale = try await Self.reconnect(r, since: old.encoded)
            let w1 = try await stale.nextJSON(timeout: .seconds(15))
            #expect(w1["data"]?["resumed"]?.bool == false, "\(w1)")
            #expect(w1["data"]?["reason"]?.string == "window exceeded", "\(w1)")
            try await stale.close()
            // 1,001 to recover: over the cap of 1,000. What a node has not delivered when the
            // client joins its stream comes live, not recovered: a watcher on every node bound
            // to the group sees a marker after the 1,001 first.
            let sender = r.system.via(LocalCluster.node(2))
            var watchers: [ConnectedClient] = []
            for node in LocalCluster.nodes {
                let watcher = try await r.system.via(node).connect()
                try await sender.bind(watcher.clientId, group: r.groups[0])
                watchers.append(watcher)
            }
            defer { for watcher in watchers { Task { try? await watcher.ws.close() } } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for k in stride(from: worker, to: 1001, by: 8) {
                            try await sender.ok("send_to_group", ["groupName": .string(r.groups[0]), "data": .number(Double(k))])
                        }
                    }
                }
                try await group.waitForAll()
            }
            let marker = try #require(try await sender.ok("send_to_group", ["groupName": .string(r.groups[0])])["messageId"]?.string)
            for watcher in watchers {
                var seen = 0
                while try await nextNonPresence(watcher.ws)["messageId"]?.string != marker { seen += 1 }
                #expect(seen == 1001)
            }
            let ws = try await Self.reconnect(r)
            defer { Task { try? await ws.close() } }
            let w2 = try await ws.nextJSON(timeout: .seconds(15))
            #expect(w2["data"]?["resumed"]?.bool == false, "\(w2)")
            #expect(w2["data"]?["reason"]?.string == "too many messages", "\(w2)")

            // Not resumed: a fresh connection, not in the old groups.
            let newId = try #require(w2["data"]?["clientId"]?.string)
            _ = try await sender.ok("send_to_group", ["groupName": .string(r.groups[0])])
            let direct = try await sender.send(to: newId)
            #expect(try await nextNonPresence(ws)["messageId"]?.string == direct)
        }
    }
}
