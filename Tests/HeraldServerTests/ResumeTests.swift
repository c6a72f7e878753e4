import Foundation
import HeraldTestSupport
import Testing

/// Resume on a standalone node, from its journal (docs/websocket.md, "Resume").
@Suite("Resume: session tokens, positions, recovery from the journal", .herald())
struct ResumeTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    /// A client with its latest session token and the `pos` of the last frame it read.
    struct Away {
        var clientId: String
        var token: String
        var pos: String
    }

    /// Reads until the push `messageId` arrives; returns its frame.
    static func read(_ ws: TestWebSocket, until messageId: String) async throws -> JSON {
        while true {
            let f = try await nextNonPresence(ws)
            if f["messageId"]?.string == messageId { return f }
        }
    }

    static func resumePath(_ sys: TestSystem, token: String, since: String) -> String {
        "/ws?systemId=\(sys.id)&resume=\(token)&since=\(since)"
    }

    @Test("the welcome is followed by a 1003 session frame, sent again after each bind and unbind; pushes carry pos")
    func sessionFramesAndPositions() async throws {
        let sys = try await server.api.registerSystem()
        let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)")
        defer { Task { try? await ws.close() } }
        ws.flags.sessionFrames.store(true, ordering: .relaxed)
        let welcome = try await ws.nextJSON()
        let clientId = try #require(welcome["data"]?["clientId"]?.string)
        #expect(welcome["data"]?["resumed"] == nil, "a plain connect says nothing of resuming: \(welcome)")
        let first = try await ws.nextJSON()
        #expect(first["code"]?.int == 1003)
        #expect(first["msg"]?.string == "session")
        let token = try #require(first["data"]?["session"]?.string)
        let g = unique("g")
        try await sys.bind(clientId, group: g)
        let afterBind = try await nextNonPresence(ws)
        #expect(afterBind["code"]?.int == 1003)
        let boundToken = try #require(afterBind["data"]?["session"]?.string)
        #expect(boundToken != token, "the token changes with the groups")
        try await sys.ok("unbind_from_group", ["clientId": .string(clientId), "groupName": .string(g)])
        let afterUnbind = try await nextNonPresence(ws)
        #expect(afterUnbind["code"]?.int == 1003)
        let m = try await sys.send(to: clientId)
        let push = try await Self.read(ws, until: m)
        let pos = try #require(push["pos"]?.string, "a push frame carries pos: \(push)")
        #expect(!pos.isEmpty)
        let m2 = try await sys.send(to: clientId)
        let push2 = try await Self.read(ws, until: m2)
        #expect(push2["pos"]?.string != pos, "each message moves the position")
    }

    @Test("a client that read no push resumes from its session frame's pos (each session frame carries one)")
    func resumeFromTheSessionPosition() async throws {
        let sys = try await server.api.registerSystem()
        let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: "/ws?systemId=\(sys.id)")
        ws.flags.sessionFrames.store(true, ordering: .relaxed)
        let clientId = try #require(try await ws.nextJSON()["data"]?["clientId"]?.string)
        let first = try await ws.nextJSON()
        #expect(first["data"]?["pos"]?.string != nil, "the first session frame names where the connection joined: \(first)")
        let g = unique("g")
        try await sys.bind(clientId, group: g)
        let bound = try await nextNonPresence(ws)
        let token = try #require(bound["data"]?["session"]?.string)
        let pos = try #require(bound["data"]?["pos"]?.string, "a bind's session frame carries pos: \(bound)")
        try await ws.close()
        try await waitUntilOffline(sys, clientId)
        let missed = try #require(try await sys.ok("send_to_group", ["groupName": .string(g)])["messageId"]?.string)
        let again = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: Self.resumePath(sys, token: token, since: pos))
        defer { Task { try? await again.close() } }
        again.flags.sessionFrames.store(true, ordering: .relaxed)
        let welcome = try await again.nextJSON()
        #expect(welcome["data"]?["resumed"]?.bool == true, "\(welcome)")
        #expect(welcome["data"]?["recovered"]?.int == 1, "\(welcome)")
        let session = try await again.nextJSON()
        #expect(session["code"]?.int == 1003 && session["data"]?["pos"]?.string != nil, "the new session, with its pos: \(session)")
        let recovered = try await nextNonPresence(again)
        #expect(recovered["messageId"]?.string == missed)
        #expect(recovered["recovered"]?.bool == true)
    }

    @Test("a reconnect with its token and last pos gets every message it missed, oldest first, marked recovered, then live ones")
    func resumeRecoversWhatWasMissed() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let g1 = unique("g1")
        let g2 = unique("g2")
        try await sys.bind(c.clientId, group: g1, userId: "ann", extend: "e1")
        try await sys.bind(c.clientId, group: g2)
        let marker = try await sys.send(to: c.clientId)
        let markerFrame = try await Self.read(c.ws, until: marker)
        let pos = try #require(markerFrame["pos"]?.string)
        let token = try #require(c.ws.flags.session.withLock { $0 }, "a session token after the binds")
        // Pushed to the socket but never read: the client's position is still the marker's.
        var missed = [try await sys.send(to: c.clientId), try await sys.send(to: c.clientId)]
        try await c.ws.close()
        try await waitUntilOffline(sys, c.clientId)
        for (route, target) in [("send_to_group", g1), ("send_to_group", g2), ("send_to_system", "")] {
            for k in 0..<3 {
                var body: [String: JSON] = ["data": .string("\(route)-\(target)-\(k)")]
                if !target.isEmpty { body["groupName"] = .string(target) }
                let d = try await sys.ok(route, .object(body))
                missed.append(try #require(d["messageId"]?.string))
            }
        }
        let other = try await server.api.registerSystem()
        _ = try await other.ok("send_to_system", ["msg": "not for this client"])

        let ws = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: Self.resumePath(sys, token: token, since: pos))
        defer { Task { try? await ws.close() } }
        let welcome = try await ws.nextJSON()
        #expect(welcome["data"]?["resumed"]?.bool == true, "\(welcome)")
        #expect(welcome["data"]?["recovered"]?.int == missed.count, "\(welcome)")
        let newId = try #require(welcome["data"]?["clientId"]?.string)
        #expect(newId != c.clientId)
        var got: [String] = []
        for _ in missed {
            let f = try await nextNonPresence(ws)
            #expect(f["recovered"]?.bool == true, "\(f)")
            #expect(f["pos"]?.string != nil)
            got.append(f["messageId"]?.string ?? "")
        }
        #expect(got == missed, "every missed message once, in the order sent")
        // The groups came back with their attributes, and live frames follow, unmarked.
        let status = try await sys.ok("client_status", ["clientId": .string(newId)])
        #expect(Set(status["groups"]?.array?.compactMap(\.string) ?? []) == [g1, g2], "\(status)")
        let online = try await sys.ok("get_online_list", ["groupName": .string(g1)])
        #expect(online["list"]?[0]?["userId"]?.string == "ann" && online["list"]?[0]?["extend"]?.string == "e1", "\(online)")
        let live = try await sys.ok("send_to_group", ["groupName": .string(g1)])
        let liveId = try #require(live["messageId"]?.string)
        let f = try await Self.read(ws, until: liveId)
        #expect(f["recovered"] == nil, "a live frame is not marked: \(f)")
        #expect(f["groupName"]?.string == g1)
    }

    @Test("a bad token or position is not resumed, and says why")
    func badTokenOrPosition() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let m = try await sys.send(to: c.clientId)
        let pos = try #require(try await Self.read(c.ws, until: m)["pos"]?.string)
        let token = try #require(c.ws.flags.session.withLock { $0 })
        try await c.ws.close()
        let other = try await server.api.registerSystem()
        let cases: [(String, String)] = [
            ("/ws?systemId=\(sys.id)&resume=not-a-token&since=\(pos)", "bad token"),
            ("/ws?systemId=\(other.id)&resume=\(token)&since=\(pos)", "bad token"),
            ("/ws?systemId=\(sys.id)&resume=\(token)", "bad position"),
            ("/ws?systemId=\(sys.id)&resume=\(token)&since=AAAA", "bad position"),
        ]
        for (path, reason) in cases {
            let ws = try await TestWebSocket.connect(host: try server.host, port: try server.port, path: path)
            let welcome = try await ws.nextJSON()
            #expect(welcome["code"]?.int == 0, "still admitted: \(welcome)")
            #expect(welcome["data"]?["resumed"]?.bool == false, "\(path): \(welcome)")
            #expect(welcome["data"]?["reason"]?.string == reason, "\(path): \(welcome)")
            #expect(welcome["data"]?["clientId"]?.string != nil)
            try? await ws.close()
        }
    }
}

