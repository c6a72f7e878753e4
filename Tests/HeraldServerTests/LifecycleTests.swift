import HeraldTestSupport
import Foundation
import Testing

@Suite("Process lifecycle: keygen, startup checks, shutdown, key rotation")
struct LifecycleTests {
    @Test("herald keygen prints a fresh base64 32-byte key")
    func keygen() async throws {
        let a = try await runHerald(["keygen"])
        let b = try await runHerald(["keygen"])
        #expect(a.status == 0 && !a.timedOut, "keygen failed: \(a.stderr)")
        let ka = a.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let kb = b.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let bytes = try #require(Data(base64Encoded: ka), "not base64: \(ka)")
        #expect(bytes.count == 32)
        #expect(ka != kb, "two keys must differ")
    }

    @Test("without --dev, a missing --client-id-key stops serve with a non-zero status naming client-id-key")
    func missingKey() async throws {
        let port = try await freePort()
        let r = try await runHerald(
            ["serve", "--host", "127.0.0.1", "--port", String(port), "--admin-token", "t"], timeout: .seconds(10))
        #expect(!r.timedOut, "serve kept running without --client-id-key")
        #expect(r.status != 0)
        #expect(r.stderr.contains("client-id-key"), "stderr: \(r.stderr)")
    }

    @Test("without --dev, a missing --admin-token stops serve with a non-zero status naming admin-token")
    func missingAdminToken() async throws {
        let port = try await freePort()
        let r = try await runHerald(
            ["serve", "--host", "127.0.0.1", "--port", String(port), "--client-id-key", randomKey()],
            timeout: .seconds(10))
        #expect(!r.timedOut, "serve kept running without --admin-token")
        #expect(r.status != 0)
        #expect(r.stderr.contains("admin-token"), "stderr: \(r.stderr)")
    }

    @Test("without --dev, register needs the admin token (401/4010) and admin routes too")
    func productionMode() async throws {
        let admin = "prod-admin-" + UUID().uuidString
        try await withHerald(dev: false, args: ["--admin-token", admin, "--client-id-key", randomKey()]) { server in
            let id = newSystemId()
            expectFailure(
                try await server.api.post("/api/register", systemId: nil, json: ["systemId": .string(id)]),
                status: 401, code: 4010)
            expectFailure(
                try await server.api.post(
                    "/api/register", systemId: nil, auth: "wrong", json: ["systemId": .string(id)]),
                status: 401, code: 4010)
            expectFailure(try await server.api.get("/admin/nodes"), status: 401, code: 4010)
            let sys = try await server.api.registerSystem(id: id, adminAuth: admin)
            let c = try await sys.connect()
            let m = try await sys.send(to: c.clientId)
            #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
            try await c.ws.close()
        }
    }

    @Test("with --dev and no admin token, /api/register needs no Authorization")
    func devRegisterOpen() async throws {
        try await withHerald { server in
            let id = newSystemId()
            expectSuccess(try await server.api.post("/api/register", systemId: nil, json: ["systemId": .string(id)]))
            let sys = TestSystem(server: server, id: id, secret: nil, clientAuth: false)
            let c = try await sys.connect()
            let m = try await sys.send(to: c.clientId)
            #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
            await c.ws.abort()
        }
    }

    @Test("SIGTERM: every client gets close 1001 and the process exits 0 within 5 s")
    func gracefulShutdown() async throws {
        let server = try await HeraldInstance.start(extraArgs: [])
        var clients: [ConnectedClient] = []
        do {
            let sys = try await server.api.registerSystem()
            for _ in 0..<3 { clients.append(try await sys.connect()) }
        } catch {
            await server.stop()
            throw error
        }
        let result = await server.stop(grace: .seconds(5))
        let r = try #require(result, "herald did not exit within 5 s of SIGTERM (killed)")
        #expect(r.reason == .exit, "terminated by a signal instead of exiting")
        #expect(r.status == 0)
        #expect(r.elapsed < .seconds(5))
        for c in clients {
            let (end, _) = try await c.ws.waitForCloseEvent(timeout: .seconds(2))
            #expect(end == .close(code: 1001))
            await c.ws.abort()
        }
        server.removeLogs()
    }

    @Test("key rotation: --client-id-key NEW,OLD accepts IDs sealed with OLD (4040, not 4001); NEW alone rejects them (4001)")
    func keyRotation() async throws {
        let oldKey = try await runHerald(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let newKey = randomKey()
        let systemId = newSystemId()
        let oldId: String = try await withHerald(args: ["--client-id-key", oldKey]) { server in
            let sys = try await server.api.registerSystem(id: systemId)
            let c = try await sys.connect()
            // The ID works on the node that issued it.
            let m = try await sys.send(to: c.clientId)
            #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
            await c.ws.abort()
            return c.clientId
        }

        try await withHerald(args: ["--client-id-key", "\(newKey),\(oldKey)"]) { server in
            let sys = try await server.api.registerSystem(id: systemId)
            expectFailure(
                try await sys.call("send_to_client", ["clientId": .string(oldId)]), status: 404, code: 4040)
            let st = try await sys.call("client_status", ["clientId": .string(oldId)])
            expectSuccess(st)
            #expect(st.data?["online"]?.bool == false)
            expectFailure(
                try await sys.call("send_to_client", ["clientId": .string(tamper(oldId))]), status: 400, code: 4001)
            // New connections get IDs that work.
            let c = try await sys.connect()
            let m = try await sys.send(to: c.clientId)
            #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
            await c.ws.abort()
        }

        try await withHerald(args: ["--client-id-key", newKey]) { server in
            let sys = try await server.api.registerSystem(id: systemId)
            expectFailure(
                try await sys.call("send_to_client", ["clientId": .string(oldId)]), status: 400, code: 4001)
            try await expectStillServing(sys)
        }
    }

    @Test("a client ID issued by a server with another key answers 4001")
    func foreignKey() async throws {
        let systemId = newSystemId()
        let foreignId: String = try await withHerald(args: ["--client-id-key", randomKey()]) { server in
            let sys = try await server.api.registerSystem(id: systemId)
            let c = try await sys.connect()
            await c.ws.abort()
            return c.clientId
        }
        try await withHerald(args: ["--client-id-key", randomKey()]) { server in
            let sys = try await server.api.registerSystem(id: systemId)
            let live = try await sys.connect()
            defer { Task { await live.ws.abort() } }
            for route in ["send_to_client", "client_status", "close_client"] {
                expectFailure(
                    try await sys.call(route, ["clientId": .string(foreignId)]), status: 400, code: 4001)
            }
            expectFailure(
                try await sys.call("bind_to_group", ["clientId": .string(foreignId), "groupName": "g"]),
                status: 400, code: 4001)
            try await expectStillServing(sys)
        }
    }
}
