import Foundation
import HeraldCore
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// `GET /ws?systemId=…[&token=…]`: admits a client, gives it its ID, pumps its frames,
/// answers `ping`, records acks, and closes it when idle, slow or shutting down.
struct WebSocketEndpoint: Sendable {
    let node: HeraldNodeServices

    func register(to router: Router<HeraldRequestContext>) {
        router.ws("/ws") { request, _ in
            // A plain GET would otherwise answer an empty 200.
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                throw HeraldError.invalidField("Upgrade", "must be websocket: GET /ws opens a WebSocket")
            }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            try await self.serve(inbound: inbound, outbound: outbound, context: context)
        }
    }

    private func serve(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
        context: WebSocketRouterContext<HeraldRequestContext>
    ) async throws {
        let query = context.request.uri.queryParameters
        let admission = await admit(systemId: query.get("systemId"), token: query.get("token"))
        let userId: String
        let systemId: String
        switch admission {
        case .refused(let code, let message):
            node.metrics.refusedConnections.increment()
            context.logger.info("websocket refused", metadata: ["code": "\(code)", "reason": .string(message)])
            try await outbound.write(.text(FrameEncoding.refusal(code: code, msg: message)))
            // Close reasons must fit a control frame (125 bytes): the detail went in the frame.
            try await outbound.close(.policyViolation, reason: code == 4010 ? "unauthorized" : "unknown system")
            return
        case .goingAway:
            try await outbound.close(.goingAway, reason: "server is shutting down")
            return
        case .notReady:
            try await outbound.close(.init(codeNumber: 1013), reason: "node holds no slot yet; try again later")
            return
        case .admitted(let system, let user):
            systemId = system
            userId = user
        }

        let identity = node.membership.local
        let serial = node.serials.add(1, ordering: .relaxed).newValue
        let clientId = node.router.codec.seal(
            ClientID(address: identity.address, slot: identity.slot, epoch: identity.epoch, serial: serial, systemId: systemId))
        let metrics = node.metrics
        let connection = ClientConnection(
            serial: serial, clientId: clientId, limit: node.configuration.outboundQueueLimit,
            channel: context.requestContext.channel, hardCloseAfter: .seconds(3),
            onSlowConsumer: { metrics.slowConsumerCloses.increment() })
        do {
            try await InboundActivityHandler.install(on: context.requestContext.channel, for: connection)
        } catch {
            // Then only frames the read loop sees count as activity (pongs do not).
            context.logger.warning("cannot watch the client's pongs", metadata: ["error": "\(error)"])
        }
        connection.push(FrameEncoding.welcome(clientId: clientId))
        node.registry.add(
            node.registry.makeConnection(serial: serial, clientId: clientId, systemId: systemId, userId: userId, sink: connection))
        metrics.connections.increment()
        let logger = context.logger
        logger.debug("client connected", metadata: ["system": .string(systemId), "serial": "\(serial)"])
        defer {
            for change in node.registry.remove(serial: serial) {
                node.delivery.announce(.left, change)
            }
            metrics.connections.decrement()
            logger.debug("client disconnected", metadata: ["system": .string(systemId), "serial": "\(serial)"])
        }

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.write(connection, to: outbound) }
            group.addTask { await self.read(inbound, for: connection, logger: logger) }
            group.addTask { await self.closeWhenIdle(connection) }
            _ = await group.next()
            connection.finish()
            group.cancelAll()
        }
    }

    private enum Admission {
        case admitted(systemId: String, userId: String)
        case refused(code: Int, message: String)
        case goingAway
        case notReady
    }

    private func admit(systemId: String?, token: String?) async -> Admission {
        if node.isDraining { return .goingAway }
        if !node.holdsSlot { return .notReady }
        guard let systemId, !systemId.isEmpty else { return .refused(code: -1001, message: "systemId is required") }
        guard let system = try? await node.systems.lookup(systemId) else {
            return .refused(code: -1001, message: "unknown systemId \(systemId)")
        }
        guard system.clientAuth else { return .admitted(systemId: systemId, userId: "") }
        guard let token, !token.isEmpty else { return .refused(code: 4010, message: "token is required for this system") }
        do {
            let userId = try await node.tokens.verify(token, for: system)
            return .admitted(systemId: systemId, userId: userId)
        } catch {
            return .refused(code: 4010, message: "invalid or expired token")
        }
    }

    /// The connection's only writer: frames in queue order, then the close frame.
    private func write(_ connection: ClientConnection, to outbound: WebSocketOutboundWriter) async {
        do {
            while let item = await connection.next() {
                switch item {
                case .frame(let text):
                    try await outbound.write(.text(text))
                    node.metrics.framesSent.increment()
                case .close(let code, let reason):
                    try await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason)
                    return
                }
            }
        } catch {
            // The socket went away mid-write; the reader sees the end too.
        }
    }

    private func read(_ inbound: WebSocketInboundStream, for connection: ClientConnection, logger: Logger) async {
        do {
            for try await frame in inbound {
                connection.touch()
                guard frame.opcode == .text else { continue }
                let text = String(buffer: frame.data)
                if text == "ping" {
                    connection.push("pong")
                } else if let ack = Self.ack(in: text) {
                    node.trace.record(
                        ack, TraceStep(.acked, node: node.membership.local.nodeId, clientId: connection.clientId))
                }
            }
        } catch {
            logger.debug("websocket read ended", metadata: ["error": "\(error)"])
        }
    }

    /// The message id of an `{"ack":"<messageId>"}` frame.
    static func ack(in text: String) -> String? {
        guard text.hasPrefix("{"), text.utf8.count <= 1024,
            let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let id = object["ack"] as? String, !id.isEmpty
        else { return nil }
        return id
    }

    private func closeWhenIdle(_ connection: ClientConnection) async {
        let timeout = Duration.milliseconds(Int64(node.configuration.idleTimeout * 1000))
        while !Task.isCancelled {
            let deadline = connection.lastInbound + timeout
            if ContinuousClock.now >= deadline {
                connection.close(code: 1000, reason: "idle timeout")
                node.metrics.idleCloses.increment()
                // The writer ends the connection once the close is out; wait to be cancelled.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                return
            }
            try? await Task.sleep(until: deadline, clock: .continuous)
        }
    }
}
