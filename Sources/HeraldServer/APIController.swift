import Crypto
import Foundation
import HeraldCore
import Hummingbird

/// The business API: `/api/*`, POST with JSON, answered `{"code","msg","data"}`.
struct APIController: Sendable {
    let node: HeraldNodeServices

    func register(to router: Router<HeraldRequestContext>) {
        let api = router.group("api")
        api.post("register") { request, _ in try await self.registerSystem(request) }
        send(api, "send_to_client") { request, systemId in
            try await self.sendToClient(try await request.decodeJSON(SendRequest.self, limit: self.limit), systemId: systemId)
        }
        send(api, "send_to_clients") { request, systemId in
            let body = try await request.decodeJSON(SendRequest.self, limit: self.limit)
            guard let clientIds = body.clientIds else { throw HeraldError.invalidField("clientIds", "must be an array of client IDs") }
            let result = try await self.node.router.sendToClients(
                systemId: systemId, clientIds: clientIds, payload: body.send.payload)
            let failed = result.failed.map { FailedClient(clientId: $0.clientId, code: $0.error.code, msg: $0.error.message) }
            return .success(BatchAnswer(messageId: result.messageId, failed: failed))
        }
        send(api, "send_to_group") { request, systemId in
            let body = try await request.decodeJSON(SendRequest.self, limit: self.limit)
            let group = try required(body.groupName, "groupName")
            let messageId = try await self.node.router.sendToGroup(
                systemId: systemId, group: group, payload: body.send.payload)
            return .sent(messageId: messageId)
        }
        send(api, "send_to_system") { request, systemId in
            let body = try await request.decodeJSON(SendFields.self, limit: self.limit)
            let messageId = try await self.node.router.sendToSystem(systemId: systemId, payload: body.payload)
            return .sent(messageId: messageId)
        }
        call(api, "bind_to_group") { request, systemId in
            let body = try await request.decodeJSON(BindRequest.self, limit: self.limit)
            try await self.node.router.bind(
                systemId: systemId, clientId: try required(body.clientId, "clientId"),
                group: try required(body.groupName, "groupName"), userId: body.userId ?? "", extend: body.extend ?? "")
            return .success
        }
        call(api, "unbind_from_group") { request, systemId in
            let body = try await request.decodeJSON(ClientRequest.self, limit: self.limit)
            try await self.node.router.unbind(
                systemId: systemId, clientId: try required(body.clientId, "clientId"),
                group: try required(body.groupName, "groupName"))
            return .success
        }
        call(api, "get_online_list") { request, systemId in
            let body = try await request.decodeJSON(GroupRequest.self, limit: self.limit)
            let members = await self.node.router.onlineMembers(systemId: systemId, group: try required(body.groupName, "groupName"))
            return .success(OnlineList(count: members.list.count, list: members.list, unreachable: members.unreachable.isEmpty ? nil : members.unreachable))
        }
        call(api, "client_status") { request, systemId in
            let body = try await request.decodeJSON(ClientRequest.self, limit: self.limit)
            let status = try await self.node.router.clientStatus(systemId: systemId, clientId: try required(body.clientId, "clientId"))
            return .success(ClientStatus(online: status.online, groups: status.groups))
        }
        call(api, "set_webhook") { request, systemId in
            let body = try await request.decodeJSON(WebhookRequest.self, limit: self.limit)
            guard body.given else {
                throw HeraldError.invalidField("webhook", "is required: a URL, or null to remove the webhook")
            }
            if let webhook = body.webhook, !WebhookURLRule.isValid(webhook) {
                throw HeraldError.invalidField("webhook", "must be \(WebhookURLRule.description)")
            }
            guard let secret = request.bearerToken, let system = try await self.node.fabric.systems.lookup(systemId),
                system.requiresSecret
            else {
                throw HeraldError.invalidField("webhook", "needs a system registered with a \"secret\": webhook bodies are signed with it")
            }
            try await self.node.fabric.systems.update(system.withWebhook(body.webhook, secret: secret, sealer: self.node.router.codec))
            self.node.logger.info(
                "webhook set", metadata: ["system": .string(systemId), "webhook": .string(body.webhook ?? "none")])
            return .success
        }
        call(api, "close_client") { request, systemId in
            let body = try await request.decodeJSON(ClientRequest.self, limit: self.limit)
            try await self.node.router.close(systemId: systemId, clientId: try required(body.clientId, "clientId"))
            return .success
        }
    }