// A window long enough that a loaded machine's slowness is never "window exceeded" here.
@Suite("Resume bounds: --resume-max-messages", .herald(["--resume-max-messages", "3", "--resume-window", "120"]))
struct ResumeBoundsTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    func away(_ sys: TestSystem) async throws -> (token: String, pos: String, clientId: String) {
        let c = try await sys.connect()
        let m = try await sys.send(to: c.clientId)
        let pos = try #require(try await ResumeTests.read(c.ws, until: m)["pos"]?.string)
        let token = try #require(c.ws.flags.session.withLock { $0 })
        try await c.ws.close()
        try await waitUntilOffline(sys, c.clientId)
        return (token, pos, c.clientId)
    }

    func welcome(_ sys: TestSystem, _ a: (token: String, pos: String, clientId: String)) async throws -> JSON {
        let ws = try await TestWebSocket.connect(
            host: try server.host, port: try server.port, path: ResumeTests.resumePath(sys, token: a.token, since: a.pos))
        defer { Task { try? await ws.close() } }
        return try await ws.nextJSON()
    }

    @Test("more to recover than --resume-max-messages: resumed false, nothing recovered; at the cap it resumes")
    func tooMany() async throws {
        let sys = try await server.api.registerSystem()
        let a = try await away(sys)
        for _ in 0..<3 { try await sys.ok("send_to_system", ["msg": "m"]) }
        let atCap = try await welcome(sys, a)
        #expect(atCap["data"]?["resumed"]?.bool == true && atCap["data"]?["recovered"]?.int == 3, "\(atCap)")
        try await sys.ok("send_to_system", ["msg": "one more"])
        let over = try await welcome(sys, a)
        #expect(over["data"]?["resumed"]?.bool == false, "\(over)")
        #expect(over["data"]?["reason"]?.string == "too many messages", "\(over)")
    }

}

@Suite("Resume bounds: --resume-window", .herald(["--resume-window", "2"]))
struct ResumeWindowTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("a position older than --resume-window: resumed false")
    func windowExceeded() async throws {
        let sys = try await server.api.registerSystem()
        // The helpers reach this suite's node (SharedHerald is the current suite's).
        let bounds = ResumeBoundsTests()
        let a = try await bounds.away(sys)
        try await Task.sleep(for: .milliseconds(2500))
        let late = try await bounds.welcome(sys, a)
        #expect(late["data"]?["resumed"]?.bool == false, "\(late)")
        #expect(late["data"]?["reason"]?.string == "window exceeded", "\(late)")
    }
}

/// Waits until the server has noticed the client's close (sends to it answer 4040).
func waitUntilOffline(_ sys: TestSystem, _ clientId: String) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while ContinuousClock.now < deadline {
        let r = try await sys.call("client_status", ["clientId": .string(clientId)])
        if r.data?["online"]?.bool == false { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("client \(clientId) still online 5 s after closing")
}
