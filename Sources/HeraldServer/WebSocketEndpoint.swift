import HeraldCore
import Hummingbird
import HummingbirdCore
import NIOCore
import ServiceLifecycle

/// `GET /ws?systemId=…[&token=…]`: decides whether a client is admitted and gives it its ID.
/// The upgrade itself happens in the pipeline (HeraldHTTPChannel); the connection is then a
/// `WebSocketSession`. A refused client is still upgraded, then sent the refusal frame and
/// closed, as go-websocket does.
struct WebSocketEndpoint: Sendable {
    let node: HeraldNodeServices

    static func isWebSocketPath(_ uri: String) -> Bool {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return path == "/ws" || path == "/ws/"
    }

    /// A plain GET (no upgrade) reaches the router: answer it rather than an empty 200.
    func register(to router: Router<HeraldRequestContext>) {
        router.get("/ws") { _, _ -> Response in
            throw HeraldError.invalidField("Upgrade", "must be websocket: GET /ws opens a WebSocket")
        }
    }

    func admit(uri: String) async -> WebSocketSession.Admission {
        let query = URI(uri).queryParameters
        let systemId = query.get("systemId")
        let token = query.get("token")
        if node.isDraining { return .goingAway }
        if !node.holdsSlot { return .tryAgain("node holds no slot yet; try again later") }
        guard let systemId, !systemId.isEmpty else { return .refused(code: -1001, message: "systemId is required") }
        guard SystemIDRule.isValid(systemId) else {
            return .refused(code: -1001, message: "systemId must be \(SystemIDRule.description)")
        }
        let found: SystemRecord?
        do {
            found = try await node.fabric.systems.lookup(systemId)
        } catch {
            // The directory could not be read (etcd away): a reason to try again, not "unknown".
            return .tryAgain("the system directory is unavailable; try again later")
        }
        guard let system = found else {
            return .refused(code: -1001, message: "unknown systemId \(systemId)")
        }
        guard system.clientAuth else {
            return .admitted(systemId: systemId, userId: "", resume: resumeRequest(query, systemId: systemId, userId: ""))
        }
        guard let token, !token.isEmpty else { return .refused(code: 4010, message: "token is required for this system") }
        do {
            let userId = try await node.tokens.verify(token, for: system)
            return .admitted(systemId: systemId, userId: userId, resume: resumeRequest(query, systemId: systemId, userId: userId))
        } catch {
            return .refused(code: 4010, message: "invalid or expired token")
        }
    }

    /// `resume=<session token>&since=<pos>`, checked: a token of this cluster, for this system
    /// (and, with client auth, this user), and a position this version wrote. Nil without `resume`.
    private func resumeRequest(_ query: Parameters, systemId: String, userId: String) -> ResumeRequest? {
        guard let text = query.get("resume") else { return nil }
        guard let token = SessionToken.open(text, with: node.router.codec), token.systemId == systemId else {
            return .refused(reason: "bad token")
        }
        guard token.userId == userId || userId.isEmpty else { return .refused(reason: "bad token") }
        guard let since = query.get("since").flatMap(LogCut.init(encoded:)) else { return .refused(reason: "bad position") }
        return .resume(token, since: since)
    }

    /// The handler that serves an upgraded connection; an admitted one gets a fresh client ID.
    func session(for admission: WebSocketSession.Admission, channel: any Channel) -> WebSocketSession {
        let serial = node.serials.add(1, ordering: .relaxed).newValue
        var clientId = ""
        if case .admitted(let systemId, _, _) = admission {
            let identity = node.membership.local
            clientId = node.router.codec.seal(
                ClientID(address: identity.address, slot: identity.slot, epoch: identity.epoch, serial: serial, systemId: systemId))
        }
        return WebSocketSession(serial: serial, clientId: clientId, admission: admission, node: node, channel: channel)
    }
}

/// Pings every client each `--ping-interval` and closes the idle and the silent, for all
/// connections from one task (a timer per connection would cost memory per connection).
struct WebSocketKeeper: Service {
    let node: HeraldNodeServices

    func run() async throws {
        let ping = TimeAmount.milliseconds(Int64(node.configuration.pingInterval * 1000))
        let idle = TimeAmount.milliseconds(Int64(node.configuration.idleTimeout * 1000))
        // A tenth of the shorter period, within 50 ms and 1 s: timings stay within 10%.
        let tick = min(max(min(ping, idle).nanoseconds / 10, 50_000_000), 1_000_000_000)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .nanoseconds(tick))
                // One hop per event loop, not one per client.
                var byLoop: [ObjectIdentifier: (loop: any EventLoop, sessions: [WebSocketSession])] = [:]
                for case let session as WebSocketSession in node.registry.allSinks() {
                    byLoop[ObjectIdentifier(session.eventLoop), default: (session.eventLoop, [])].sessions.append(session)
                }
                for (loop, sessions) in byLoop.values {
                    loop.execute {
                        for session in sessions { session.keepAlive(pingInterval: ping, idleTimeout: idle) }
                    }
                }
            }
        }
    }
}