    private var limit: Int { node.configuration.maxBodyBytes }

    /// A route for an authenticated system.
    private func call(
        _ group: RouterGroup<HeraldRequestContext>, _ path: String,
        _ handler: @escaping @Sendable (Request, String) async throws -> APIAnswer
    ) {
        group.post(RouterPath(path)) { request, _ in
            let systemId = try await self.authenticate(request)
            return try await handler(request, systemId).response
        }
    }

    /// A send route: authenticated, and idempotent under an `Idempotency-Key` header.
    private func send(
        _ group: RouterGroup<HeraldRequestContext>, _ path: String,
        _ send: @escaping @Sendable (Request, String) async throws -> APIAnswer
    ) {
        let metrics = node.metrics
        let handler: @Sendable (Request, String) async throws -> APIAnswer = { request, systemId in
            let answer = try await send(request, systemId)
            if answer.status == 200 { metrics.messagesPublished.increment() }
            return answer
        }
        group.post(RouterPath(path)) { request, _ in
            let systemId = try await self.authenticate(request)
            guard let key = request.header("Idempotency-Key"), !key.isEmpty else {
                return try await handler(request, systemId).response
            }
            guard key.utf8.count <= FieldLimits.idempotencyKeyBytes else {
                throw HeraldError.invalidField("Idempotency-Key", "header must be at most \(FieldLimits.idempotencyKeyBytes) bytes")
            }
            // The body is read before the cache is consulted so a repeat never streams twice.
            var collected = request
            let body = try await collected.collectBody(upTo: self.limit + 1)
            let fingerprint = Array(SHA256.hash(data: Array(body.readableBytesView)))
            let replayable = collected
            // "Nothing was sent" (5030) is not remembered: the retry it invites must run. An
            // unknown outcome (5031) is, so the retry it invites cannot send twice. In a cluster
            // the record is shared through etcd, so a retry through another node finds it too;
            // this node's cache only joins concurrent repeats that reach the same node.
            let shared = self.node.fabric.sharedIdempotency
            let outcome = await self.node.idempotency.answer(
                for: "\(systemId)\n\(path)\n\(key)", fingerprint: fingerprint, keep: { $0.status < 500 || $0.code == 5031 }
            ) {
                let run: @Sendable () async -> APIAnswer = {
                    do {
                        return try await handler(replayable, systemId)
                    } catch let error as HeraldError {
                        return .failure(error)
                    } catch {
                        return .failure(.malformedJSON("\(error)"))
                    }
                }
                guard let shared else { return await run() }
                do throws(HeraldError) {
                    switch try await shared.claim(systemId: systemId, route: path, key: key, fingerprint: fingerprint) {
                    case .conflict:
                        return .failure(.idempotencyConflict)
                    case .answered(let status, let code, let body):
                        return APIAnswer(status: status, body: body, code: code)
                    case .claimed(let revision):
                        let answer = await run()
                        if answer.code == 5030 {
                            await shared.release(systemId: systemId, route: path, key: key, revision: revision)
                        } else {
                            await shared.complete(
                                systemId: systemId, route: path, key: key, fingerprint: fingerprint, status: answer.status,
                                code: answer.code, body: answer.body)
                        }
                        return answer
                    }
                } catch {
                    return .failure(error)
                }
            }
            guard case .answered(let answer) = outcome else { throw HeraldError.idempotencyConflict }
            return answer.response
        }
    }

    private func sendToClient(_ body: SendRequest, systemId: String) async throws(HeraldError) -> APIAnswer {
        let clientId = try required(body.clientId, "clientId")
        let messageId = try await node.router.sendToClient(systemId: systemId, clientId: clientId, payload: body.send.payload)
        return .sent(messageId: messageId)
    }

