import HeraldCluster
import HeraldCore
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// One Herald node: the HTTP API, the WebSocket endpoint and the ops routes, run until
/// SIGTERM or SIGINT, then drained (every client closed with 1001) and stopped.
public struct HeraldNode: Sendable {
    let services: HeraldNodeServices
    let logger: Logger

    public init(configuration: HeraldConfiguration, logger: Logger) throws {
        let codec = try configuration.validated()
        self.logger = logger
        self.services = try HeraldNodeServices(configuration: configuration, codec: codec, logger: logger)
    }

    /// Runs until a shutdown signal. `onListening` gets the bound port (useful with port 0).
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let configuration = services.configuration
        let router = Router(context: HeraldRequestContext.self)
        router.add(middleware: OriginGuard(allowed: OriginPolicy(configuration.apiAllowedOrigins)))
        router.add(middleware: MethodGuard())
        let routeTable = RouteTable()
        router.add(middleware: APIErrorMiddleware(routes: routeTable))
        let api = APIController(node: services)
        api.register(to: router)
        AdminController(node: services).register(to: router)
        InternalController(node: services).register(to: router)
        WebSocketEndpoint(node: services).register(to: router)
        ClientScriptController().register(to: router)
        routeTable.register(on: router, node: services)

        let logger = self.logger
        let app = Application(
            router: router,
            server: .herald(
                endpoint: WebSocketEndpoint(node: services),
                limits: .init(
                    configuration: configuration, connections: ConnectionLimiter(limit: configuration.maxConnections),
                    metrics: services.metrics),
                fastSend: { request, body in
                    await api.fastSendToClient(systemIdHeader: request.systemId, authorization: request.authorization, body: body)
                }),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "Herald"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.info(
                    "herald listening",
                    metadata: ["host": .string(configuration.host), "port": "\(port)", "node": .string(services.membership.local.nodeId)])
                await onListening(port)
            },
            logger: logger)
        // Services shut down in reverse order: the drain runs first, while the server still
        // writes; then the cluster fabric gives its slot back; then the server stops.
        let lifecycle: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: app), .init(service: FabricService(fabric: services.fabric)),
            .init(service: WebhookService(node: services)),
            .init(service: WebSocketKeeper(node: services)), .init(service: ConnectionDrain(node: services)),
        ]
        let group = ServiceGroup(
            configuration: .init(
                services: lifecycle,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        logger.info("herald stopped")
    }
}

/// On shutdown: refuse new clients, close every client with 1001, wait briefly for them to go.
struct ConnectionDrain: Service {
    let node: HeraldNodeServices

    func run() async throws {
        try? await gracefulShutdown()
        node.startDraining()
        let sinks = node.registry.allSinks()
        node.logger.info("draining", metadata: ["clients": "\(sinks.count)"])
        for sink in sinks {
            sink.close(code: 1001, reason: "server is shutting down")
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(node.configuration.shutdownGrace * 1000))
        while node.registry.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Feeds the node's share of lifecycle events to the webhooks until shutdown.
struct WebhookService: Service {
    let node: HeraldNodeServices

    func run() async throws {
        let webhooks = node.webhooks
        webhooks.start()
        await cancelWhenGracefulShutdown { await node.fabric.feedWebhooks { webhooks.offer($0.event, json: $0.json, done: $0.done) } }
        await webhooks.shutdown()
    }
}

/// Runs the fabric's own work (membership, consumption, probes) until shutdown.
struct FabricService: Service {
    let fabric: any NodeFabric

    func run() async throws {
        await cancelWhenGracefulShutdown { await fabric.run() }
    }
}

/// `/api/*` takes POST only: anything else is 405 with the contract's body.
struct MethodGuard: RouterMiddleware {
    typealias Context = HeraldRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path.hasPrefix("/api/"), request.method != .post {
            var response = APIAnswer.failure(
                HeraldError(.methodNotAllowed, message: "\(request.method) not allowed: /api routes take POST")
            ).response
            response.headers[.allow] = "POST"
            return response
        }
        return try await next(request, context)
    }
}

/// A browser page on another site must not drive the API from a visitor's browser: an /api or
/// /admin request that carries an `Origin` is refused (403/4031) unless `--api-allowed-origins`
/// allows it or it is the node's own origin (a console page served by the node). Business
/// systems send no `Origin`, so they are unaffected.
struct OriginGuard: RouterMiddleware {
    typealias Context = HeraldRequestContext
    let allowed: OriginPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/api/") || path.hasPrefix("/admin"), let origin = request.headers[.origin] else {
            return try await next(request, context)
        }
        if OriginPolicy.isOwnOrigin(origin, host: request.head.authority) { return try await next(request, context) }
        guard allowed.allows(origin) else { return APIAnswer.failure(.originNotAllowed).response }
        // An allowed origin gets CORS answers, so its pages can read them (and preflights pass).
        var response: Response
        if request.method == .options {
            response = Response(status: .noContent)
            response.headers[.accessControlAllowMethods] = "POST, GET"
            response.headers[.accessControlAllowHeaders] = "Content-Type, SystemId, Authorization, Idempotency-Key"
            response.headers[.accessControlMaxAge] = "600"
        } else {
            response = try await next(request, context)
        }
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
        return response
    }
}

/// `GET /admin/routes` (admin token): every (method, path) the router serves, read from
/// Hummingbird's own route table (`Router.routes`) once all routes are registered, this one
/// included. The OpenAPI contract test compares it with docs/openapi.yaml.
final class RouteTable: Sendable {
    struct Entry: Encodable, Sendable {
        var method: String
        var path: String
    }

    private let entries = Mutex<[Entry]>([])

    /// The methods served at `path` (route parameters match any segment).
    func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        return entries.withLock { entries in
            entries.filter { entry in
                let pattern = entry.path.split(separator: "/", omittingEmptySubsequences: true)
                return pattern.count == segments.count
                    && zip(pattern, segments).allSatisfy { $0.hasPrefix(":") || $0.hasPrefix("{") || $0 == $1 }
            }.map(\.method)
        }
    }

    /// Adds the route, then fills it from the router: call after every other route is added.
    func register(on router: Router<HeraldRequestContext>, node: HeraldNodeServices) {
        let table = self
        router.get("admin/routes") { request, _ in
            try AdminController.authorize(request, node: node)
            return APIAnswer.success(table.entries.withLock { $0 }).response
        }
        let routes = router.routes
            .map { Entry(method: $0.method.rawValue, path: $0.path.description) }
            .sorted { ($0.path, $0.method) < ($1.path, $1.method) }
        table.entries.withLock { $0 = routes }
    }
}
