import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOPosix

/// One HTTP client for the whole test process (never shut down: it lives as long as the process).
public let sharedHTTPClient: HTTPClient = {
    var config = HTTPClient.Configuration()
    config.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
    config.timeout = .init(connect: .seconds(5), read: .seconds(60))
    config.decompression = .disabled
    return HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: config)
}()

/// An HTTP answer from herald.
public struct APIResponse: Sendable, CustomStringConvertible {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: String

    /// The body parsed as JSON (nil when it is not JSON).
    public var json: JSON? { JSON.parse(body) }
    public var code: Int? { json?["code"]?.int }
    public var msg: String? { json?["msg"]?.string }
    public var data: JSON? { json?["data"] }
    public var contentType: String { headers.first(name: "content-type") ?? "" }

    public var description: String { "HTTP \(status) \(body.prefix(600))" }

    /// True when the body has the `{code, msg, data}` envelope.
    public var hasEnvelope: Bool {
        guard let o = json?.object else { return false }
        return o["code"]?.int != nil && o["msg"]?.string != nil && o.keys.contains("data")
    }
}

/// A herald node the tests talk to: a process they started, or a node of the local cluster.
public protocol HeraldEndpoint: Sendable {
    var host: String { get }
    var port: Int { get }
    var adminToken: String? { get }
}

extension HeraldEndpoint {
    public var baseURL: String { "http://\(host):\(port)" }
    public var api: HeraldAPI { HeraldAPI(server: self) }
}

/// A node somebody else started (the local cluster's nodes and its balancer).
public struct RemoteHerald: HeraldEndpoint {
    public let host: String
    public let port: Int
    public let adminToken: String?

    public init(host: String = "127.0.0.1", port: Int, adminToken: String?) {
        self.host = host
        self.port = port
        self.adminToken = adminToken
    }
}

/// Thin HTTP wrapper around one herald server.
public struct HeraldAPI: Sendable {
    public let server: any HeraldEndpoint

    public func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: Data? = nil,
        timeout: Duration = .seconds(15)
    ) async throws -> APIResponse {
        var req = HTTPClientRequest(url: server.baseURL + path)
        req.method = method
        for (k, v) in headers { req.headers.add(name: k, value: v) }
        if let body {
            req.body = .bytes(ByteBuffer(data: body))
        }
        let resp = try await sharedHTTPClient.execute(req, timeout: .init(timeout))
        let bytes = try await resp.body.collect(upTo: 64 << 20)
        return APIResponse(status: Int(resp.status.code), headers: resp.headers, body: String(buffer: bytes))
    }

    public func get(_ path: String, headers: [(String, String)] = [], timeout: Duration = .seconds(15)) async throws
        -> APIResponse
    {
        try await request(.GET, path, headers: headers, timeout: timeout)
    }

    /// GET with the admin token (when the server has one).
    public func adminGet(_ path: String) async throws -> APIResponse {
        try await request(.GET, path, headers: adminHeaders)
    }

    public func adminPost(_ path: String) async throws -> APIResponse {
        try await request(.POST, path, headers: adminHeaders, body: Data())
    }

    public var adminHeaders: [(String, String)] {
        if let t = server.adminToken { return [("Authorization", "Bearer \(t)")] }
        return []
    }

    /// POST a JSON body with optional SystemId / Authorization headers.
    public func post(
        _ path: String, systemId: String?, auth: String? = nil, headers: [(String, String)] = [], json: JSON,
        timeout: Duration = .seconds(15)
    ) async throws -> APIResponse {
        try await postRaw(
            path, systemId: systemId, auth: auth, headers: headers, body: Data(json.encoded.utf8), timeout: timeout)
    }

    public func postRaw(
        _ path: String, systemId: String?, auth: String? = nil, headers: [(String, String)] = [], body: Data,
        timeout: Duration = .seconds(15)
    ) async throws -> APIResponse {
        var h: [(String, String)] = [("Content-Type", "application/json")]
        if let systemId { h.append(("SystemId", systemId)) }
        if let auth { h.append(("Authorization", "Bearer \(auth)")) }
        h += headers
        return try await request(.POST, path, headers: h, body: body, timeout: timeout)
    }

    /// Register a fresh system with a unique id.
    public func registerSystem(
        id fixedId: String? = nil, secret: String? = nil, clientAuth: Bool? = nil, adminAuth: String? = nil, webhook: String? = nil
    ) async throws -> TestSystem {
        let id = fixedId ?? newSystemId()
        var body: [String: JSON] = ["systemId": .string(id)]
        if let secret { body["secret"] = .string(secret) }
        if let webhook { body["webhook"] = .string(webhook) }
        if let clientAuth { body["clientAuth"] = .bool(clientAuth) }
        let r = try await post("/api/register", systemId: nil, auth: adminAuth ?? server.adminToken, json: .object(body))
        guard r.status == 200, r.code == 0 else {
            throw HeraldLaunchError(description: "register \(id) failed: \(r)")
        }
        let auth = secret != nil ? (clientAuth ?? false) : false
        return TestSystem(server: server, id: id, secret: secret, clientAuth: auth)
    }
}