    /// `send_to_client` without an Idempotency-Key, as `SendFastPath` serves it beside the
    /// router: the same checks, the same send and the same answer as the route above.
    func fastSendToClient(systemIdHeader: String?, authorization: String?, body: [UInt8]) async -> APIAnswer {
        do throws(HeraldError) {
            let systemId = try await authenticate(systemIdHeader: systemIdHeader, bearer: Request.bearerToken(in: authorization))
            let answer = try await sendToClient(try SendRequest(BodyFields(checked: try CheckedBody(body: body))), systemId: systemId)
            node.metrics.messagesPublished.increment()
            return answer
        } catch {
            return .failure(error)
        }
    }

    /// Checks SystemId, the system's secret and its rate; answers the system id.
    private func authenticate(_ request: Request) async throws -> String {
        try await authenticate(systemIdHeader: request.header("SystemId"), bearer: request.bearerToken)
    }

    private func authenticate(systemIdHeader: String?, bearer: String?) async throws(HeraldError) -> String {
        guard let systemId = systemIdHeader, !systemId.isEmpty else {
            throw HeraldError.invalidField("SystemId", "header is required")
        }
        guard SystemIDRule.isValid(systemId) else {
            throw HeraldError.invalidField("SystemId", "header must be \(SystemIDRule.description)")
        }
        guard let system = try await node.fabric.systems.lookup(systemId) else { throw HeraldError.unknownSystem(systemId) }
        guard system.accepts(secret: bearer) else {
            throw HeraldError.unauthorized("missing or wrong secret for system \(systemId): send Authorization: Bearer <secret>")
        }
        guard node.rateLimiter.allow(systemId) else { throw HeraldError.rateLimited }
        node.metrics.apiCalls.increment()
        return systemId
    }

    private func registerSystem(_ request: Request) async throws -> Response {
        let needsToken = !node.configuration.dev
        if needsToken, !node.isAdmin(request) {
            throw HeraldError.unauthorized("register needs the admin token: Authorization: Bearer <admin token>")
        }
        let body = try await request.decodeJSON(RegisterRequest.self, limit: limit)
        let systemId = try required(body.systemId, "systemId")
        guard SystemIDRule.isValid(systemId) else {
            throw HeraldError.invalidField("systemId", "must be \(SystemIDRule.description)")
        }
        if let secret = body.secret, secret.isEmpty { throw HeraldError.invalidField("secret", "must not be empty") }
        // A secret of any length guards the API (the contract's register shape). Client JWT auth
        // is opt-in, and HS256 wants a key at least as long as its output.
        let clientAuth = body.clientAuth ?? false
        if clientAuth {
            guard let secret = body.secret, secret.utf8.count >= 32 else {
                throw HeraldError.invalidField(
                    "secret", "must be at least 32 bytes when \"clientAuth\" is true (it signs client tokens, HS256)")
            }
        }
        if let webhook = body.webhook {
            guard WebhookURLRule.isValid(webhook) else { throw HeraldError.invalidField("webhook", "must be \(WebhookURLRule.description)") }
            guard body.secret != nil else {
                throw HeraldError.invalidField("webhook", "needs a \"secret\": webhook bodies are signed with it (X-Herald-Signature)")
            }
        }
        let record = SystemRecord(
            systemId: systemId, secret: body.secret, clientAuth: clientAuth, webhook: body.webhook, sealer: node.router.codec)
        try await node.fabric.systems.register(record)
        node.logger.info("system registered", metadata: ["system": .string(systemId), "clientAuth": "\(record.clientAuth)"])
        return APIAnswer.success.response
    }
}

struct FailedClient: Encodable {
    var clientId: String
    var code: Int
    var msg: String
}

struct BatchAnswer: Encodable {
    var messageId: String
    var failed: [FailedClient]
}

struct OnlineList: Encodable {
    var count: Int
    var list: [PresenceInfo]
    /// Nodes that did not answer in time (cluster only); absent when every node answered.
    var unreachable: [String]?
}

struct ClientStatus: Encodable {
    var online: Bool
    var groups: [String]
}
