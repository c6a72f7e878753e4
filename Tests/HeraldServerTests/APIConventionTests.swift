import HeraldTestSupport
import Foundation
import NIOHTTP1
import Testing

@Suite("HTTP conventions and error codes", .herald(["--admin-token", testAdminToken]))
struct APIConventionTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("GET /healthz and /readyz answer 200 while serving")
    func healthAndReadiness() async throws {
        let api = try server.api
        #expect(try await api.get("/healthz").status == 200)
        #expect(try await api.get("/readyz").status == 200)
        // Load balancers often probe with HEAD.
        #expect(try await api.request(.HEAD, "/healthz").status == 200)
        #expect(try await api.request(.HEAD, "/readyz").status == 200)
    }

    @Test("GET /metrics is Prometheus text with herald_ metrics")
    func metrics() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let r = try await server.api.adminGet("/metrics")
        #expect(r.status == 200, "\(r)")
        #expect(r.body.contains("herald_"), "no herald_ metric in /metrics")
        #expect(r.body.contains("herald_connections"), "no herald_connections metric in /metrics")
        #expect(r.body.contains("# TYPE"), "not Prometheus text format")
    }

    @Test("herald_messages_published_total counts each acknowledged send once")
    func publishedCounter() async throws {
        // A node of its own: the suite's shared node serves other tests' sends meanwhile.
        try await withHerald { server in
            let sys = try await server.api.registerSystem()
            let c = try await sys.connect()
            let before = Self.counter("herald_messages_published_total", in: try await server.api.adminGet("/metrics").body)
            _ = try await sys.send(to: c.clientId)
            _ = try await sys.send(to: c.clientId)
            expectFailure(try await sys.call("send_to_client", ["clientId": .string(tamper(c.clientId))]), status: 400, code: 4001)
            let after = Self.counter("herald_messages_published_total", in: try await server.api.adminGet("/metrics").body)
            #expect(after - before == 2, "went from \(before) to \(after) after two sends and one refused")
            try await c.ws.close()
        }
    }

    /// The value of an unlabelled counter in Prometheus text (0 when absent).
    static func counter(_ name: String, in text: String) -> Int {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Int(Double(line.split(separator: " ").last ?? "") ?? 0)
        }
        return 0
    }

    @Test("non-POST methods on /api/* answer 405 with code 4050", arguments: [HTTPMethod.GET, .PUT, .DELETE])
    func wrongMethod(method: HTTPMethod) async throws {
        let sys = try await server.api.registerSystem()
        let body: Data? = method == .GET ? nil : Data(#"{"groupName":"g"}"#.utf8)
        let r = try await server.api.request(
            method, "/api/get_online_list", headers: [("SystemId", sys.id), ("Content-Type", "application/json")],
            body: body)
        expectFailure(r, status: 405, code: 4050)
        try await expectStillServing(sys)
    }

    @Test("unknown /api route answers 404 with code 4004")
    func unknownRoute() async throws {
        let sys = try await server.api.registerSystem()
        let r = try await sys.call("no_such_route", ["x": 1])
        expectFailure(r, status: 404, code: 4004)
        try await expectStillServing(sys)
    }

    @Test("malformed JSON answers 400 with code 4000")
    func malformedJSON() async throws {
        let sys = try await server.api.registerSystem()
        for raw in ["{not json", "", "[1,2", "\"just a string\"", "null"] {
            let r = try await sys.api.postRaw(
                "/api/send_to_group", systemId: sys.id, body: Data(raw.utf8))
            expectFailure(r, status: 400, code: 4000)
        }
        try await expectStillServing(sys)
    }

    @Test("a missing or invalid field answers 400 with code 4000 naming the field")
    func missingField() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        expectFailure(try await sys.call("send_to_client", ["msg": "x"]), status: 400, code: 4000, mentions: "clientId")
        expectFailure(
            try await sys.call("send_to_client", ["clientId": 12]), status: 400, code: 4000, mentions: "clientId")
        expectFailure(try await sys.call("send_to_group", ["msg": "x"]), status: 400, code: 4000, mentions: "groupName")
        expectFailure(
            try await sys.call("bind_to_group", ["clientId": .string(c.clientId)]), status: 400, code: 4000,
            mentions: "groupName")
        expectFailure(
            try await sys.call("bind_to_group", ["groupName": "g"]), status: 400, code: 4000, mentions: "clientId")
        expectFailure(
            try await sys.call("unbind_from_group", ["clientId": .string(c.clientId)]), status: 400, code: 4000,
            mentions: "groupName")
        expectFailure(try await sys.call("get_online_list", [:]), status: 400, code: 4000, mentions: "groupName")
        expectFailure(try await sys.call("client_status", [:]), status: 400, code: 4000, mentions: "clientId")
        expectFailure(try await sys.call("close_client", [:]), status: 400, code: 4000, mentions: "clientId")
        expectFailure(
            try await sys.call("send_to_client", ["clientId": .string(c.clientId), "code": "notanumber"]),
            status: 400, code: 4000, mentions: "code")
        try await expectStillServing(sys)
        // The client was not disturbed by the bad calls.
        let m = try await sys.send(to: c.clientId)
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
    }

    @Test("send_to_clients requires clientIds to be an array (4000)")
    func clientIdsMustBeArray() async throws {
        let sys = try await server.api.registerSystem()
        expectFailure(
            try await sys.call("send_to_clients", ["clientIds": "abc"]), status: 400, code: 4000, mentions: "clientIds")
        expectFailure(try await sys.call("send_to_clients", ["msg": "x"]), status: 400, code: 4000, mentions: "clientIds")
        try await expectStillServing(sys)
    }

    @Test("a missing SystemId header answers 400 with code 4000 naming SystemId")
    func missingSystemId() async throws {
        let sys = try await server.api.registerSystem()
        let r = try await server.api.post("/api/get_online_list", systemId: nil, json: ["groupName": "g"])
        expectFailure(r, status: 400, code: 4000, mentions: "SystemId")
        try await expectStillServing(sys)
    }

    @Test("an unknown SystemId answers 404 with code 4041")
    func unknownSystem() async throws {
        let r = try await server.api.post("/api/get_online_list", systemId: newSystemId(), json: ["groupName": "g"])
        expectFailure(r, status: 404, code: 4041)
        let r2 = try await server.api.post(
            "/api/send_to_system", systemId: newSystemId(), json: ["msg": "hello"])
        expectFailure(r2, status: 404, code: 4041)
        try await expectStillServing(try await server.api.registerSystem())
    }

    @Test("a body over 1 MiB (default) answers 413 with code 4130")
    func oversizedBody() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let big = String(repeating: "x", count: 1_100_000)
        let r = try await sys.call("send_to_client", ["clientId": .string(c.clientId), "data": .string(big)])
        expectFailure(r, status: 413, code: 4130)
        // Just under the limit still works and arrives intact.
        let fits = String(repeating: "y", count: 1_000_000)
        let m = try await sys.send(to: c.clientId, ["data": .string(fits)])
        let f = try await c.ws.nextJSON(timeout: .seconds(10))
        #expect(f["messageId"]?.string == m)
        #expect(f["data"]?.string == fits)
        try await expectStillServing(sys)
    }
}
