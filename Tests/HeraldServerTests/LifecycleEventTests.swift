import Foundation
import HeraldTestSupport
import Testing

/// The events a system's clients give (docs/lifecycle.md), read back through /admin/events.
@Suite("Lifecycle events, standalone", .herald(["--admin-token", testAdminToken, "--outbound-queue", "8"]))
struct LifecycleEventTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("connect, bind, unbind, close_client, a client's own close and a slow consumer give exactly their events, valid against the schema")
    func eachCauseGivesItsEvent() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect(userId: "ann")
        let g = unique("g")
        try await sys.bind(a.clientId, group: g)
        try await sys.ok("unbind_from_group", ["clientId": .string(a.clientId), "groupName": .string(g)])
        // Binding twice changes nothing the second time: no second event.
        try await sys.bind(a.clientId, group: g)
        try await sys.bind(a.clientId, group: g)
        try await sys.ok("close_client", ["clientId": .string(a.clientId)])
        _ = try await a.ws.waitForClose(timeout: .seconds(5))
        let b = try await sys.connect()
        try await b.ws.close()
        // A client that stops reading: closed 1013 once its queue (8 frames) overflows.
        let slow = try await sys.connect(receiveBufferSize: 32 * 1024)
        try await slow.ws.pauseReading()
        let payload = String(repeating: "z", count: 200 * 1024)
        for _ in 0..<60 {
            let r = try await sys.call("send_to_client", ["clientId": .string(slow.clientId), "data": .string(payload)])
            if r.code != 0 { break }
        }
        try await slow.ws.resumeReading()
        _ = try? await slow.ws.waitForCloseEvent(timeout: .seconds(20))

        let events = try await LifecycleChecks.events(server, sys.id, count: 9)
        let (ida, idb, ids) = (a.clientId.prefix(8), b.clientId.prefix(8), slow.clientId.prefix(8))
        #expect(
            LifecycleChecks.summary(events) == [
                "connected \(ida)", "bound \(ida) \(g)", "unbound \(ida) \(g)", "bound \(ida) \(g)",
                "disconnected \(ida) closed_by_api", "connected \(idb)", "disconnected \(idb) client_closed", "connected \(ids)",
                "disconnected \(ids) slow_consumer",
            ])
        #expect(events.allSatisfy { $0["systemId"]?.string == sys.id })
        #expect(events.first?["userId"]?.string == "ann" || events.first?["userId"]?.string == "", "\(events.first ?? .null)")
        #expect(Set(events.compactMap { $0["eventId"]?.string }).count == events.count, "event IDs are unique")
        try LifecycleChecks.expectValid(events)
    }

    @Test("a granted resume gives resumed with the old client ID; a refused one gives connected")
    func resumes() async throws {
        let sys = try await server.api.registerSystem()
        let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)")
        ws.flags.sessionFrames.store(true, ordering: .relaxed)
        let old = try #require(try await ws.nextJSON()["data"]?["clientId"]?.string)
        let session = try await ws.nextJSON()
        let token = try #require(session["data"]?["session"]?.string)
        let pos = try #require(session["data"]?["pos"]?.string)
        try await ws.close()
        try await waitOffline(sys, old)
        let again = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)&resume=\(token)&since=\(pos)")
        let welcome = try await again.nextJSON()
        #expect(welcome["data"]?["resumed"]?.bool == true)
        let new = try #require(welcome["data"]?["clientId"]?.string)
        let refused = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)&resume=forged&since=\(pos)")
        let refusedId = try #require(try await refused.nextJSON()["data"]?["clientId"]?.string)
        try await again.close()
        try await refused.close()
        let events = try await LifecycleChecks.events(server, sys.id, count: 6)
        let resumed = try #require(events.first { $0["event"]?.string == "resumed" })
        #expect(resumed["clientId"]?.string == new)
        #expect(resumed["oldClientId"]?.string == old)
        #expect(events.contains { $0["event"]?.string == "connected" && $0["clientId"]?.string == refusedId })
        #expect(events.filter { $0["event"]?.string == "disconnected" }.count == 3)
        try LifecycleChecks.expectValid(events)
    }

    @Test("/admin/events needs the admin token, a valid systemId and a limit of 1 to 1,000")
    func adminRoute() async throws {
        let unauthorized = try await server.api.get("/admin/events?systemId=s")
        #expect(unauthorized.status == 401)
        for bad in ["/admin/events", "/admin/events?systemId=a%20b", "/admin/events?systemId=s&limit=0", "/admin/events?systemId=s&limit=1001"] {
            let r = try await server.api.adminGet(bad)
            #expect(r.status == 400 && r.code == 4000, "\(bad): \(r)")
        }
        let none = try await server.api.adminGet("/admin/events?systemId=nobody-here&limit=5")
        #expect(none.status == 200 && none.data == .array([]))
    }
}

@Suite("Lifecycle events: idle timeout", .herald(["--admin-token", testAdminToken, "--idle-timeout", "2"]))
struct LifecycleIdleTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("a client closed for --idle-timeout gives disconnected with reason idle_timeout")
    func idle() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        _ = try await c.ws.waitForClose(timeout: .seconds(8))
        let events = try await LifecycleChecks.events(server, sys.id, count: 2)
        #expect(LifecycleChecks.summary(events) == ["connected \(c.clientId.prefix(8))", "disconnected \(c.clientId.prefix(8)) idle_timeout"])
        try LifecycleChecks.expectValid(events)
    }
}
