import Foundation
import HeraldTestSupport
import Testing

/// Lifecycle events on the cluster (docs/lifecycle.md): each node sends its clients' events
/// to herald.lifecycle; /admin/events on any node reads them back from Kafka.
extension ClusterSuite {
    @Suite("Cluster lifecycle events")
    struct ClusterLifecycleTests {
        @Test("connect, bind, unbind, close_client and a client's close on one node, read from Kafka through another, valid against the schema")
        func eventsThroughKafka() async throws {
            let system = try await LocalCluster.registerSystem()
            let a = try await system.via(LocalCluster.node(1)).connect()
            let sender = system.via(LocalCluster.node(2))
            let g = unique("g")
            try await sender.bind(a.clientId, group: g)
            try await sender.ok("unbind_from_group", ["clientId": .string(a.clientId), "groupName": .string(g)])
            try await sender.ok("close_client", ["clientId": .string(a.clientId)])
            _ = try await a.ws.waitForClose(timeout: .seconds(5))
            let b = try await system.via(LocalCluster.node(3)).connect()
            try await b.ws.close()
            let events = try await LifecycleChecks.events(LocalCluster.node(2), system.id, count: 6, timeout: .seconds(20))
            let (ida, idb) = (a.clientId.prefix(8), b.clientId.prefix(8))
            // Two nodes' events: each node's in order; across nodes, by time.
            let fromA = LifecycleChecks.summary(events.filter { $0["clientId"]?.string == a.clientId })
            #expect(fromA == ["connected \(ida)", "bound \(ida) \(g)", "unbound \(ida) \(g)", "disconnected \(ida) closed_by_api"])
            let fromB = LifecycleChecks.summary(events.filter { $0["clientId"]?.string == b.clientId })
            #expect(fromB == ["connected \(idb)", "disconnected \(idb) client_closed"])
            #expect(events.filter { $0["clientId"]?.string == a.clientId }.allSatisfy { $0["node"]?.string == "node1" })
            #expect(events.filter { $0["clientId"]?.string == b.clientId }.allSatisfy { $0["node"]?.string == "node3" })
            try LifecycleChecks.expectValid(events)
        }

        @Test("a client that stops reading while sends cross Kafka to it is closed 1013 and reported slow_consumer")
        func slowConsumer() async throws {
            let system = try await LocalCluster.registerSystem()
            let slow = try await system.via(LocalCluster.node(1)).connect(receiveBufferSize: 32 * 1024)
            try await slow.ws.pauseReading()
            // Sent through node2: each push crosses Kafka to node1, whose queue for the client
            // (8 MiB) overflows.
            let sender = system.via(LocalCluster.node(2))
            let payload = String(repeating: "z", count: 200 * 1024)
            for _ in 0..<80 {
                let r = try await sender.call("send_to_client", ["clientId": .string(slow.clientId), "data": .string(payload)])
                if r.code != 0 { break }
            }
            try await slow.ws.resumeReading()
            _ = try? await slow.ws.waitForCloseEvent(timeout: .seconds(20))
            let events = try await LifecycleChecks.events(LocalCluster.node(3), system.id, count: 2, timeout: .seconds(20))
            let id = slow.clientId.prefix(8)
            #expect(LifecycleChecks.summary(events) == ["connected \(id)", "disconnected \(id) slow_consumer"])
            try LifecycleChecks.expectValid(events)
        }

        @Test("a graceful shutdown gives disconnected node_shutdown for each of the node's clients")
        func gracefulShutdown() async throws {
            let system = try await LocalCluster.registerSystem()
            var clients: [ConnectedClient] = []
            for _ in 0..<5 { clients.append(try await system.via(LocalCluster.node(3)).connect()) }
            try await LocalCluster.control("stop", "node3")
            do {
                let events = try await LifecycleChecks.events(LocalCluster.node(1), system.id, count: 10, timeout: .seconds(20))
                let ends = events.filter { $0["event"]?.string == "disconnected" }
                #expect(ends.count == 5, "\(LifecycleChecks.summary(events))")
                #expect(ends.allSatisfy { $0["reason"]?.string == "node_shutdown" })
                #expect(Set(ends.compactMap { $0["clientId"]?.string }) == Set(clients.map(\.clientId)))
            } catch {
                try? await LocalCluster.control("start", "node3")
                throw error
            }
            try await LocalCluster.control("start", "node3")
        }

