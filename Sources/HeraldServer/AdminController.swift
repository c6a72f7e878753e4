import Foundation
import HeraldCore
import Hummingbird

/// Health, readiness, metrics, and the ops routes under `/admin` (admin token).
struct AdminController: Sendable {
    let node: HeraldNodeServices

    func register(to router: Router<HeraldRequestContext>) {
        router.get("healthz") { _, _ in APIAnswer.success(["status": "ok"]).response }
        router.get("readyz") { _, _ in
            node.isReady
                ? APIAnswer.success(["ready": true]).response
                : APIAnswer.failure(
                    HeraldError(code: 5030, status: 503, message: "not ready: \(node.notReadyReason ?? "starting")")
                ).response
        }
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: node.metrics.exposition())))
        }
        let admin = router.group("admin")
        admin.get("nodes") { request, _ in
            try authorize(request)
            guard let cluster = node.cluster else {
                return APIAnswer.success([NodeInfo(identity: node.membership.local, connections: node.registry.count)]).response
            }
            let nodes = cluster.membership.liveNodes.map {
                NodeInfo(
                    identity: NodeIdentity(nodeId: $0.nodeId, address: $0.address, slot: $0.slot, epoch: $0.epoch, startedAt: $0.startedAt),
                    connections: $0.nodeId == node.membership.local.nodeId ? node.registry.count : $0.connections)
            }
            return APIAnswer.success(nodes).response
        }
        admin.get("replay") { request, _ in
            try authorize(request)
            let filter = try ReplayFilter.parse(Self.options(request))
            let journal = try node.requireJournal()
            var body = ByteBuffer()
            for record in journal.records(matching: filter) {
                body.writeBytes(APIAnswer.encode(ReplayLine(record)))
                body.writeString("\n")
            }
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: .init(byteBuffer: body))
        }
        admin.post("replay/redeliver") { request, _ in
            try authorize(request)
            let filter = try ReplayFilter.parse(Self.options(request))
            var count = 0
            for record in try node.requireJournal().records(matching: filter) where !record.message.redelivered {
                if try await node.router.redeliver(record.message) { count += 1 }
            }
            return APIAnswer.success(["redelivered": count]).response
        }
        admin.get("trace/:messageId") { request, context in
            try authorize(request)
            let messageId = try context.parameters.require("messageId")
            guard let steps = await node.trace.steps(for: messageId) else { throw HeraldError.unknownMessage }
            return APIAnswer.success(MessageTrace(messageId: messageId, steps: steps)).response
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

/// One line of `/admin/replay` (and `herald replay`).
struct ReplayLine: Encodable {
    var timestamp: String
    var topic: String
    var partition: Int32
    var offset: Int64
    var kind: String
    var messageId: String
    var systemId: String
    var target: String
    var payload: JSONValue
    var headers: [String: String]

    init(_ record: JournalRecord) {
        let message = record.message
        timestamp = TimeExpression.format(record.timestamp)
        topic = record.placement.topic
        partition = record.placement.partition
        offset = record.placement.offset
        kind = message.kind.rawValue
        messageId = message.messageId
        systemId = message.systemId
        target = message.target.description
        switch message.body {
        case .push(let push):
            payload = .object([
                "sendUserId": .string(push.sendUserId), "code": .integer(Int64(push.code)), "msg": .string(push.msg),
                "data": push.data,
            ])
        case .bind(let group, let userId, let extend):
            payload = .object(["groupName": .string(group), "userId": .string(userId), "extend": .string(extend)])
        case .unbind(let group):
            payload = .object(["groupName": .string(group)])
        case .close:
            payload = .null
        case .presence(let event, let info):
            payload = .object([
                "code": .integer(Int64(event.rawValue)), "clientId": .string(info.clientId), "userId": .string(info.userId),
                "extend": .string(info.extend),
            ])
        }
        headers = [
            "messageId": message.messageId, "systemId": message.systemId, "kind": message.kind.rawValue,
            "acceptedAt": String(message.acceptedAt), "acceptedBy": message.acceptedBy,
        ]
        if message.redelivered { headers["redelivered"] = "true" }
    }
}

extension HeraldNodeServices {
    func requireJournal() throws -> MessageJournal {
        guard let journal else {
            throw HeraldError(
                code: 4000, status: 400,
                message: "replay in cluster mode reads Kafka, which this build does not do yet; use a standalone node's journal")
        }
        return journal
    }
}

struct MessageTrace: Encodable {
    var messageId: String
    var steps: [TraceStep]

    init(messageId: String, steps: [TraceStep]) {
        self.messageId = messageId
        // Steps from one node can share a millisecond; keep them in the order of the path.
        let rank: [TraceStep.Kind: Int] = [.accepted: 0, .produced: 1, .redelivered: 2, .delivered: 3, .dropped: 4, .acked: 5]
        self.steps = steps.enumerated().sorted {
            ($0.element.at, rank[$0.element.step] ?? 9, $0.offset) < ($1.element.at, rank[$1.element.step] ?? 9, $1.offset)
        }.map(\.element)
    }
}
