import HeraldTestSupport
import Foundation
import Testing

@Suite("WebSocket protocol: ping, ignored frames, 64 KiB limit", .herald(["--admin-token", testAdminToken]))
struct WebSocketProtocolTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("the text frame ping is answered by the text frame pong")
    func textPing() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        for _ in 0..<3 {
            try await c.ws.sendText("ping")
            #expect(try await c.ws.next() == "pong")
        }
    }

    @Test("GET /ws without the upgrade answers 400/4000 naming Upgrade, and opens nothing")
    func plainGet() async throws {
        let sys = try await server.api.registerSystem()
        expectFailure(try await server.api.get("/ws?systemId=\(sys.id)"), status: 400, code: 4000, mentions: "Upgrade")
        let c = try await sys.connect()
        #expect(!c.clientId.isEmpty, "a real upgrade still works")
        try await c.ws.close()
    }

    @Test("other client frames are ignored and the connection stays open")
    func otherFramesIgnored() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        for junk in ["hello", "{\"foo\":1}", "{\"ack\":123}", "[]", "PING", "{\"ack\":\"no-such-message\"}"] {
            try await c.ws.sendText(junk)
        }
        try await c.ws.sendBinary([0x70, 0x69, 0x6e, 0x67])  // "ping" as a binary frame is not the text ping
        try await c.ws.sendText("ping")
        #expect(try await c.ws.next() == "pong", "junk frames must be ignored without an answer")
        let m = try await sys.send(to: c.clientId)
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
    }

    @Test("a client frame over 64 KiB (default) closes with 1009; one under the limit does not")
    func oversizedFrame() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        try await c.ws.sendFrame(size: 60_000)
        try await c.ws.sendText("ping")
        #expect(try await c.ws.next() == "pong")
        try await c.ws.sendFrame(size: 65_537)
        let (code, _) = try await c.ws.waitForClose()
        #expect(code == 1009)
        await c.ws.abort()
        try await waitOffline(sys, c.clientId)
        try await expectStillServing(sys)
    }
}

