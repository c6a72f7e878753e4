import HeraldTestSupport
import Foundation
import Testing

@Suite(
    "Configured limits: body, frame, outbound queue",
    .herald(["--max-body-bytes", "300000", "--max-frame-bytes", "1024", "--outbound-queue", "8"]))
struct LimitsTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("--max-body-bytes: a body over the limit answers 413/4130 and sends nothing; under it works")
    func bodyLimit() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let tooBig = try await sys.call(
            "send_to_client", ["clientId": .string(c.clientId), "data": .string(String(repeating: "x", count: 350_000))])
        expectFailure(tooBig, status: 413, code: 4130)
        let fits = String(repeating: "y", count: 250_000)
        let m = try await sys.send(to: c.clientId, ["data": .string(fits)])
        let f = try await c.ws.nextJSON()
        #expect(f["messageId"]?.string == m, "the rejected send must not deliver")
        #expect(f["data"]?.string == fits)
    }

    @Test("--max-frame-bytes: a client frame over the limit closes with 1009")
    func frameLimit() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        try await c.ws.sendFrame(size: 1000)
        try await c.ws.sendText("ping")
        #expect(try await c.ws.next() == "pong")
        try await c.ws.sendFrame(size: 2048)
        let (code, _) = try await c.ws.waitForClose()
        #expect(code == 1009)
        await c.ws.abort()
        try await expectStillServing(sys)
    }

    @Test("a client that stops reading is closed with 1013 once its outbound queue overflows")
    func slowConsumer() async throws {
        let sys = try await server.api.registerSystem()
        let slow = try await sys.connect(receiveBufferSize: 32 * 1024)
        let fast = try await sys.connect()
        defer { Task { try? await fast.ws.close() } }
        try await slow.ws.pauseReading()
        let payload = String(repeating: "z", count: 200 * 1024)
        // 60 x 200 KiB is far more than the queue bound (8 frames) plus the kernel's socket buffers.
        var sent = 0
        var answers: [Int: Int] = [:]
        let started = ContinuousClock.now
        while sent < 60, ContinuousClock.now - started < .seconds(20) {
            let r = try await sys.call("send_to_client", ["clientId": .string(slow.clientId), "data": .string(payload)])
            answers[r.code ?? -999, default: 0] += 1
            if r.code == 0 {
                sent += 1
            } else {
                #expect(r.code == 4040, "a send to a slow client answers 0 (or 4040 once it is closed): \(r)")
                break
            }
        }
        #expect(sent >= 8, "the first sends (up to the queue bound) answer 0: \(answers)")
        let sendTime = ContinuousClock.now - started

        // Resume promptly: the server may drop a client that still does not read after a grace period.
        try await slow.ws.resumeReading()
        let (end, received) = try await slow.ws.waitForCloseEvent(timeout: .seconds(20))
        #expect(
            end == .close(code: 1013),
            "expected a close frame with 1013, got \(end) after \(received) frames (\(sent) sends took \(sendTime))")
        #expect(received < sent, "received \(received) of \(sent): the queue must be bounded")
        await slow.ws.abort()
        // Other clients are not affected.
        let m = try await sys.send(to: fast.clientId, ["msg": "fast"])
        #expect(try await fast.ws.nextJSON()["messageId"]?.string == m)
        try await waitOffline(sys, slow.clientId)
        try await expectStillServing(sys)
    }
}

@Suite("Server pings every --ping-interval", .herald(["--ping-interval", "1"]))
struct PingIntervalTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("with --ping-interval 1 the client sees WebSocket ping frames and stays connected when it answers")
    func serverPings() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        let start = ContinuousClock.now
        let e1 = try await c.ws.nextEvent(timeout: .seconds(3), includePings: true)
        #expect(e1 == .ping, "expected a ping, got \(e1)")
        let e2 = try await c.ws.nextEvent(timeout: .seconds(3), includePings: true)
        #expect(e2 == .ping, "expected a second ping, got \(e2)")
        #expect(ContinuousClock.now - start < .seconds(4))
        try await c.ws.sendText("ping")
        #expect(try await c.ws.next() == "pong")
    }
}

