import HeraldTestSupport
import Foundation
import Testing

@Suite("Registration, secrets and JWT client auth", .herald(["--admin-token", testAdminToken]))
struct AuthTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("/api/register succeeds with data null; registering the same id again answers 409 with code 4090")
    func registerTwice() async throws {
        let id = newSystemId()
        let r = try await server.api.post("/api/register", systemId: nil, json: ["systemId": .string(id)])
        expectSuccess(r)
        #expect(r.data == .null, "register data must be null: \(r)")
        let again = try await server.api.post("/api/register", systemId: nil, json: ["systemId": .string(id)])
        expectFailure(again, status: 409, code: 4090)
        let withSecret = try await server.api.post(
            "/api/register", systemId: nil, json: ["systemId": .string(id), "secret": "s3cret-s3cret-s3cret-s3cret-s3cret-42"])
        expectFailure(withSecret, status: 409, code: 4090)
        // The system registered first still works.
        try await expectStillServing(TestSystem(server: try server, id: id, secret: nil, clientAuth: false))
    }

    @Test("/api/register without systemId answers 400 with code 4000 naming systemId")
    func registerMissingId() async throws {
        let r = try await server.api.post("/api/register", systemId: nil, json: ["secret": "x"])
        expectFailure(r, status: 400, code: 4000, mentions: "systemId")
        let r2 = try await server.api.postRaw("/api/register", systemId: nil, body: Data("{oops".utf8))
        expectFailure(r2, status: 400, code: 4000)
        try await expectStillServing(try await server.api.registerSystem())
    }

    @Test("a system with a secret needs Authorization: Bearer <secret> on every call (else 401/4010)")
    func secretRequired() async throws {
        let secret = "sec-" + UUID().uuidString
        let sys = try await server.api.registerSystem(secret: secret, clientAuth: false)
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let routes: [(String, JSON)] = [
            ("get_online_list", ["groupName": "g"]),
            ("send_to_client", ["clientId": .string(c.clientId), "msg": "x"]),
            ("send_to_system", ["msg": "x"]),
            ("client_status", ["clientId": .string(c.clientId)]),
            ("bind_to_group", ["clientId": .string(c.clientId), "groupName": "g"]),
        ]
        for (route, body) in routes {
            let none = try await sys.api.post("/api/\(route)", systemId: sys.id, auth: nil, json: body)
            expectFailure(none, status: 401, code: 4010)
            let wrong = try await sys.api.post("/api/\(route)", systemId: sys.id, auth: secret + "x", json: body)
            expectFailure(wrong, status: 401, code: 4010)
        }
        let basic = try await sys.api.post(
            "/api/get_online_list", systemId: sys.id, headers: [("Authorization", "Basic \(secret)")],
            json: ["groupName": "g"])
        expectFailure(basic, status: 401, code: 4010)
        // Nothing was sent by the rejected calls: the next frame is the authorised send.
        let m = try await sys.send(to: c.clientId)
        let f = try await c.ws.nextJSON()
        #expect(f["messageId"]?.string == m, "rejected sends must not deliver: \(f)")
        expectSuccess(try await sys.call("get_online_list", ["groupName": "g"]))
    }

    @Test("a system without a secret needs no Authorization")
    func noSecretNoAuth() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        expectSuccess(try await sys.call("client_status", ["clientId": .string(c.clientId)]))
    }

    @Test("a valid HS256 JWT (sub, exp) is accepted on /ws")
    func jwtAccepted() async throws {
        let secret = "jwt-" + UUID().uuidString
        let sys = try await server.api.registerSystem(secret: secret, clientAuth: true)
        #expect(sys.clientAuth)
        let c = try await sys.connect(userId: "alice")
        defer { Task { try? await c.ws.close() } }
        let m = try await sys.send(to: c.clientId, ["msg": "hi"])
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
    }

    enum BadToken: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case missing, badSignature, expired, garbage, noneAlgorithm
        var testDescription: String { rawValue }
    }

    @Test("a missing, forged or expired JWT gets one frame with code 4010 then close 1008", arguments: BadToken.allCases)
    func jwtRejected(_ kind: BadToken) async throws {
        let secret = "jwt-" + UUID().uuidString
        let sys = try await server.api.registerSystem(secret: secret, clientAuth: true)
        var path = "/ws?systemId=\(sys.id)"
        switch kind {
        case .missing:
            break
        case .badSignature:
            path += "&token=" + makeJWT(secret: secret, sub: "u", exp: Date().addingTimeInterval(600), signingSecret: "wrong")
        case .expired:
            path += "&token=" + makeJWT(secret: secret, sub: "u", exp: Date().addingTimeInterval(-600))
        case .garbage:
            path += "&token=not.a.jwt"
        case .noneAlgorithm:
            let h = base64URL(Data(#"{"alg":"none","typ":"JWT"}"#.utf8))
            let p = base64URL(Data(#"{"sub":"u","exp":\#(Int(Date().timeIntervalSince1970) + 600)}"#.utf8))
            path += "&token=\(h).\(p)."
        }
        let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: path)
        let f = try await ws.nextJSON()
        #expect(f["code"]?.int == 4010, "first frame: \(f)")
        let (end, texts) = try await ws.waitForCloseEvent()
        #expect(end == .close(code: 1008), "expected a close frame with 1008")
        #expect(texts == 0, "no further frames before the close")
        await ws.abort()
        try await expectStillServing(sys)
    }

    @Test("the contract's register shape: a short secret guards the API, clients connect without a token; clientAuth needs 32 bytes")
    func shortSecret() async throws {
        let server = try self.server
        let id = newSystemId()
        let refused = try await server.api.post(
            "/api/register", systemId: nil, json: ["systemId": .string(id), "secret": "short", "clientAuth": true])
        expectFailure(refused, status: 400, code: 4000, mentions: "secret")
        // Nothing was registered: the same id can be registered the documented way afterwards,
        // {"systemId","secret"} with no clientAuth: the secret protects the API only.
        let apiOnly = try await server.api.post(
            "/api/register", systemId: nil, json: ["systemId": .string(id), "secret": "short"])
        expectSuccess(apiOnly)
        let noSecret = try await server.api.post(
            "/api/send_to_system", systemId: id, json: ["msg": "x"])
        expectFailure(noSecret, status: 401, code: 4010)
        let sys = TestSystem(server: server, id: id, secret: "short", clientAuth: false)
        let client = try await sys.connect()
        let m = try await sys.send(to: client.clientId)
        #expect(try await client.ws.nextJSON()["messageId"]?.string == m)
        expectFailure(try await server.api.post("/api/send_to_client", systemId: id, json: ["clientId": .string(client.clientId)]), status: 401, code: 4010)
        await client.ws.abort()
    }

    @Test("clientAuth false: a system with a secret accepts WebSocket clients without a token")
    func clientAuthOff() async throws {
        let secret = "sec-" + UUID().uuidString
        let sys = try await server.api.registerSystem(secret: secret, clientAuth: false)
        let ws = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)")
        defer { Task { try? await ws.close() } }
        let f = try await ws.nextJSON()
        #expect(f["code"]?.int == 0 && f["msg"]?.string == "success", "\(f)")
        #expect(f["data"]?["clientId"]?.string != nil)
    }

    @Test("/ws with an unknown or missing systemId: one frame with code -1001 then close 1008",
          arguments: ["/ws?systemId=nosuchsystem-\(UUID().uuidString.prefix(6))", "/ws"])
    func wsUnknownSystem(path: String) async throws {
        let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: path)
        let f = try await ws.nextJSON()
        #expect(f["code"]?.int == -1001, "first frame: \(f)")
        let (end, texts) = try await ws.waitForCloseEvent()
        #expect(end == .close(code: 1008), "expected a close frame with 1008")
        #expect(texts == 0)
        await ws.abort()
        #expect(try await server.api.get("/healthz").status == 200)
    }

    @Test("first frame is {code:0, msg:success, data:{clientId}} with a URL-safe base64 id of at most 128 chars")
    func firstFrame() async throws {
        let sys = try await server.api.registerSystem()
        let ws = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)")
        defer { Task { try? await ws.close() } }
        let f = try await ws.nextJSON()
        #expect(f["code"]?.int == 0)
        #expect(f["msg"]?.string == "success")
        let id = try #require(f["data"]?["clientId"]?.string, "\(f)")
        #expect(id.count <= 128 && !id.isEmpty)
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        #expect(id.allSatisfy { allowed.contains($0) }, "not URL-safe unpadded base64: \(id)")
    }
}
