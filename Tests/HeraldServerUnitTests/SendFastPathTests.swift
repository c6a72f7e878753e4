import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Synchronization
import Testing

@testable import HeraldServer

@Suite("send_to_client beside the router: which requests, and answers in request order")
struct SendFastPathTests {
    static func post(_ path: String = "/api/send_to_client", length: Int? = 2, _ extra: [(String, String)] = []) -> HTTPRequest {
        var fields = HTTPFields()
        fields[HTTPField.Name("SystemId")!] = "s1"
        if let length { fields[.contentLength] = String(length) }
        for (name, value) in extra { fields[HTTPField.Name(name)!] = value }
        return HTTPRequest(method: .post, scheme: nil, authority: "x", path: path, headerFields: fields)
    }

    @Test("only a plain send_to_client with a known length within the limit is taken")
    func eligibility() {
        let limit = 100
        #expect(SendFastPathMachine.fastRequest(Self.post(), bodyLimit: limit)?.systemId == "s1")
        #expect(SendFastPathMachine.fastRequest(Self.post("/api/send_to_client?x=1"), bodyLimit: limit) != nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 100), bodyLimit: limit) != nil)
        // Hummingbird answers these: another route, too long or unknown length, idempotency, CORS, Expect.
        #expect(SendFastPathMachine.fastRequest(Self.post("/api/send_to_clients"), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post("/api/send_to_client/x"), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 101), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: nil), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 2, [("Idempotency-Key", "k")]), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 2, [("Origin", "https://a")]), bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 2, [("Expect", "100-continue")]), bodyLimit: limit) == nil)
        var get = Self.post()
        get.method = .get
        #expect(SendFastPathMachine.fastRequest(get, bodyLimit: limit) == nil)
        #expect(SendFastPathMachine.fastRequest(Self.post(length: 2, [("Connection", "close")]), bodyLimit: limit)?.closeAfter == true)
    }

    @Test("a request behind one Hummingbird answers waits for that answer's end")
    func ordering() {
        var m = SendFastPathMachine(bodyLimit: 100)
        #expect(m.inbound(.head(Self.post("/api/client_status"))) == .forward)
        #expect(m.inbound(.body(ByteBuffer(string: "{}"))) == .forward)
        #expect(!m.awaitsAnswer)
        #expect(m.inbound(.end(nil)) == .forward)
        #expect(m.awaitsAnswer)
        #expect(m.inbound(.head(Self.post())) == .hold)
        let flowsAgain = m.responseEnded()
        #expect(flowsAgain)
        #expect(m.inbound(.head(Self.post())) == .consumed)
        #expect(m.inbound(.body(ByteBuffer(string: "{}"))) == .consumed)
        let fast = SendFastPathMachine.FastRequest(systemId: "s1", authorization: nil, length: 2, closeAfter: false)
        #expect(m.inbound(.end(nil)) == .answer(fast, body: Array("{}".utf8)))
        #expect(m.inbound(.head(Self.post("/api/client_status"))) == .hold)
        m.answered()
        #expect(m.isIdle)
        // Hummingbird may answer before it read the whole request (413): idle once both ended.
        #expect(m.inbound(.head(Self.post("/api/client_status"))) == .forward)
        let flowsEarly = m.responseEnded()
        #expect(!flowsEarly)
        #expect(m.inbound(.end(nil)) == .forward)
        #expect(m.isIdle)
    }

    /// A route the test releases by hand, recording what it was asked.
    final class HeldRoute: Sendable {
        let asked = Mutex<[String]>([])
        let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])

        var route: SendFastPath.Route {
            { _, body in
                self.asked.withLock { $0.append(String(decoding: body, as: UTF8.self)) }
                await withCheckedContinuation { c in self.waiting.withLock { $0.append(c) } }
                return APIAnswer(status: 200, body: Data(#"{"code":0}"#.utf8))
            }
        }

        func releaseOne() async {
            while true {
                if let c = waiting.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return c.resume() }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    @Test("the handler answers in the pipeline, holds what follows, then hands it on in order")
    func handlerKeepsOrder() async throws {
        let route = HeldRoute()
        let channel = NIOAsyncTestingChannel()
        let handlerRoute = route.route
        try await channel.testingEventLoop.executeInContext {
            try channel.pipeline.syncOperations.addHandler(SendFastPath(bodyLimit: 100, route: handlerRoute))
        }
        // The testing loop runs what is handed to it (the route's task, its answer) when pumped.
        let loop = channel.testingEventLoop
        let pump = Task {
            while !Task.isCancelled {
                await loop.run()
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        defer { pump.cancel() }
        // A fast request, then a Hummingbird one, in one read.
        try await channel.writeInbound(HTTPRequestPart.head(Self.post()))
        try await channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try await channel.writeInbound(HTTPRequestPart.end(nil))
        try await channel.writeInbound(HTTPRequestPart.head(Self.post("/api/client_status")))
        try await channel.writeInbound(HTTPRequestPart.end(nil))
        // Nothing reached Hummingbird while the fast answer is pending.
        #expect(try await channel.readInbound(as: HTTPRequestPart.self) == nil)
        await route.releaseOne()
        let head = try await channel.waitForOutboundWrite(as: HTTPResponsePart.self)
        guard case .head(let response) = head else {
            Issue.record("expected a response head, got \(head)")
            return
        }
        #expect(response.status.code == 200)
        #expect(response.headerFields[.contentLength] == "10")
        #expect(response.headerFields[.server] == "Herald")
        #expect(response.headerFields[.date] != nil)
        let body = try await channel.waitForOutboundWrite(as: HTTPResponsePart.self)
        guard case .body(let buffer) = body else {
            Issue.record("expected a body, got \(body)")
            return
        }
        #expect(String(buffer: buffer) == #"{"code":0}"#)
        guard case .end = try await channel.waitForOutboundWrite(as: HTTPResponsePart.self) else {
            Issue.record("expected the end")
            return
        }
        // Then the held request goes on, whole.
        guard case .head(let next) = try await channel.waitForInboundWrite(as: HTTPRequestPart.self) else {
            Issue.record("expected the next request's head")
            return
        }
        #expect(next.path == "/api/client_status")
        guard case .end = try await channel.waitForInboundWrite(as: HTTPRequestPart.self) else {
            Issue.record("expected the next request's end")
            return
        }
        #expect(route.asked.withLock { $0 } == ["{}"])
        _ = try? await channel.finish()
    }
}