@Suite("Fractional --ping-interval")
struct FractionalPingIntervalTests {
    @Test("--ping-interval 0.5 is accepted and pings about twice a second")
    func halfSecondPings() async throws {
        try await withHerald(args: ["--ping-interval", "0.5"]) { server in
            let sys = try await server.api.registerSystem()
            let c = try await sys.connect()
            let start = ContinuousClock.now
            for _ in 0..<3 {
                let e = try await c.ws.nextEvent(timeout: .seconds(2), includePings: true)
                #expect(e == .ping, "expected a ping, got \(e)")
            }
            #expect(ContinuousClock.now - start < .milliseconds(2500), "3 pings took \(ContinuousClock.now - start)")
            await c.ws.abort()
        }
    }
}

@Suite("Idle connections are closed after --idle-timeout", .herald(["--idle-timeout", "2"]))
struct IdleTimeoutTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("a client that sends nothing for --idle-timeout is closed with 1000")
    func idleClose() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        let start = ContinuousClock.now
        let (code, _) = try await c.ws.waitForClose(timeout: .seconds(8))
        let elapsed = ContinuousClock.now - start
        #expect(code == 1000)
        #expect(elapsed >= .milliseconds(1500), "closed too early: \(elapsed)")
        await c.ws.abort()
        try await waitOffline(sys, c.clientId)
    }

    @Test("a client that keeps sending stays connected past --idle-timeout")
    func activeStaysOpen() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        for _ in 0..<8 {
            try await Task.sleep(for: .milliseconds(500))
            try await c.ws.sendText("ping")
            #expect(try await c.ws.next() == "pong")
        }
        let d = try await sys.ok("client_status", ["clientId": .string(c.clientId)])
        #expect(d["online"]?.bool == true)
    }
}

@Suite(
    "Pongs count as activity for --idle-timeout",
    .herald(["--idle-timeout", "2", "--ping-interval", "0.5"]))
struct PongActivityTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("a client that only answers the server's pings stays connected past --idle-timeout")
    func pongsKeepAlive() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        defer { Task { try? await c.ws.close() } }
        try await Task.sleep(for: .seconds(5))
        #expect(c.ws.pingCount >= 4, "expected pings every 0.5 s, got \(c.ws.pingCount)")
        let d = try await sys.ok("client_status", ["clientId": .string(c.clientId)])
        #expect(d["online"]?.bool == true, "a client answering pings was closed as idle")
        let m = try await sys.send(to: c.clientId)
        #expect(try await c.ws.nextJSON()["messageId"]?.string == m)
    }

    @Test("a client that answers nothing, not even pings, is closed")
    func silentClosed() async throws {
        let sys = try await server.api.registerSystem()
        let c = try await sys.connect()
        c.ws.setAutoPong(false)
        _ = try await c.ws.waitForClose(timeout: .seconds(8))
        await c.ws.abort()
        try await waitOffline(sys, c.clientId)
    }
}

@Suite("Rate limit per system", .herald(["--rate-limit", "5"]))
struct RateLimitTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("--rate-limit 5: more than 5 calls in a second answer 429 with code 4290; other systems are unaffected")
    func rateLimited() async throws {
        let sys = try await server.api.registerSystem()
        let other = try await server.api.registerSystem()
        try await Task.sleep(for: .milliseconds(1100))
        let results = try await withThrowingTaskGroup(of: APIResponse.self) { group in
            for _ in 0..<15 {
                group.addTask { try await sys.call("get_online_list", ["groupName": "g"]) }
            }
            var all: [APIResponse] = []
            for try await r in group { all.append(r) }
            return all
        }
        let ok = results.filter { $0.status == 200 && $0.code == 0 }
        let limited = results.filter { $0.status == 429 }
        #expect(ok.count >= 1, "\(results)")
        #expect(ok.count <= 10, "15 calls at once with a limit of 5/s: \(ok.count) succeeded")
        #expect(!limited.isEmpty, "no 429 among \(results)")
        for r in limited { expectFailure(r, status: 429, code: 4290) }
        #expect(results.allSatisfy { ($0.status == 200 && $0.code == 0) || $0.status == 429 }, "\(results)")

        expectSuccess(try await other.call("get_online_list", ["groupName": "g"]))
        try await Task.sleep(for: .milliseconds(1500))
        expectSuccess(try await sys.call("get_online_list", ["groupName": "g"]))
    }
}
