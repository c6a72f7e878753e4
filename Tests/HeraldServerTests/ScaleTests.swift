import HeraldTestSupport
import Foundation
import Synchronization
import Testing

final class FilterSwitch: Sendable {
    let onlyMarker = Atomic<Bool>(false)
}

@Suite(
    "Scale: 1,000 clients in one group",
    // Fan-out correctness, not the slow-consumer policy (tested in LimitsTests): generous idle timeout and
    // queue bound so a loaded 2-core machine running a debug build does not turn this into a timing test.
    .herald(["--idle-timeout", "300", "--outbound-queue", "4096"]))
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
        let t0 = ContinuousClock.now
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
        print("scale: \(clients.count) clients connected after \(ContinuousClock.now - t0)")
        #expect(clients.count == total)
        #expect(Set(clients.map(\.clientId)).count == total, "client IDs must be unique")
        filter.onlyMarker.store(true, ordering: .relaxed)

        let g = unique("big")
        // Bind all clients, 16 calls in flight at a time.
        let slowest = try await withThrowingTaskGroup(of: (Int, Duration).self) { group in
            var next = 0
            func bindNext() {
                let c = clients[next]
                let i = next
                next += 1
                group.addTask {
                    let t = ContinuousClock.now
                    try await sys.bind(c.clientId, group: g, timeout: .seconds(60))
                    return (i, ContinuousClock.now - t)
                }
            }
            for _ in 0..<16 { bindNext() }
            var slowest: (Int, Duration) = (0, .zero)
            while let (i, d) = try await group.next() {
                if d > slowest.1 { slowest = (i, d) }
                if next < clients.count { bindNext() }
            }
            return slowest
        }
        print("scale: slowest bind was #\(slowest.0) taking \(slowest.1)")
        print("scale: all bound after \(ContinuousClock.now - t0)")
        let list = try await sys.ok("get_online_list", ["groupName": .string(g)], timeout: .seconds(60))
        #expect(list["count"]?.int == total)

        let r = try await sys.call(
            "send_to_group", ["groupName": .string(g), "msg": .string(marker)], timeout: .seconds(60))
        expectSuccess(r)
        let m = try #require(r.data?["messageId"]?.string)

        let outcomes = try await withThrowingTaskGroup(of: String.self) { group in
            for c in clients {
                group.addTask {
                    do {
                        let f = try await c.ws.nextJSON(timeout: .seconds(60))
                        return f["messageId"]?.string == m && f["groupName"]?.string == g ? "ok" : "wrong frame"
                    } catch let e as WebSocketClosedError {
                        return "closed: \(e.event)"
                    } catch {
                        return "error: \(error)"
                    }
                }
            }
            var counts: [String: Int] = [:]
            for try await o in group { counts[o, default: 0] += 1 }
            return counts
        }
        let received = outcomes["ok"] ?? 0
        print("scale: \(received) received after \(ContinuousClock.now - t0); outcomes \(outcomes)")
        #expect(received == total, "only \(received) of \(total) clients got the group message: \(outcomes)")

        await withTaskGroup(of: Void.self) { group in
            for c in clients { group.addTask { await c.ws.abort() } }
        }
    }
}
