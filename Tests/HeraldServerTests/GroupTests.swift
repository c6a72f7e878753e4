import HeraldTestSupport
import Foundation
import Testing

@Suite("Groups, presence, status and close", .herald(["--admin-token", testAdminToken]))
struct GroupTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("bind_to_group: every member, including the new one, gets 1001 with {clientId,userId,extend}")
    func bindPresence() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close() } }
        let g = unique("g")
        let r = try await sys.call(
            "bind_to_group",
            ["clientId": .string(a.clientId), "groupName": .string(g), "userId": "ua", "extend": "ea"])
        expectSuccess(r)
        #expect(r.data == .null, "bind data must be null: \(r)")
        expectPresence(try await a.ws.nextJSON(), code: 1001, group: g, clientId: a.clientId, userId: "ua", extend: "ea")

        try await sys.bind(b.clientId, group: g, userId: "ub", extend: "eb")
        expectPresence(try await a.ws.nextJSON(), code: 1001, group: g, clientId: b.clientId, userId: "ub", extend: "eb")
        expectPresence(try await b.ws.nextJSON(), code: 1001, group: g, clientId: b.clientId, userId: "ub", extend: "eb")
    }

    @Test("a second bind of the same client to the same group sends no second 1001")
    func rebindIsQuiet() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close() } }
        let g = unique("g")
        try await sys.bind(a.clientId, group: g, userId: "ua")
        try await sys.bind(b.clientId, group: g, userId: "ub")
        expectPresence(try await a.ws.nextJSON(), code: 1001, group: g, clientId: a.clientId)
        expectPresence(try await a.ws.nextJSON(), code: 1001, group: g, clientId: b.clientId)
        expectPresence(try await b.ws.nextJSON(), code: 1001, group: g, clientId: b.clientId)

        try await sys.bind(b.clientId, group: g, userId: "ub")
        let m = try #require(try await sys.ok("send_to_group", ["groupName": .string(g)])["messageId"]?.string)
        let fa = try await a.ws.nextJSON()
        let fb = try await b.ws.nextJSON()
        #expect(fa["messageId"]?.string == m, "expected the group message, got \(fa)")
        #expect(fb["messageId"]?.string == m, "expected the group message, got \(fb)")
        let list = try await sys.ok("get_online_list", ["groupName": .string(g)])
        #expect(list["count"]?.int == 2, "a rebind must not duplicate membership: \(list)")
    }

    @Test("unbind_from_group: remaining members get 1002; the unbound client no longer gets group messages")
    func unbindPresence() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close() } }
        let g = unique("g")
        try await sys.bind(a.clientId, group: g, userId: "ua", extend: "ea")
        try await sys.bind(b.clientId, group: g, userId: "ub", extend: "eb")
        _ = try await a.ws.nextJSON()
        _ = try await a.ws.nextJSON()
        let r = try await sys.call("unbind_from_group", ["clientId": .string(b.clientId), "groupName": .string(g)])
        expectSuccess(r)
        #expect(r.data == .null)
        expectPresence(try await a.ws.nextJSON(), code: 1002, group: g, clientId: b.clientId, userId: "ub", extend: "eb")

        let m = try #require(try await sys.ok("send_to_group", ["groupName": .string(g)])["messageId"]?.string)
        #expect(try await a.ws.nextJSON()["messageId"]?.string == m)
        try await expectNothingElseBefore(marker: b.ws, clientId: b.clientId, sys: sys)
        let list = try await sys.ok("get_online_list", ["groupName": .string(g)])
        #expect(list["count"]?.int == 1)
    }

    @Test("disconnect: every group of the client sends 1002 to its remaining members")
    func disconnectPresence() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let c = try await sys.connect()
        defer { Task { try? await a.ws.close() } }
        let g1 = unique("g1")
        let g2 = unique("g2")
        for g in [g1, g2] {
            try await sys.bind(a.clientId, group: g, userId: "ua")
            try await sys.bind(c.clientId, group: g, userId: "uc", extend: "ec")
        }
        for _ in 0..<4 { _ = try await a.ws.nextJSON() }
        await c.ws.abort()
        var seen: Set<String> = []
        for _ in 0..<2 {
            let f = try await a.ws.nextJSON()
            #expect(f["code"]?.int == 1002, "\(f)")
            #expect(f["data"]?["clientId"]?.string == c.clientId)
            #expect(f["data"]?["userId"]?.string == "uc")
            #expect(f["data"]?["extend"]?.string == "ec")
            if let g = f["groupName"]?.string { seen.insert(g) }
        }
        #expect(seen == [g1, g2])
        for g in [g1, g2] {
            let list = try await sys.ok("get_online_list", ["groupName": .string(g)])
            #expect(list["count"]?.int == 1, "\(list)")
        }
    }

    @Test("close_client of a group member sends 1002 to the remaining members")
    func closeClientPresence() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close() } }
        let g = unique("g")
        try await sys.bind(a.clientId, group: g, userId: "ua")
        try await sys.bind(b.clientId, group: g, userId: "ub", extend: "eb")
        _ = try await a.ws.nextJSON()
        _ = try await a.ws.nextJSON()
        try await sys.ok("close_client", ["clientId": .string(b.clientId)])
        expectPresence(try await a.ws.nextJSON(), code: 1002, group: g, clientId: b.clientId, userId: "ub", extend: "eb")
        let (code, _) = try await b.ws.waitForClose()
        #expect(code == 1000)
        await b.ws.abort()
    }

    @Test("get_online_list answers {count, list:[{clientId,userId,extend}]}")
    func onlineList() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close(); try? await b.ws.close() } }
        let g = unique("g")
        try await sys.bind(a.clientId, group: g, userId: "ua", extend: "ea")
        try await sys.bind(b.clientId, group: g, userId: "ub", extend: "eb")
        let d = try await sys.ok("get_online_list", ["groupName": .string(g)])
        #expect(d["count"]?.int == 2)
        let list = try #require(d["list"]?.array, "\(d)")
        let entries = Set(list.map { "\($0["clientId"]?.string ?? "?")|\($0["userId"]?.string ?? "?")|\($0["extend"]?.string ?? "?")" })
        #expect(entries == ["\(a.clientId)|ua|ea", "\(b.clientId)|ub|eb"])

        let none = try await sys.ok("get_online_list", ["groupName": .string(unique("empty"))])
        #expect(none["count"]?.int == 0)
        #expect(none["list"] == [])

        // Groups are per system: the same name in another system is a different group.
        let other = try await server.api.registerSystem()
        let otherList = try await other.ok("get_online_list", ["groupName": .string(g)])
        #expect(otherList["count"]?.int == 0)
    }

    @Test("client_status: online with groups; offline valid ID answers code 0 with online false")
    func clientStatus() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let g1 = unique("g1")
        let g2 = unique("g2")
        try await sys.bind(c.clientId, group: g1)
        try await sys.bind(c.clientId, group: g2)
        let d = try await sys.ok("client_status", ["clientId": .string(c.clientId)])
        #expect(d["online"]?.bool == true)
        let groups = Set((d["groups"]?.array ?? []).compactMap(\.string))
        #expect(groups == [g1, g2], "\(d)")

        try await c.ws.close()
        try await waitOffline(sys, c.clientId)
        let off = try await sys.call("client_status", ["clientId": .string(c.clientId)])
        expectSuccess(off)
        #expect(off.data?["online"]?.bool == false)

        expectFailure(
            try await sys.call("client_status", ["clientId": .string(tamper(c.clientId))]), status: 400, code: 4001)
        try await expectStillServing(sys)
    }

    @Test("close_client closes the connection with 1000; afterwards the client is offline (4040)")
    func closeClient() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let r = try await sys.call("close_client", ["clientId": .string(c.clientId)])
        expectSuccess(r)
        #expect(r.data == .null)
        let (code, _) = try await c.ws.waitForClose()
        #expect(code == 1000)
        try await waitOffline(sys, c.clientId)
        expectFailure(try await sys.call("close_client", ["clientId": .string(c.clientId)]), status: 404, code: 4040)
        expectFailure(try await sys.call("send_to_client", ["clientId": .string(c.clientId)]), status: 404, code: 4040)
        expectFailure(
            try await sys.call("close_client", ["clientId": .string(tamper(c.clientId))]), status: 400, code: 4001)

        let other = try await server.api.registerSystem()
        let o = try await other.connect()
        defer { Task { try? await o.ws.close() } }
        expectFailure(try await sys.call("close_client", ["clientId": .string(o.clientId)]), status: 403, code: 4030)
        // The other system's client is still connected.
        try await expectNothingElseBefore(marker: o.ws, clientId: o.clientId, sys: other)
    }

    @Test("bind_to_group errors: offline 4040, tampered 4001, other system 4030")
    func bindErrors() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let g = unique("g")
        expectFailure(
            try await sys.call("bind_to_group", ["clientId": .string(tamper(c.clientId)), "groupName": .string(g)]),
            status: 400, code: 4001)
        let other = try await server.api.registerSystem()
        let o = try await other.connect()
        defer { Task { try? await o.ws.close() } }
        expectFailure(
            try await sys.call("bind_to_group", ["clientId": .string(o.clientId), "groupName": .string(g)]),
            status: 403, code: 4030)
        try await c.ws.close()
        try await waitOffline(sys, c.clientId)
        expectFailure(
            try await sys.call("bind_to_group", ["clientId": .string(c.clientId), "groupName": .string(g)]),
            status: 404, code: 4040)
        let list = try await sys.ok("get_online_list", ["groupName": .string(g)])
        #expect(list["count"]?.int == 0)
        try await expectStillServing(sys)
    }
}

@Suite("Group presence off (--group-presence false)", .herald(["--group-presence", "false"]))
struct GroupPresenceOffTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("members hear no 1001/1002 when others join or leave, and still get group sends")
    func noPresenceFrames() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await sys.connect()
        let b = try await sys.connect()
        defer { Task { try? await a.ws.close() } }
        let g = unique("quiet")
        try await sys.bind(a.clientId, group: g)
        try await sys.bind(b.clientId, group: g)
        try await sys.ok("unbind_from_group", ["clientId": .string(b.clientId), "groupName": .string(g)])
        await b.ws.abort()
        let m = try await sys.ok("send_to_group", ["groupName": .string(g), "msg": "hi"])["messageId"]?.string
        // The first frame a gets after its welcome is the group send: no presence before it.
        let f = try await a.ws.nextJSON()
        #expect(f["messageId"]?.string == m, "expected the group send first, got \(f)")
        #expect(f["code"]?.int != 1001 && f["code"]?.int != 1002)
    }
}
