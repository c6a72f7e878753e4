import HeraldTestSupport
import Foundation
import Testing

@Suite("Sending: client, clients, group, system, idempotency", .herald(["--admin-token", testAdminToken]))
struct SendTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("send_to_client: answer {messageId}; push frame has the defaults and ts, no groupName")
    func sendToClientDefaults() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let before = Date().timeIntervalSince1970 * 1000
        let r = try await sys.call("send_to_client", ["clientId": .string(c.clientId)])
        expectSuccess(r)
        let m = try #require(r.data?["messageId"]?.string, "\(r)")
        #expect(!m.isEmpty)
        let f = try await c.ws.nextJSON()
        #expect(f["messageId"]?.string == m)
        #expect(f["sendUserId"]?.string == "")
        #expect(f["code"]?.int == 0)
        #expect(f["msg"]?.string == "")
        #expect(f.object?.keys.contains("data") == true, "data key missing: \(f)")
        #expect(f["data"] == .null)
        #expect(f["groupName"] == nil, "unicast frame must not carry groupName: \(f)")
        let ts = try #require(f["ts"]?.double, "ts missing: \(f)")
        let after = Date().timeIntervalSince1970 * 1000
        #expect(ts >= before - 2000 && ts <= after + 2000, "ts \(ts) is not ms since epoch of the send")
    }

    @Test("send_to_client carries sendUserId, code and msg")
    func sendToClientFields() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let m = try await sys.send(to: c.clientId, ["sendUserId": "alice", "code": 1234, "msg": "hello ✓"])
        let f = try await c.ws.nextJSON()
        #expect(f["messageId"]?.string == m)
        #expect(f["sendUserId"]?.string == "alice")
        #expect(f["code"]?.int == 1234)
        #expect(f["msg"]?.string == "hello ✓")
    }

    @Test("data reaches the client as the same JSON value (string, number, object, array, null, bool)")
    func dataRoundTrip() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let values: [JSON] = [
            "plain text", 42, 3.25, -7, true, .null,
            ["a": 1, "b": [true, .null, "x"], "c": ["d": 2.5]],
            [1, "two", ["three": 3], []],
            [:],
            "{\"looks\":\"like json\"}",
        ]
        for v in values {
            let m = try await sys.send(to: c.clientId, ["data": v])
            let f = try await c.ws.nextJSON()
            #expect(f["messageId"]?.string == m)
            #expect(f["data"] == v, "sent \(v), received \(f["data"] ?? .null)")
        }
    }

    @Test("send_to_client errors: malformed 4001, tampered 4001, other system 4030, offline 4040")
    func sendToClientErrors() async throws {
        let sys = try await server.api.registerSystem()
        let other = try await server.api.registerSystem()
        let c = try await sys.connect()
        let o = try await other.connect()
        defer { Task { try? await o.ws.close() } }

        for bad in ["not-a-client-id", "AAAA", String(repeating: "A", count: 200), "!!!***"] {
            expectFailure(try await sys.call("send_to_client", ["clientId": .string(bad)]), status: 400, code: 4001)
        }
        expectFailure(
            try await sys.call("send_to_client", ["clientId": .string(tamper(c.clientId))]), status: 400, code: 4001)
        expectFailure(
            try await sys.call("send_to_client", ["clientId": .string(o.clientId), "msg": "x"]), status: 403,
            code: 4030)
        // Nothing reached the other system's client.
        try await expectNothingElseBefore(marker: o.ws, clientId: o.clientId, sys: other)

        try await c.ws.close()
        try await waitOffline(sys, c.clientId)
        expectFailure(try await sys.call("send_to_client", ["clientId": .string(c.clientId)]), status: 404, code: 4040)
        try await expectStillServing(sys)
    }

    @Test("send_to_clients: {messageId, failed:[{clientId,code,msg}]}, code 0 even with failures")
    func sendToClients() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        let gone = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close() } }
        try await gone.ws.close()
        try await waitOffline(sys, gone.clientId)
        let tampered = tamper(a.clientId)

        let all = try await sys.call(
            "send_to_clients",
            ["clientIds": [.string(a.clientId), .string(b.clientId)], "msg": "both", "data": ["k": "v"]])
        expectSuccess(all)
        let m1 = try #require(all.data?["messageId"]?.string)
        #expect(all.data?["failed"] == [], "no failures expected: \(all)")
        for ws in [a.ws, b.ws] {
            let f = try await ws.nextJSON()
            #expect(f["messageId"]?.string == m1)
            #expect(f["msg"]?.string == "both")
            #expect(f["data"] == ["k": "v"])
        }

        let mixed = try await sys.call(
            "send_to_clients",
            ["clientIds": [.string(a.clientId), .string(gone.clientId), .string(tampered), .string(b.clientId)]])
        expectSuccess(mixed)
        let m2 = try #require(mixed.data?["messageId"]?.string)
        let failed = try #require(mixed.data?["failed"]?.array, "\(mixed)")
        #expect(failed.count == 2, "\(mixed)")
        let byId = Dictionary(failed.compactMap { f in f["clientId"]?.string.map { ($0, f) } }, uniquingKeysWith: { a, _ in a })
        #expect(byId[gone.clientId]?["code"]?.int == 4040, "\(mixed)")
        #expect(byId[tampered]?["code"]?.int == 4001, "\(mixed)")
        #expect(failed.allSatisfy { $0["msg"]?.string != nil }, "each failure has a msg: \(mixed)")
        for ws in [a.ws, b.ws] {
            #expect(try await ws.nextJSON()["messageId"]?.string == m2)
        }

        let empty = try await sys.call("send_to_clients", ["clientIds": []])
        #expect(empty.status == 200 || empty.status == 400, "\(empty)")
    }

    @Test("send_to_group reaches the members only, with groupName; an empty group still succeeds")
    func sendToGroup() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        let outsider = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close(); try? await outsider.ws.close() } }
        let g = unique("g")
        try await sys.bind(a.clientId, group: g)
        try await sys.bind(b.clientId, group: g)

        let r = try await sys.call("send_to_group", ["groupName": .string(g), "sendUserId": "bob", "data": [1, 2]])
        expectSuccess(r)
        let m = try #require(r.data?["messageId"]?.string)
        for ws in [a.ws, b.ws] {
            let f = try await nextNonPresence(ws)
            #expect(f["messageId"]?.string == m)
            #expect(f["groupName"]?.string == g)
            #expect(f["sendUserId"]?.string == "bob")
            #expect(f["data"] == [1, 2])
            #expect(f["ts"]?.double != nil)
        }
        try await expectNothingElseBefore(marker: outsider.ws, clientId: outsider.clientId, sys: sys)

        let empty = try await sys.call("send_to_group", ["groupName": .string(unique("nobody")), "msg": "x"])
        expectSuccess(empty)
        #expect(empty.data?["messageId"]?.string != nil)
    }

    @Test("send_to_system reaches every client of that system and no other system")
    func sendToSystem() async throws {
        let sys = try await server.api.registerSystem()
        let other = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        let o = try await other.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close(); try? await o.ws.close() } }
        let r = try await sys.call("send_to_system", ["msg": "all", "code": 7, "data": "everyone"])
        expectSuccess(r)
        let m = try #require(r.data?["messageId"]?.string)
        for ws in [a.ws, b.ws] {
            let f = try await ws.nextJSON()
            #expect(f["messageId"]?.string == m)
            #expect(f["msg"]?.string == "all")
            #expect(f["code"]?.int == 7)
            #expect(f["data"] == "everyone")
        }
        try await expectNothingElseBefore(marker: o.ws, clientId: o.clientId, sys: other)
    }

    @Test("Idempotency-Key: the repeat returns the identical body and the client gets one frame")
    func idempotency() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let key = [("Idempotency-Key", UUID().uuidString)]
        let body: JSON = ["clientId": .string(c.clientId), "msg": "once"]
        let first = try await sys.call("send_to_client", body, headers: key)
        let second = try await sys.call("send_to_client", body, headers: key)
        expectSuccess(first)
        expectSuccess(second)
        #expect(first.body == second.body, "repeat must return the identical body")
        let m = try #require(first.data?["messageId"]?.string)
        #expect(second.data?["messageId"]?.string == m)

        // A different key is a different message.
        let third = try await sys.call(
            "send_to_client", body, headers: [("Idempotency-Key", UUID().uuidString)])
        expectSuccess(third)
        let m3 = try #require(third.data?["messageId"]?.string)
        #expect(m3 != m)

        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m3, "the repeated send delivered twice")

        // Also for group sends.
        let g = unique("g")
        try await sys.bind(c.clientId, group: g)
        let gkey = [("Idempotency-Key", UUID().uuidString)]
        let g1 = try await sys.call("send_to_group", ["groupName": .string(g)], headers: gkey)
        let g2 = try await sys.call("send_to_group", ["groupName": .string(g)], headers: gkey)
        #expect(g1.body == g2.body)
        let gm = try #require(g1.data?["messageId"]?.string)
        #expect(try await nextNonPresence(c.ws)["messageId"]?.string == gm)
        try await expectNothingElseBefore(marker: c.ws, clientId: c.clientId, sys: sys)
    }
}
