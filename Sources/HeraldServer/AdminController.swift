import Foundation
import HeraldCore
import Hummingbird

/// Health, readiness, metrics, and the ops routes under `/admin` (admin token).
struct AdminController: Sendable {
    let node: HeraldNodeServices

    func register(to router: Router<HeraldRequestContext>) {
        let health: @Sendable (Request, HeraldRequestContext) -> Response = { _, _ in
            APIAnswer.success(["status": "ok"]).response
        }
        let readiness: @Sendable (Request, HeraldRequestContext) -> Response = { _, _ in
            node.isReady
                ? APIAnswer.success(["ready": true]).response
                : APIAnswer.failure(
                    HeraldError(.unavailable, message: "not ready: \(node.notReadyReason ?? "starting")")
                ).response
        }
        // HEAD too: load balancers often probe with it (the server sends the headers only).
        router.get("healthz", use: health)
        router.head("healthz", use: health)
        router.get("readyz", use: readiness)
        router.head("readyz", use: readiness)
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: node.metrics.exposition() + HeraldMetrics.coreCounters(node.fabric.delivery) + node.fabric.metricsText
                                + node.webhooks.metricsText)))
        }
        let admin = router.group("admin")
        admin.get("nodes") { request, _ in
            try authorize(request)
            return APIAnswer.success(node.fabric.liveNodes(localConnections: node.registry.count)).response
        }
        admin.get("replay") { request, _ in
            try authorize(request)
            let filter = try ReplayFilter.parse(Self.options(request))
            var body = ByteBuffer()
            for line in try await node.fabric.replayLines(filter) {
                body.writeString(line.json)
                body.writeString("\n")
            }
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: .init(byteBuffer: body))
        }
        admin.post("replay/redeliver") { request, _ in
            try authorize(request)
            let filter = try ReplayFilter.parse(Self.options(request))
            let (redelivered, skipped) = try await node.redeliver(filter)
            return APIAnswer.success(["redelivered": redelivered, "skipped": skipped]).response
        }
        registerEvents(to: admin)
        admin.get("trace/:messageId") { request, context in
            try authorize(request)
            let messageId = try context.parameters.require("messageId")
            let found: [TraceStep]?
            do {
                found = try await node.fabric.trace.steps(for: messageId)
            } catch {
                throw HeraldError(.unavailable, message: "cannot read the trace from Kafka: \(error)")
            }
            guard let steps = found else { throw HeraldError.unknownMessage }
            return APIAnswer.success(MessageTrace(messageId: messageId, steps: steps)).response
        }
    }

    /// `GET /admin/events?systemId=S[&limit=N]`: the recent lifecycle events of a system,
    /// oldest first (standalone: from memory; cluster: the last hour of `herald.lifecycle`).
    static let eventsLimit = 1000

    func registerEvents(to admin: RouterGroup<HeraldRequestContext>) {
        admin.get("events") { request, _ in
            try authorize(request)
            let options = Self.options(request)
            guard let systemId = options["systemId"], SystemIDRule.isValid(systemId) else {
                throw HeraldError.invalidField("systemId", SystemIDRule.description)
            }
            var limit = 100
            if let text = options["limit"] {
                guard let value = Int(text), (1...Self.eventsLimit).contains(value) else {
                    throw HeraldError.invalidField("limit", "1 up to \(Self.eventsLimit)")
                }
                limit = value
            }
            return APIAnswer.success(try await node.fabric.lifecycle.recent(systemId: systemId, limit: limit)).response
        }
    }

    private func authorize(_ request: Request) throws {
        try Self.authorize(request, node: node)
    }

    static func authorize(_ request: Request, node: HeraldNodeServices) throws {
        guard node.isAdmin(request) else {
            throw HeraldError.unauthorized("admin routes need the admin token: Authorization: Bearer <admin token>")
        }
    }

    private static func options(_ request: Request) -> [String: String] {
        var options: [String: String] = [:]
        for (key, value) in request.uri.queryParameters {
            options[String(key)] = String(value)
        }
        return options
    }
}

extension HeraldNodeServices {
    /// Sends the matching messages again to targets online now; answers (sent, skipped).
    func redeliver(_ filter: ReplayFilter) async throws -> (Int, Int) {
        var sent = 0
        var skipped = 0
        for message in try await fabric.replayMessages(filter, codec: router.codec) {
            // Earlier redeliveries are not sent again; they count as skipped, as in `herald replay`.
            if !message.redelivered, try await router.redeliver(message) { sent += 1 } else { skipped += 1 }
        }
        return (sent, skipped)
    }
}
