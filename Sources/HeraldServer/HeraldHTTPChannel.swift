import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// The server's child channel: HTTP/1.1 for the API, with the WebSocket upgrade of `GET /ws`
/// done in the pipeline. An upgraded connection is then served by a `WebSocketSession` handler
/// alone, and the per-connection task Hummingbird runs for HTTP ends at once; see
/// docs/architecture.md (memory per connection) for why.
struct HeraldHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        case webSocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case failedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let endpoint: WebSocketEndpoint
    let maxFrameSize: Int

    init(responder: @escaping HTTPChannelHandler.Responder, endpoint: WebSocketEndpoint, maxFrameSize: Int) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.endpoint = endpoint
        self.maxFrameSize = maxFrameSize
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // What `shouldUpgrade` decided, for the pipeline handler that runs right after it.
            let admission = NIOLoopBoundBox<WebSocketSession.Admission?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    guard WebSocketEndpoint.isWebSocketPath(head.uri) else {
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                    promise.completeWithTask {
                        let decided = await endpoint.admit(uri: head.uri)
                        // Back on the event loop before the upgrade goes on.
                        try await channel.eventLoop.submit { admission.value = decided }.get()
                        return HTTPHeaders()
                    }
                    return promise.futureResult
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        let decided = admission.value ?? .refused(code: -1001, message: "systemId is required")
                        try channel.pipeline.syncOperations.addHandler(endpoint.session(for: decided, channel: channel))
                        return UpgradeResult.webSocket
                    }
                })

            let upgradeAttempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let serverUpgrade = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return upgradeAttempted.value ? .failedUpgrade(http) : .notUpgraded(http)
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: serverUpgrade)
            configuration.enablePipelining = false  // NIOAsyncChannel serves one request at a time
            configuration.enableErrorHandling = false  // Hummingbird answers errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validates already
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            return Value(upgradeResult: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .webSocket:
                // The session handler serves the connection from here on; nothing to wait for.
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .failedUpgrade(let http):
                await refuseUpgrade(http, logger: logger)
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// A WebSocket upgrade asked of another path than `/ws`: 400 with the contract's body, then close.
    private func refuseUpgrade(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        let answer = APIAnswer.failure(.invalidField("path", "has no WebSocket: connect to /ws"))
        do {
            try await http.executeThenClose { _, outbound in
                let head = HTTPResponse(
                    status: .badRequest,
                    headerFields: [.connection: "close", .contentType: "application/json", .contentLength: "\(answer.body.count)"])
                try await outbound.write(contentsOf: [.head(head), .body(ByteBuffer(bytes: answer.body)), .end(nil)])
            }
        } catch {
            logger.trace("could not answer a refused upgrade", metadata: ["error": "\(error)"])
        }
    }

    /// NIO upgrades only a connection's first request. A client that upgrades on a kept-alive
    /// connection is sent back to the same URL on a new one, as Hummingbird does.
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectedUpgrade: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                return try await responder(request, writer, channel)
            }
            var location = request.uri.path
            if let query = request.uri.query { location += "?\(query)" }
            try await writer.writeResponse(
                HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw RedirectedUpgrade()
        }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with Herald's WebSocket endpoint at `/ws`.
    static func herald(endpoint: WebSocketEndpoint, maxFrameSize: Int) -> HTTPServerBuilder {
        .init { responder in
            HeraldHTTPChannel(responder: responder, endpoint: endpoint, maxFrameSize: maxFrameSize)
        }
    }
}
