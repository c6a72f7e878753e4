import Foundation
import HeraldTestSupport
import Testing

/// Webhooks on a standalone node (docs/lifecycle.md, "Webhooks"): a system's lifecycle events
/// POSTed to its receiver in signed batches, retried through failures, bounded when it hangs.
@Suite("Webhooks, standalone", .herald(["--admin-token", testAdminToken, "--webhook-timeout", "1"]))
struct WebhookTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    /// Connects and closes `count` clients: 2 events each.
    static func churn(_ sys: TestSystem, _ count: Int) async throws -> [String] {
        var ids: [String] = []
        for _ in 0..<count {
            let c = try await sys.connect()
            try await c.ws.close()
            ids.append(c.clientId)
        }
        return ids
    }

    /// Waits until the receiver has accepted `count` distinct events.
    static func accepted(_ receiver: WebhookReceiver, count: Int, timeout: Duration = .seconds(20)) async throws -> [JSON] {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            let events = receiver.acceptedEvents
            if Set(events.compactMap { $0["eventId"]?.string }).count >= count { return events }
            try await Task.sleep(for: .milliseconds(50))
        }
        return receiver.acceptedEvents
    }

    @Test("every event of the system arrives, signed with its secret, in order, as JSON arrays; other systems' events do not")
    func signedBatches() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { Task { await receiver.shutdown() } }
        let secret = "hook-secret-\(UUID().uuidString)"
        let sys = try await server.api.registerSystem(secret: secret, webhook: receiver.url)
        let other = try await server.api.registerSystem()
        let g = unique("g")
        let a = try await sys.connect()
        try await sys.bind(a.clientId, group: g)
        _ = try await Self.churn(other, 3)
        try await sys.ok("close_client", ["clientId": .string(a.clientId)])
        _ = try await a.ws.waitForClose(timeout: .seconds(5))
        let ids = try await Self.churn(sys, 5)
        let events = try await Self.accepted(receiver, count: 13)
        let expected = try await LifecycleChecks.events(server, sys.id)
        #expect(events.map { $0["eventId"]?.string } == expected.map { $0["eventId"]?.string }, "in the recorded order, once each")
        #expect(events.count == 13)
        #expect(events.allSatisfy { $0["systemId"]?.string == sys.id })
        #expect(Set(events.compactMap { $0["clientId"]?.string }) == Set([a.clientId] + ids))
        let deliveries = receiver.deliveries
        #expect(!deliveries.isEmpty)
        #expect(deliveries.allSatisfy { WebhookReceiver.signatureIsValid($0, secret: secret) }, "X-Herald-Signature is the body's HMAC")
        #expect(!deliveries.contains { WebhookReceiver.signatureIsValid($0, secret: "wrong") })
        #expect(deliveries.allSatisfy { $0.systemHeader == sys.id })
        try LifecycleChecks.expectValid(events)
    }

    @Test("a receiver that answers 500 for a while gets every event once it answers 200, each once after deduplication")
    func retriesThroughFailures() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { Task { await receiver.shutdown() } }
        receiver.setMode(.answer(500))
        let sys = try await server.api.registerSystem(secret: "s-\(UUID().uuidString)", webhook: receiver.url)
        let ids = try await Self.churn(sys, 5)
        try await Task.sleep(for: .milliseconds(1200))
        #expect(receiver.deliveries.count >= 2, "retried while failing")
        #expect(receiver.acceptedEvents.isEmpty)
        receiver.setMode(.answer(200))
        let events = try await Self.accepted(receiver, count: 10)
        #expect(Set(events.compactMap { $0["eventId"]?.string }).count == 10)
        #expect(Set(events.compactMap { $0["clientId"]?.string }) == Set(ids))
        let metrics = try await server.api.adminGet("/metrics").body
        #expect(metrics.contains("herald_webhook_failed_attempts_total "))
    }

    @Test("set_webhook sets, changes and removes the webhook; bad URLs and a system without a secret are refused")
    func setWebhook() async throws {
        let first = try await WebhookReceiver.start()
        let second = try await WebhookReceiver.start()
        defer {
            Task {
                await first.shutdown()
                await second.shutdown()
            }
        }
        let sys = try await server.api.registerSystem(secret: "s-\(UUID().uuidString)")
        _ = try await Self.churn(sys, 1)
        try await sys.ok("set_webhook", ["webhook": .string(first.url)])
        let one = try await Self.churn(sys, 1)
        #expect(try await Self.accepted(first, count: 2).compactMap { $0["clientId"]?.string } == one + one, "only events after it was set")
        try await sys.ok("set_webhook", ["webhook": .string(second.url)])
        let two = try await Self.churn(sys, 1)
        #expect(try await Self.accepted(second, count: 2).compactMap { $0["clientId"]?.string } == two + two)
        try await sys.ok("set_webhook", ["webhook": .null])
        _ = try await Self.churn(sys, 2)
        try await Task.sleep(for: .milliseconds(500))
        #expect(first.acceptedEvents.count == 2 && second.acceptedEvents.count == 2, "nothing after removal")
        for bad in ["ftp://x/hook", "not a url", "http://", "http://user:pw@host/x", String(repeating: "h", count: 3000)] {
            let r = try await sys.call("set_webhook", ["webhook": .string(bad)])
            #expect(r.status == 400 && r.code == 4000, "\(bad.prefix(30)): \(r)")
        }
        let r = try await sys.call("set_webhook", [:])
        #expect(r.status == 400, "no webhook member: \(r)")
        let open = try await server.api.registerSystem()
        let refused = try await open.call("set_webhook", ["webhook": .string(first.url)])
        #expect(refused.status == 400, "a system without a secret cannot sign: \(refused)")
        let register = try await server.api.post(
            "/api/register", systemId: nil, auth: testAdminToken,
            json: ["systemId": .string(newSystemId()), "webhook": .string(first.url)])
        #expect(register.status == 400, "register with a webhook needs a secret: \(register)")
    }

    static func metric(_ server: HeraldInstance, _ name: String) async throws -> Int {
        let body = try await server.api.adminGet("/metrics").body
        let line = body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    static func waitUntil(timeout: Duration, _ condition: @Sendable () async throws -> Bool) async throws -> Bool {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}

/// A receiver that never answers, on a node with a short retry horizon and a small queue.
@Suite(
    "Webhooks, standalone: a receiver that never answers",
    .herald([
        "--admin-token", testAdminToken, "--webhook-timeout", "1", "--webhook-retry-horizon", "3",
        "--webhook-queue-events", "40",
    ]))
struct WebhookHangTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("a receiver that never answers costs a bounded queue, ends in dead letters, and does not delay another system's webhook")
    func hangingReceiver() async throws {
        let hanging = try await WebhookReceiver.start()
        let healthy = try await WebhookReceiver.start()
        defer {
            Task {
                await hanging.shutdown()
                await healthy.shutdown()
            }
        }
        hanging.setMode(.hang)
        let stuck = try await server.api.registerSystem(secret: "s-\(UUID().uuidString)", webhook: hanging.url)
        let fine = try await server.api.registerSystem(secret: "s-\(UUID().uuidString)", webhook: healthy.url)
        let before = try await WebhookTests.metric(server, "herald_webhook_dead_letters_total")
        // 120 events for a queue of 40: most are dead letters at once.
        _ = try await WebhookTests.churn(stuck, 60)
        let started = ContinuousClock.now
        _ = try await WebhookTests.churn(fine, 5)
        let events = try await WebhookTests.accepted(healthy, count: 10, timeout: .seconds(5))
        let took = ContinuousClock.now - started
        #expect(Set(events.compactMap { $0["eventId"]?.string }).count == 10, "the healthy receiver got its 10 events")
        #expect(took < .seconds(3), "the healthy system's events took \(took)")
        let pending = try await WebhookTests.metric(server, "herald_webhook_pending_events")
        // The gauge is the node's: the stuck system's 40 at most, plus the healthy one's.
        #expect(pending <= 40 + 10, "\(pending) events waiting, over the stuck system's bound of 40")
        let dead = try await WebhookTests.metric(server, "herald_webhook_dead_letters_total") - before
        #expect(dead > 0)
        // Past the retry horizon (3 s) the batch in flight is a dead letter too, and the queue empties.
        let server = try self.server
        let allDead = try await WebhookTests.waitUntil(timeout: .seconds(20)) {
            try await WebhookTests.metric(server, "herald_webhook_dead_letters_total") - before >= 120
        }
        #expect(allDead, "every stuck event is a dead letter")
        #expect(try await WebhookTests.metric(server, "herald_webhook_pending_events") == 0)
        #expect(hanging.deliveries.allSatisfy { $0.answered == nil })
    }
}
