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
    }
}
