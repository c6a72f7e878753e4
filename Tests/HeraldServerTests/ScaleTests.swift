import Foundation
import Synchronization
import Testing

final class FilterSwitch: Sendable {
    let onlyMarker = Atomic<Bool>(false)
}

@Suite("Scale: 1,000 clients in one group", .herald())
struct ScaleTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("1,000 connected clients bound to one group each receive one group message")
    func thousandClients() async throws {
        let server = try self.server
        let sys = try await server.api.registerSystem()
        let marker = unique("scale-marker")
        let filter = FilterSwitch()
        let total = 1000
        let batch = 100
        var clients: [ConnectedClient] = []
        clients.reserveCapacity(total)

        for _ in 0..<(total / batch) {
            let connected = try await withThrowingTaskGroup(of: ConnectedClient.self) { group in
                for _ in 0..<batch {
                    group.addTask {
                        let ws = try await TestWebSocket.connect(
                            host: server.host, port: server.port, path: "/ws?systemId=\(sys.id)",
                            textFilter: { text in !filter.onlyMarker.load(ordering: .relaxed) || text.contains(marker) })
                        let first = try await ws.nextJSON(timeout: .seconds(15))
                        guard let id = first["data"]?["clientId"]?.string else {
                            await ws.abort()
                            throw HeraldLaunchError(description: "bad first frame \(first)")
                        }
                        return ConnectedClient(ws: ws, clientId: id)
                    }
                }
                var out: [ConnectedClient] = []
                for try await c in group { out.append(c) }
                return out
            }
            clients += connected
        }
        #expect(clients.count == total)
        #expect(Set(clients.map(\.clientId)).count == total, "client IDs must be unique")
        filter.onlyMarker.store(true, ordering: .relaxed)

        let g = unique("big")
        // Bind all clients, 16 calls in flight at a time.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<16 {
                let c = clients[next]
                next += 1
                group.addTask { try await sys.bind(c.clientId, group: g) }
            }
            while try await group.next() != nil {
                if next < clients.count {
                    let c = clients[next]
                    next += 1
                    group.addTask { try await sys.bind(c.clientId, group: g) }
                }
            }
        }
        let list = try await sys.ok("get_online_list", ["groupName": .string(g)])
        #expect(list["count"]?.int == total)

        let r = try await sys.call("send_to_group", ["groupName": .string(g), "msg": .string(marker)])
        expectSuccess(r)
        let m = try #require(r.data?["messageId"]?.string)

        let received = try await withThrowingTaskGroup(of: Bool.self) { group in
            for c in clients {
                group.addTask {
                    guard let f = try? await c.ws.nextJSON(timeout: .seconds(60)) else { return false }
                    return f["messageId"]?.string == m && f["groupName"]?.string == g
                }
            }
            var n = 0
            for try await ok in group where ok { n += 1 }
            return n
        }
        #expect(received == total, "only \(received) of \(total) clients got the group message")

        await withTaskGroup(of: Void.self) { group in
            for c in clients { group.addTask { await c.ws.abort() } }
        }
    }
}