        @Test("herald events prints a system's events from Kafka, and --follow prints new ones as they come")
        func eventsCommand() async throws {
            let system = try await LocalCluster.registerSystem()
            let other = try await LocalCluster.registerSystem()
            for node in 1...2 {
                let c = try await system.via(LocalCluster.node(node)).connect()
                try await c.ws.close()
            }
            let noise = try await other.via(LocalCluster.node(3)).connect()
            try await noise.ws.close()
            let recorded = try await LifecycleChecks.events(LocalCluster.node(1), system.id, count: 4)
            let clean = ProcessInfo.processInfo.environment.filter { $0.key != "HERALD_KAFKA" }
            let printed = try await runHerald(
                ["events", "--kafka", "127.0.0.1:9092", "--system", system.id, "--since", "-10m"], timeout: .seconds(30),
                environment: clean)
            #expect(printed.status == 0, "\(printed.stderr)")
            let lines = printed.stdout.split(separator: "\n").compactMap { try? JSONDecoder().decode(JSON.self, from: Data($0.utf8)) }
            #expect(lines.compactMap { $0["eventId"]?.string } == recorded.compactMap { $0["eventId"]?.string })
            #expect(lines.count == 4 && lines.allSatisfy { $0["systemId"]?.string == system.id })
            // --follow: a client that connects while it runs shows up.
            let late = Task {
                try await Task.sleep(for: .seconds(4))
                return try await system.via(LocalCluster.node(3)).connect()
            }
            let followed = try await runHerald(
                ["events", "--kafka", "127.0.0.1:9092", "--system", system.id, "--follow"], timeout: .seconds(9), environment: clean)
            let client = try await late.value
            #expect(followed.timedOut, "--follow runs until stopped")
            let followedLines = followed.stdout.split(separator: "\n").compactMap { try? JSONDecoder().decode(JSON.self, from: Data($0.utf8)) }
            #expect(followedLines.map { "\($0["event"]?.string ?? "") \($0["clientId"]?.string ?? "")" } == ["connected \(client.clientId)"])
            try await client.ws.close()
        }

        /// A counter of a node's /metrics.
        static func metric(_ node: RemoteHerald, _ name: String) async throws -> Int {
            let r = try await node.api.adminGet("/metrics")
            let line = r.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        }

        @Test("kill -9 of a node holding 50 clients: exactly one survivor reports each of them node_lost, and no client that had left, within lease TTL + 5 s")
        func killedNode() async throws {
            let system = try await LocalCluster.registerSystem()
            let node3 = LocalCluster.node(3)
            // Some clients are in the node's snapshot, some only in its events since.
            var held: [ConnectedClient] = []
            for _ in 0..<30 { held.append(try await system.via(node3).connect()) }
            var left: [String] = []
            for _ in 0..<3 {
                let c = try await system.via(node3).connect()
                try await c.ws.close()
                left.append(c.clientId)
            }
            let snapshots = try await Self.metric(node3, "herald_lifecycle_snapshots_total")
            _ = try await LocalCluster.eventually("a lifecycle snapshot of node3", timeout: .seconds(30)) {
                try await Self.metric(node3, "herald_lifecycle_snapshots_total") > snapshots
            }
            for _ in 0..<22 { held.append(try await system.via(node3).connect()) }
            for c in held.prefix(2) {
                try await c.ws.close()
                left.append(c.clientId)
            }
            let live = Set(held.dropFirst(2).map(\.clientId))
            #expect(live.count == 50)
            // Every event of theirs is in Kafka before the kill (the kill is of a process, not of
            // what it sent).
            _ = try await LifecycleChecks.events(LocalCluster.node(1), system.id, count: 55 + 5, timeout: .seconds(20))
            let killed = ContinuousClock.now
            try await LocalCluster.control("kill", "node3")
            do {
                let took = try await LocalCluster.eventually("50 node_lost events", timeout: .seconds(30), every: .milliseconds(100)) {
                    let events = try await LifecycleChecks.events(LocalCluster.node(1), system.id)
                    return events.filter { $0["reason"]?.string == "node_lost" }.count >= 50
                }
                let sinceKill = ContinuousClock.now - killed
                // Let a second reporter, if there were one, show itself.
                try await Task.sleep(for: .seconds(3))
                let events = try await LifecycleChecks.events(LocalCluster.node(1), system.id)
                let lost = events.filter { $0["reason"]?.string == "node_lost" }
                print("node_lost: 50 events \(sinceKill) after kill -9 (lease TTL 10 s; polled every 100 ms, \(took) of waiting)")
                #expect(sinceKill < .seconds(15), "node_lost took \(sinceKill), more than TTL + 5 s")
                #expect(lost.count == 50, "\(lost.count) node_lost events")
                #expect(Set(lost.compactMap { $0["clientId"]?.string }) == live)
                #expect(Set(lost.compactMap { $0["reportedBy"]?.string }).count == 1)
                #expect(lost.allSatisfy { ["node1", "node2"].contains($0["reportedBy"]?.string ?? "") })
                #expect(lost.allSatisfy { $0["node"]?.string == "node3" && $0["event"]?.string == "disconnected" })
                #expect(Set(lost.compactMap { $0["eventId"]?.string }).count == 50)
                #expect(lost.allSatisfy { !left.contains($0["clientId"]?.string ?? "") })
                try LifecycleChecks.expectValid(lost)
            } catch {
                try? await LocalCluster.control("start", "node3")
                throw error
            }
            try await LocalCluster.control("start", "node3")
        }
    }
}