/// A registered business system: calls carry its SystemId (and secret).
public struct TestSystem: Sendable {
    public let server: any HeraldEndpoint
    public let id: String
    public let secret: String?
    public let clientAuth: Bool

    public init(server: any HeraldEndpoint, id: String, secret: String?, clientAuth: Bool) {
        self.server = server
        self.id = id
        self.secret = secret
        self.clientAuth = clientAuth
    }

    public var api: HeraldAPI { server.api }

    /// The same system, reached through another node.
    public func via(_ node: any HeraldEndpoint) -> TestSystem {
        TestSystem(server: node, id: id, secret: secret, clientAuth: clientAuth)
    }

    public func call(
        _ route: String, _ body: JSON, headers: [(String, String)] = [], timeout: Duration = .seconds(15)
    ) async throws -> APIResponse {
        try await api.post("/api/\(route)", systemId: id, auth: secret, headers: headers, json: body, timeout: timeout)
    }

    /// Calls and requires success (HTTP 200, code 0); returns `data`.
    @discardableResult
    public func ok(
        _ route: String, _ body: JSON, headers: [(String, String)] = [], timeout: Duration = .seconds(15)
    ) async throws -> JSON {
        let r = try await call(route, body, headers: headers, timeout: timeout)
        guard r.status == 200, r.code == 0 else {
            throw HeraldLaunchError(description: "/api/\(route) \(body) failed: \(r)")
        }
        return r.data ?? .null
    }

    /// Sends to a client and returns the messageId.
    public func send(to clientId: String, _ extra: [String: JSON] = [:]) async throws -> String {
        var body = extra
        body["clientId"] = .string(clientId)
        let d = try await ok("send_to_client", .object(body))
        guard let m = d["messageId"]?.string else {
            throw HeraldLaunchError(description: "send_to_client answered no messageId: \(d)")
        }
        return m
    }

    public func bind(
        _ clientId: String, group: String, userId: String? = nil, extend: String? = nil,
        timeout: Duration = .seconds(15)
    ) async throws {
        var body: [String: JSON] = ["clientId": .string(clientId), "groupName": .string(group)]
        if let userId { body["userId"] = .string(userId) }
        if let extend { body["extend"] = .string(extend) }
        try await ok("bind_to_group", .object(body), timeout: timeout)
    }

    /// Opens a WebSocket for this system (with a valid JWT when client auth is on) and reads the first frame.
    public func connect(userId: String = "user", receiveBufferSize: Int? = nil) async throws -> ConnectedClient {
        var path = "/ws?systemId=\(id)"
        if clientAuth, let secret {
            path += "&token=" + makeJWT(secret: secret, sub: userId, exp: Date().addingTimeInterval(600))
        }
        let ws = try await TestWebSocket.connect(
            host: server.host, port: server.port, path: path, receiveBufferSize: receiveBufferSize)
        let first = try await ws.nextJSON()
        guard first["code"]?.int == 0, first["msg"]?.string == "success",
            let cid = first["data"]?["clientId"]?.string
        else {
            try? await ws.close()
            throw HeraldLaunchError(description: "unexpected first frame: \(first)")
        }
        return ConnectedClient(ws: ws, clientId: cid)
    }
}

public struct ConnectedClient: Sendable {
    public let ws: TestWebSocket
    public let clientId: String

    public init(ws: TestWebSocket, clientId: String) {
        self.ws = ws
        self.clientId = clientId
    }
}

public func newSystemId() -> String {
    "t" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
}

/// Unique names for groups, users and markers.
public func unique(_ prefix: String) -> String {
    prefix + "-" + UUID().uuidString.prefix(8).lowercased()
}

/// Changes one character in the middle of a client ID (keeps it URL-safe base64).
public func tamper(_ id: String) -> String {
    var chars = Array(id)
    let i = chars.count / 2
    chars[i] = chars[i] == "A" ? "B" : "A"
    return String(chars)
}