@Suite("Ops routes: nodes, trace, replay, redeliver", .herald(["--admin-token", testAdminToken]))
struct AdminTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("admin routes need the admin token (401, code 4010)")
    func adminAuth() async throws {
        let api = try server.api
        for path in ["/admin/nodes", "/admin/replay?limit=1", "/admin/trace/whatever"] {
            expectFailure(try await api.get(path), status: 401, code: 4010)
            expectFailure(
                try await api.get(path, headers: [("Authorization", "Bearer wrong-token")]), status: 401, code: 4010)
        }
        let r = try await api.request(.POST, "/admin/replay/redeliver?messageId=x", body: Data())
        expectFailure(r, status: 401, code: 4010)
        #expect(try await api.adminGet("/admin/nodes").status == 200)
    }

    @Test("GET /admin/nodes lists this node {nodeId,address,slot,epoch,connections,startedAt}")
    func nodes() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let r = try await server.api.adminGet("/admin/nodes")
        expectSuccess(r)
        let nodes = try #require(r.data?.array, "\(r)")
        #expect(nodes.count == 1)
        let n = try #require(nodes.first)
        #expect(n["nodeId"]?.string?.isEmpty == false, "\(n)")
        #expect(n["address"]?.string?.isEmpty == false, "\(n)")
        #expect(n["slot"]?.int != nil, "\(n)")
        #expect(n["epoch"]?.int != nil, "\(n)")
        #expect((n["connections"]?.int ?? 0) >= 1, "\(n)")
        #expect(n["startedAt"] != nil && n["startedAt"] != .null, "\(n)")
    }

    @Test("trace: accepted, produced, delivered and (after the client's ack) acked, each with node and at")
    func traceWithAck() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let m = try await sys.send(to: c.clientId, ["msg": "trace me"])
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
        try await c.ws.sendText(#"{"ack":"\#(m)"}"#)
        let steps: [JSON]? = try await eventually(timeout: .seconds(5)) { () -> [JSON]? in
            let r = try await server.api.adminGet("/admin/trace/\(percentEncoded(m))")
            guard r.status == 200, let s = r.data?["steps"]?.array else { return nil }
            return s.contains { $0["step"]?.string == "acked" } ? s : nil
        }
        let r = try await server.api.adminGet("/admin/trace/\(percentEncoded(m))")
        expectSuccess(r)
        #expect(r.data?["messageId"]?.string == m)
        let all = try #require(steps, "no acked step within 5 s: \(r)")
        let names = all.compactMap { $0["step"]?.string }
        for expected in ["accepted", "produced", "delivered", "acked"] {
            #expect(names.contains(expected), "missing step \(expected) in \(names)")
        }
        for s in all {
            #expect(s["node"] != nil && s["at"] != nil, "step without node/at: \(s)")
        }
        if let a = names.firstIndex(of: "accepted"), let d = names.firstIndex(of: "delivered") {
            #expect(a < d, "steps out of order: \(names)")
        }
    }

    @Test("trace of an unknown messageId answers 404 with code 4044")
    func traceUnknown() async throws {
        let r = try await server.api.adminGet("/admin/trace/\(UUID().uuidString)")
        expectFailure(r, status: 404, code: 4044)
        #expect(try await server.api.get("/healthz").status == 200)
    }

    /// Sends unicast to A, to an empty group g, and to the whole system; returns the three message ids.
    private func seed(_ sys: TestSystem, _ a: ConnectedClient, group g: String) async throws -> [String] {
        let m1 = try await sys.send(to: a.clientId, ["sendUserId": "s1", "code": 11, "msg": "one", "data": ["n": 1]])
        let m2 = try #require(
            try await sys.ok("send_to_group", ["groupName": .string(g), "msg": "two", "data": "g"])["messageId"]?.string)
        let m3 = try #require(try await sys.ok("send_to_system", ["msg": "three"])["messageId"]?.string)
        return [m1, m2, m3]
    }

    private func replay(_ query: String) async throws -> (APIResponse, [JSON]) {
        let r = try await server.api.adminGet("/admin/replay?\(query)")
        let lines = r.body.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        return (r, lines.compactMap { JSON.parse($0) })
    }

    @Test("GET /admin/replay: NDJSON, oldest first, with metadata; filters systemId, messageId, clientId, groupName, limit, since, until")
    func replayFilters() async throws {
        let start = Date().addingTimeInterval(-2)
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        defer { Task { try? await a.ws.close() } }
        let g = unique("g")
        let ids = try await seed(sys, a, group: g)
        let since = percentEncoded(rfc3339(start))
        let until = percentEncoded(rfc3339(Date().addingTimeInterval(5)))

        let (r, all) = try await replay("systemId=\(sys.id)&since=\(since)&until=\(until)")
        #expect(r.status == 200, "\(r)")
        #expect(r.contentType.contains("application/x-ndjson"), "content type \(r.contentType)")
        #expect(all.compactMap { $0["messageId"]?.string } == ids, "oldest first, all three: \(r.body)")
        #expect(all.map { $0["kind"]?.string } == ["unicast", "group", "system"], "\(r.body)")
        for rec in all {
            #expect(rec["systemId"]?.string == sys.id)
            #expect(rec["topic"]?.string?.isEmpty == false, "topic: \(rec)")
            #expect(rec["partition"]?.int != nil, "partition: \(rec)")
            #expect(rec["offset"]?.int != nil, "offset: \(rec)")
            #expect(rec["target"] != nil && rec["target"] != .null, "target: \(rec)")
            let ts = try #require(rec["timestamp"]?.string, "timestamp: \(rec)")
            let d = try #require(parseRFC3339(ts), "timestamp is not RFC 3339: \(ts)")
            #expect(d >= start.addingTimeInterval(-5) && d <= Date().addingTimeInterval(5))
            let p = try #require(rec["payload"]?.object, "payload: \(rec)")
            for k in ["sendUserId", "code", "msg", "data"] {
                #expect(p.keys.contains(k), "payload lacks \(k): \(rec)")
            }
        }
        if let first = all.first {
            #expect(first["payload"]?["sendUserId"]?.string == "s1")
            #expect(first["payload"]?["code"]?.int == 11)
            #expect(first["payload"]?["msg"]?.string == "one")
            #expect(first["payload"]?["data"] == ["n": 1])
        }
        if all.count == 3 {
            #expect(all[1]["target"]?.string == g || all[1]["target"]?["groupName"]?.string == g, "group target: \(all[1])")
        }

        let (_, byMessage) = try await replay("messageId=\(percentEncoded(ids[1]))")
        #expect(byMessage.compactMap { $0["messageId"]?.string } == [ids[1]])

        let (_, byClient) = try await replay("systemId=\(sys.id)&clientId=\(percentEncoded(a.clientId))")
        let clientIds = byClient.compactMap { $0["messageId"]?.string }
        #expect(clientIds.contains(ids[0]), "clientId filter: \(clientIds)")
        #expect(!clientIds.contains(ids[1]), "clientId filter must not include the group message: \(clientIds)")

        let (_, byGroup) = try await replay("systemId=\(sys.id)&groupName=\(percentEncoded(g))")
        #expect(byGroup.compactMap { $0["messageId"]?.string } == [ids[1]])

        let (_, limited) = try await replay("systemId=\(sys.id)&since=\(since)&limit=2")
        #expect(limited.compactMap { $0["messageId"]?.string } == Array(ids.prefix(2)))

        let (r0, before) = try await replay(
            "systemId=\(sys.id)&until=\(percentEncoded(rfc3339(start.addingTimeInterval(-60))))")
        #expect(r0.status == 200)
        #expect(before.isEmpty, "until before the sends must match nothing: \(r0.body)")

        let (rFuture, future) = try await replay(
            "systemId=\(sys.id)&since=\(percentEncoded(rfc3339(Date().addingTimeInterval(3600))))")
        #expect(rFuture.status == 200)
        #expect(future.isEmpty)
    }

    @Test("a bad replay filter answers 400 with code 4000 naming the field", arguments: ["since", "until", "limit"])
    func replayBadFilter(field: String) async throws {
        let r = try await server.api.adminGet("/admin/replay?\(field)=garbage-value")
        expectFailure(r, status: 400, code: 4000, mentions: field)
        #expect(try await server.api.adminGet("/admin/nodes").status == 200)
    }

    @Test("POST /admin/replay/redeliver sends matching messages again to online targets with redelivered:true")
    func redeliver() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        defer { Task { try? await a.ws.close() } }
        let m = try await sys.send(to: a.clientId, ["msg": "again", "data": ["x": [1, 2]]])
        let original = try await a.ws.nextJSON()
        #expect(original["messageId"]?.string == m)
        #expect(original["redelivered"] == nil || original["redelivered"] == false)

        let r = try await server.api.adminPost("/admin/replay/redeliver?systemId=\(sys.id)&messageId=\(percentEncoded(m))")
        expectSuccess(r)
        #expect(r.data?["redelivered"]?.int == 1, "\(r)")
        let again = try await a.ws.nextJSON()
        #expect(again["messageId"]?.string == m)
        #expect(again["redelivered"]?.bool == true, "\(again)")
        #expect(again["msg"]?.string == "again")
        #expect(again["data"] == ["x": [1, 2]])

        // A group message is redelivered to the group's current members, with groupName.
        let g = unique("g")
        try await sys.bind(a.clientId, group: g)
        let gm = try #require(try await sys.ok("send_to_group", ["groupName": .string(g), "msg": "grp"])["messageId"]?.string)
        #expect(try await nextNonPresence(a.ws)["messageId"]?.string == gm)
        let rg = try await server.api.adminPost("/admin/replay/redeliver?systemId=\(sys.id)&groupName=\(percentEncoded(g))")
        expectSuccess(rg)
        #expect(rg.data?["redelivered"]?.int == 1, "\(rg)")
        let gAgain = try await nextNonPresence(a.ws)
        #expect(gAgain["messageId"]?.string == gm)
        #expect(gAgain["groupName"]?.string == g)
        #expect(gAgain["redelivered"]?.bool == true, "\(gAgain)")

        let bad = try await server.api.adminPost("/admin/replay/redeliver?since=garbage")
        expectFailure(bad, status: 400, code: 4000, mentions: "since")
    }
}