/// Webhooks on the cluster: the nodes share herald.lifecycle through one consumer group, so
/// each event is POSTed by one node, and a dead node's share moves to the others.
extension ClusterSuite {
    @Suite("Cluster webhooks")
    struct ClusterWebhookTests {
        /// Connects and closes `count` clients on `node`: 2 events each.
        static func churn(_ system: TestSystem, on node: Int, _ count: Int) async throws -> [String] {
            var ids: [String] = []
            for _ in 0..<count {
                let c = try await system.via(LocalCluster.node(node)).connect()
                try await c.ws.close()
                ids.append(c.clientId)
            }
            return ids
        }

        static func distinct(_ events: [JSON]) -> Set<String> { Set(events.compactMap { $0["eventId"]?.string }) }

        static func awaitDistinct(_ receiver: WebhookReceiver, _ count: Int, timeout: Duration) async throws -> Duration {
            try await LocalCluster.eventually("\(count) distinct webhook events", timeout: timeout, every: .milliseconds(50)) {
                distinct(receiver.acceptedEvents).count >= count
            }
        }

        @Test("events of clients on all three nodes reach the system's webhook, signed, each once after deduplication, through a spell of 500s")
        func acrossTheCluster() async throws {
            let receiver = try await WebhookReceiver.start()
            defer { Task { await receiver.shutdown() } }
            let secret = "hook-\(UUID().uuidString)"
            let system = try await LocalCluster.balancer.api.registerSystem(secret: secret, webhook: receiver.url)
            receiver.setMode(.answer(500))
            let g = unique("g")
            var ids: [String] = []
            for node in 1...3 {
                let c = try await system.via(LocalCluster.node(node)).connect()
                try await system.via(LocalCluster.node(node % 3 + 1)).bind(c.clientId, group: g)
                try await c.ws.close()
                ids.append(c.clientId)
                ids += try await Self.churn(system, on: node, 3)
            }
            // 12 connected, 3 bound, 12 disconnected.
            // Tried while the receiver fails (after a node's restart in an earlier test the group
            // may still be rebalancing: its first POST can take a few seconds).
            _ = try await LocalCluster.eventually("a POST answered 500", timeout: .seconds(30)) {
                receiver.deliveries.filter { $0.answered == 500 }.count >= 2
            }
            receiver.setMode(.answer(200))
            let took = try await Self.awaitDistinct(receiver, 27, timeout: .seconds(30))
            let accepted = receiver.acceptedEvents
            let recorded = try await LifecycleChecks.events(LocalCluster.node(2), system.id, count: 27)
            #expect(Self.distinct(accepted) == Self.distinct(recorded), "the webhook got exactly the recorded events")
            #expect(Set(accepted.compactMap { $0["clientId"]?.string }) == Set(ids))
            #expect(receiver.deliveries.allSatisfy { WebhookReceiver.signatureIsValid($0, secret: secret) })
            // One system's events are one partition's: one node delivers them.
            #expect(Set(receiver.deliveries.compactMap(\.node)).count == 1, "\(Set(receiver.deliveries.compactMap(\.node)))")
            print("webhooks: 27 events delivered \(took) after the receiver recovered; \(accepted.count - 27) repeated; POSTs: \(receiver.deliveries.map { "\($0.node ?? "?"):\($0.answered ?? 0):\($0.body.count)" })")
            try LifecycleChecks.expectValid(accepted)
        }

        @Test("kill -9 of the node that delivers a system's webhook: another node takes its share and every event still arrives")
        func deliveringNodeDies() async throws {
            let receiver = try await WebhookReceiver.start()
            defer { Task { await receiver.shutdown() } }
            let system = try await LocalCluster.balancer.api.registerSystem(secret: "hook-\(UUID().uuidString)", webhook: receiver.url)
            _ = try await Self.churn(system, on: 1, 1)
            _ = try await Self.awaitDistinct(receiver, 2, timeout: .seconds(30))
            let owner = try #require(receiver.deliveries.last?.node)
            let ownerNumber = try #require(Int(owner.dropFirst("node".count)))
            let others = [1, 2, 3].filter { $0 != ownerNumber }
            // The owner cannot deliver now: its batches fail and wait, then it dies.
            receiver.setMode(.answer(503))
            for node in others { _ = try await Self.churn(system, on: node, 3) }
            try await Task.sleep(for: .milliseconds(500))
            try await LocalCluster.control("kill", owner)
            do {
                let killed = ContinuousClock.now
                receiver.setMode(.answer(200))
                let took = try await Self.awaitDistinct(receiver, 2 + 12, timeout: .seconds(40))
                let late = receiver.deliveries.filter { $0.answered == 200 && $0.at > killed }.compactMap(\.node)
                #expect(!late.isEmpty && !late.contains(owner), "delivered after the kill by \(Set(late))")
                let recorded = try await LifecycleChecks.events(LocalCluster.node(others[0]), system.id, count: 14)
                #expect(Self.distinct(receiver.acceptedEvents) == Self.distinct(recorded))
                print("webhooks: the dead node's share moved; all 14 events \(ContinuousClock.now - killed) after kill -9 (\(took) of waiting)")
            } catch {
                try? await LocalCluster.control("start", owner)
                throw error
            }
            try await LocalCluster.control("start", owner)
        }
    }
}
