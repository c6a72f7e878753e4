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
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    /// What the connection handling needs of the node's settings.
    struct Limits: Sendable {
        var maxFrameSize: Int
        var origins: OriginPolicy
        var headerTimeout: TimeAmount
        var bodyTimeout: TimeAmount
        var keepAliveTimeout: TimeAmount
        var connections: ConnectionLimiter
        var addresses: AddressLimiter
        var metrics: HeraldMetrics
        var maxBodyBytes: Int

        init(configuration: HeraldConfiguration, connections: ConnectionLimiter, metrics: HeraldMetrics) {
            addresses = AddressLimiter(limit: configuration.maxConnectionsPerIP, trustedProxies: configuration.trustedProxies)
            maxFrameSize = configuration.maxFrameBytes
            origins = OriginPolicy(configuration.allowedOrigins)
            headerTimeout = .milliseconds(Int64(configuration.headerTimeout * 1000))
            bodyTimeout = .milliseconds(Int64(configuration.bodyTimeout * 1000))
            keepAliveTimeout = .milliseconds(Int64(configuration.keepAliveTimeout * 1000))
            maxBodyBytes = configuration.maxBodyBytes
            self.connections = connections
            self.metrics = metrics
        }
    }

    struct OverCapacity: Error {}

    let responder: HTTPChannelHandler.Responder
    let endpoint: WebSocketEndpoint
    let limits: Limits
    let fastSend: SendFastPath.Route

    init(
        responder: @escaping HTTPChannelHandler.Responder, endpoint: WebSocketEndpoint, limits: Limits,
        fastSend: @escaping SendFastPath.Route
    ) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.endpoint = endpoint
        self.limits = limits
        self.fastSend = fastSend
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let limits = self.limits
            let fastSend = self.fastSend
            guard limits.connections.admit() else {
                // Over the cap: 503 and close, reading nothing. Counted, not logged one by one.
                limits.metrics.connectionsOverCap.increment()
                try channel.pipeline.syncOperations.addHandler(OverCapacityHandler())
                return Value(upgradeResult: channel.eventLoop.makeFailedFuture(OverCapacity()), channel: channel)
            }
            limits.metrics.openConnections.increment()
            channel.closeFuture.whenComplete { _ in
                limits.connections.release()
                limits.metrics.openConnections.decrement()
            }
            // Per client address: counted here for a direct peer; behind a trusted proxy, at the
            // upgrade, by the address the proxy forwarded (UpgradeRequestGuard).
            let peer = channel.remoteAddress?.ipAddress
            let behindProxy = limits.addresses.isTrusted(peer)
            if limits.addresses.isOn, !behindProxy, let peer {
                guard limits.addresses.admit(peer) else {
                    limits.metrics.connectionsOverCap.increment()
                    try channel.pipeline.syncOperations.addHandler(OverCapacityHandler(response: OverCapacityHandler.addressFull))
                    return Value(upgradeResult: channel.eventLoop.makeFailedFuture(OverCapacity()), channel: channel)
                }
                channel.closeFuture.whenComplete { _ in limits.addresses.release(peer) }
            }
            let deadlineHandler = HTTPDeadlineHandler(
                headerTimeout: limits.headerTimeout, bodyTimeout: limits.bodyTimeout, keepAliveTimeout: limits.keepAliveTimeout,
                onTimeout: { limits.metrics.httpTimeouts.increment() })
            let deadlines = NIOLoopBound(deadlineHandler, eventLoop: channel.eventLoop)
            let guardBox = NIOLoopBoundBox<UpgradeRequestGuard?>(nil, eventLoop: channel.eventLoop)
            // What `shouldUpgrade` decided, for the pipeline handler that runs right after it.
            let admission = NIOLoopBoundBox<WebSocketSession.Admission?>(nil, eventLoop: channel.eventLoop)
            let upgradePipeline: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult> = { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    // Admitted in time: the HTTP deadlines end here; the session keeps its own.
                    channel.pipeline.syncOperations.removeHandler(deadlines.value, promise: nil)
                    if let guardHandler = guardBox.value {
                        channel.pipeline.syncOperations.removeHandler(guardHandler, promise: nil)
                    }
                    let decided = admission.value ?? .refused(code: -1001, message: "systemId is required")
                    try channel.pipeline.syncOperations.addHandler(endpoint.session(for: decided, channel: channel))
                    return UpgradeResult.webSocket
                }
            }
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: limits.maxFrameSize,
                shouldUpgrade: { channel, head in
                    let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                    // Admission runs on the channel's own loop (no hop to the pool and back per
                    // connect); what it awaits (a system lookup in etcd) suspends, never blocks.
                    Task(executorPreference: EventLoopTaskExecutor(channel.eventLoop)) {
                        let decided = await endpoint.admit(uri: head.uri)
                        channel.eventLoop.execute {
                            admission.value = decided
                            promise.succeed(HTTPHeaders())
                        }
                    }
                    return promise.futureResult
                },
                upgradePipelineHandler: upgradePipeline)
            let serverUpgrade = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [
                    CheckedWebSocketUpgrader(
                        upgrader: upgrader, origins: limits.origins, maxFrameSize: limits.maxFrameSize,
                        pipeline: upgradePipeline)
                ],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                        try channel.pipeline.syncOperations.addHandler(SendFastPath(bodyLimit: limits.maxBodyBytes, route: fastSend))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return .notUpgraded(http)
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: serverUpgrade)
            configuration.enablePipelining = false  // NIOAsyncChannel serves one request at a time
            configuration.enableErrorHandling = false  // Hummingbird answers errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validates already
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // After the decoder and the upgrade handler: it sees request parts once the upgrade
            // handler lets them through, and the head of a WebSocket upgrade never, so its first
            // limit also bounds admission.
            try channel.pipeline.syncOperations.addHandler(deadlineHandler)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<UpgradeResult>.self)
            let guardHandler = UpgradeRequestGuard(
                origins: limits.origins, addresses: limits.addresses.isOn && behindProxy ? limits.addresses : nil)
            try channel.pipeline.syncOperations.addHandler(guardHandler, position: .before(upgradeHandler))
            guardBox.value = guardHandler
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
                await withTaskExecutorPreference(EventLoopTaskExecutor(value.channel.eventLoop)) {
                    await handleHTTP(asyncChannel: http, logger: logger)
                }
            }
        } catch {
            logger.trace("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// A WebSocket upgrade that reaches the routes. A refused one never does: UpgradeRequestGuard
    /// answers it (400, 403, 426, 429) on any request of the connection. What is left is a valid
    /// upgrade asked on a kept-alive connection, which NIO does not upgrade (only a connection's
    /// first request): it is sent back to the same URL, on a new connection, as Hummingbird does.
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectedUpgrade: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade] != nil else {
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

/// NIO's WebSocket upgrader behind `WebSocketHandshake.check`: a request it refuses is not
/// upgraded (the HTTP side then answers why) instead of reaching NIO's own checks, which drop
/// the connection without an answer.
struct CheckedWebSocketUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = HeraldHTTPChannel.UpgradeResult

    let upgrader: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    let origins: OriginPolicy
    let maxFrameSize: Int
    /// Sets up the upgraded pipeline's session (NIO's upgrader gets the same closure).
    let pipeline: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>

    var supportedProtocol: String { upgrader.supportedProtocol }
    /// Only the Upgrade header itself: the check answers for a missing key or version.
    var requiredUpgradeHeaders: [String] { [] }

    func buildUpgradeResponse(
        channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        if let refusal = WebSocketHandshake.check(
            method: upgradeRequest.method, uri: upgradeRequest.uri, headers: upgradeRequest.headers, origins: origins)
        {
            // UpgradeRequestGuard answered such requests already; this only keeps NIO's checks out.
            return channel.eventLoop.makeFailedFuture(refusal)
        }
        return upgrader.buildUpgradeResponse(
            channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    /// NIO's upgrade, with Herald's frame encoder in place of NIO's (see `ServerFrameEncoder`).
    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        let maxFrameSize = self.maxFrameSize
        let pipeline = self.pipeline
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ServerFrameEncoder())
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
        }.flatMap {
            pipeline(channel, upgradeRequest)
        }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with Herald's WebSocket endpoint at `/ws`.
    /// `fastSend` answers `send_to_client` without an Idempotency-Key beside the router (`SendFastPath`).
    static func herald(
        endpoint: WebSocketEndpoint, limits: HeraldHTTPChannel.Limits, fastSend: @escaping SendFastPath.Route
    ) -> HTTPServerBuilder {
        .init { responder in
            HeraldHTTPChannel(responder: responder, endpoint: endpoint, limits: limits, fastSend: fastSend)
        }
    }
}
