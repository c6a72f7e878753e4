import NIOCore
import NIOEmbedded
import NIOConcurrencyHelpers
import NIOHTTP1
import Testing

@testable import HeraldServer

@Suite("Connection guards: origins, the upgrade check, HTTP deadlines")
struct ConnectionGuardTests {
    @Test("origin patterns: any, exact, wildcard host; compared without case")
    func origins() {
        #expect(OriginPolicy(["*"]).allows("https://anything.example"))
        let policy = OriginPolicy(["https://app.example.com", "https://*.example.org"])
        #expect(policy.allows("https://app.example.com"))
        #expect(policy.allows("HTTPS://APP.EXAMPLE.COM"))
        #expect(!policy.allows("https://app.example.com.evil.net"))
        #expect(!policy.allows("http://app.example.com"))
        #expect(policy.allows("https://a.example.org"))
        #expect(!policy.allows("https://example.org"))
        #expect(!policy.allows("https://evil.net/.example.org"))
        #expect(!OriginPolicy([]).allows("https://app.example.com"))
        #expect(OriginPolicy.isOwnOrigin("http://127.0.0.1:7800", host: "127.0.0.1:7800"))
        #expect(!OriginPolicy.isOwnOrigin("http://evil", host: "127.0.0.1:7800"))
    }

    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    func head(_ method: HTTPMethod = .GET, _ uri: String = "/ws?systemId=s", drop: String? = nil, set: [(String, String)] = [])
        -> HTTPRequestHead
    {
        var headers = HTTPHeaders([
            ("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", Self.key),
        ])
        if let drop { headers.remove(name: drop) }
        for (name, value) in set { headers.replaceOrAdd(name: name, value: value) }
        return HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
    }

    func check(_ head: HTTPRequestHead, origins: [String] = ["*"]) -> Int? {
        WebSocketHandshake.check(method: head.method, uri: head.uri, headers: head.headers, origins: OriginPolicy(origins))
            .map { Int($0.status.code) }
    }

    @Test("the upgrade check: 400 for the wrong method, path, Connection or key; 426 for the version; 403 for the origin")
    func handshake() {
        #expect(check(head()) == nil)
        #expect(check(head(.POST)) == 400)
        #expect(check(head(.GET, "/other")) == 400)
        #expect(check(head(drop: "Connection")) == 400)
        #expect(check(head(set: [("Sec-WebSocket-Key", "abc")])) == 400)
        #expect(check(head(set: [("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA")])) == 400, "21 bytes is not 16")
        #expect(check(head(drop: "Sec-WebSocket-Key")) == 400)
        #expect(check(head(set: [("Sec-WebSocket-Version", "8")])) == 426)
        #expect(check(head(set: [("Origin", "https://evil.example")]), origins: ["https://good.example"]) == 403)
        #expect(check(head(set: [("Origin", "https://good.example")]), origins: ["https://good.example"]) == nil)
    }

    @Test("UpgradeRequestGuard answers a bad upgrade itself and passes every other request on")
    func upgradeGuard() throws {
        let channel = EmbeddedChannel(handler: UpgradeRequestGuard(origins: OriginPolicy(["*"])))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let plain = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/healthz", headers: ["Host": "x"])
        try channel.writeInbound(HTTPServerRequestPart.head(plain))
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == .head(plain))
        try channel.writeInbound(HTTPServerRequestPart.head(head(set: [("Sec-WebSocket-Version", "7")])))
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil, "a refused request goes no further")
        guard case .head(let response) = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("expected a response head")
            return
        }
        #expect(response.status == .upgradeRequired)
        #expect(response.headers["Sec-WebSocket-Version"] == ["13"])
        guard case .body(.byteBuffer(let body)) = try channel.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("expected a body")
            return
        }
        #expect(String(buffer: body).contains("\"code\":4000"))
        #expect(try channel.readOutbound(as: HTTPServerResponsePart.self) == .end(nil))
        #expect(!channel.isActive, "the connection closes after the answer")
    }

    @Test("HTTPDeadlineHandler: a head must come in time; none runs while a request is answered; keep-alive is bounded")
    func deadlines() throws {
        let loop = EmbeddedEventLoop()
        let timeouts = NIOLockedValueBox(0)
        let handler = HTTPDeadlineHandler(
            headerTimeout: .seconds(10), bodyTimeout: .seconds(30), keepAliveTimeout: .seconds(60),
            onTimeout: { timeouts.withLockedValue { $0 += 1 } })
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        loop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        let request = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/x", headers: ["Host": "x"])
        try channel.writeInbound(HTTPServerRequestPart.head(request))
        loop.advanceTime(by: .seconds(29))
        #expect(channel.isActive, "the body limit started with the head")
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        loop.advanceTime(by: .seconds(600))
        #expect(channel.isActive, "no limit while the request is being answered")
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        loop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "closed after the keep-alive timeout")
        #expect(timeouts.withLockedValue { $0 } == 1)

        let slow = EmbeddedChannel(
            handler: HTTPDeadlineHandler(
                headerTimeout: .seconds(10), bodyTimeout: .seconds(30), keepAliveTimeout: .seconds(60), onTimeout: {}), loop: loop)
        try slow.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        loop.advanceTime(by: .seconds(11))
        #expect(!slow.isActive, "no head within the header timeout: closed")

        // A head on a kept-alive connection, then no body: closed at the body timeout, exactly.
        let stalled = EmbeddedChannel(
            handler: HTTPDeadlineHandler(
                headerTimeout: .seconds(10), bodyTimeout: .seconds(30), keepAliveTimeout: .seconds(60), onTimeout: {}), loop: loop)
        try stalled.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for _ in 0..<3 {
            loop.advanceTime(by: .seconds(5))
            try stalled.writeInbound(HTTPServerRequestPart.head(request))
            try stalled.writeInbound(HTTPServerRequestPart.end(nil))
            try stalled.writeOutbound(HTTPServerResponsePart.end(nil))
        }
        loop.advanceTime(by: .seconds(7))
        try stalled.writeInbound(HTTPServerRequestPart.head(request))
        loop.advanceTime(by: .seconds(29))
        #expect(stalled.isActive, "29 s into the body")
        loop.advanceTime(by: .seconds(2))
        #expect(!stalled.isActive, "no body within the body timeout: closed")
    }
}
