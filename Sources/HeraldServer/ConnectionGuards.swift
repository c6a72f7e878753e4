import Foundation
import HeraldCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Which `Origin` values a setting admits: `*` (any), an exact origin, or one with a wildcard
/// host label (`https://*.example.com` matches `https://a.example.com`, not `https://example.com`).
/// Compared by bytes, case-insensitively for scheme and host as browsers send them lowercased.
struct OriginPolicy: Sendable {
    let patterns: [String]

    init(_ patterns: [String]) {
        self.patterns = patterns.map { $0.lowercased() }
    }

    var allowsAny: Bool { patterns.contains("*") }

    func allows(_ origin: String) -> Bool {
        let origin = origin.lowercased()
        for pattern in patterns {
            if pattern == "*" || Array(pattern.utf8) == Array(origin.utf8) { return true }
            if let star = pattern.range(of: "://*.") {
                let scheme = pattern[..<star.lowerBound]
                let suffix = pattern[star.upperBound...]
                guard origin.hasPrefix(scheme + "://"), origin.hasSuffix("." + suffix) else { continue }
                let host = origin.dropFirst(scheme.count + 3).dropLast(suffix.count + 1)
                if !host.isEmpty, !host.contains("/") { return true }
            }
        }
        return false
    }

    /// The origin a page served by this node would send (`http://<Host header>`).
    static func isOwnOrigin(_ origin: String, host: String?) -> Bool {
        guard let host, !host.isEmpty else { return false }
        let origin = origin.lowercased()
        let ownHost = host.lowercased()
        return origin == "http://\(ownHost)" || origin == "https://\(ownHost)"
    }
}

/// Checks a WebSocket upgrade request (RFC 6455 4.2.1) before NIO's upgrader sees it, so every
/// bad one gets an HTTP answer with the contract's body instead of a dropped connection.
enum WebSocketHandshake {
    struct Refusal: Error, Sendable {
        var status: HTTPResponseStatus
        var error: HeraldError
        var headers: [(String, String)] = []
    }

    /// nil when the request may be upgraded.
    static func check(method: HTTPMethod, uri: String, headers: HTTPHeaders, origins: OriginPolicy) -> Refusal? {
        guard WebSocketEndpoint.isWebSocketPath(uri) else {
            return Refusal(status: .badRequest, error: .invalidField("path", "has no WebSocket: connect to /ws"))
        }
        guard method == .GET else {
            return Refusal(status: .badRequest, error: .invalidField("method", "must be GET for a WebSocket upgrade"))
        }
        let connection = headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connection.contains("upgrade") else {
            return Refusal(status: .badRequest, error: .invalidField("Connection", "header must include Upgrade"))
        }
        guard headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }) else {
            return Refusal(status: .badRequest, error: .invalidField("Upgrade", "header must be websocket"))
        }
        let versions = headers[canonicalForm: "sec-websocket-version"]
        guard versions.count == 1, versions[0] == "13" else {
            return Refusal(
                status: .upgradeRequired, error: .invalidField("Sec-WebSocket-Version", "must be 13"),
                headers: [("Sec-WebSocket-Version", "13")])
        }
        let keys = headers[canonicalForm: "sec-websocket-key"]
        guard keys.count == 1, let key = Data(base64Encoded: String(keys[0])), key.count == 16 else {
            return Refusal(status: .badRequest, error: .invalidField("Sec-WebSocket-Key", "must be 16 bytes in base64"))
        }
        if !origins.allowsAny, let origin = headers.first(name: "origin"), !origins.allows(origin) {
            return Refusal(status: .forbidden, error: .originNotAllowed)
        }
        return nil
    }

    /// The answer to a refused upgrade, as raw HTTP/1.1 (the connection closes after it).
    static func response(_ refusal: Refusal) -> (HTTPResponseHead, ByteBuffer) {
        let body = APIAnswer.failure(refusal.error).body
        var headers = HTTPHeaders([
            ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", "\(body.count)"), ("Connection", "close"),
        ])
        for (name, value) in refusal.headers { headers.add(name: name, value: value) }
        return (HTTPResponseHead(version: .http1_1, status: refusal.status, headers: headers), ByteBuffer(bytes: body))
    }
}

/// Sits between the HTTP decoder and NIO's upgrade handler: a request that asks for a
/// WebSocket and fails `WebSocketHandshake.check` is answered here (400, 403 or 426 with the
/// contract's body) and the connection closed, before NIO's upgrader, whose own checks drop
/// the connection without an answer, ever sees it. Everything else passes through untouched.
final class UpgradeRequestGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let origins: OriginPolicy
    /// Set when the peer is a trusted proxy and per-address limits are on: an upgrade then takes
    /// a place for the client `X-Forwarded-For` names.
    private let addresses: AddressLimiter?
    /// Set once a request was refused: its remaining parts are dropped.
    private var refused = false
    private var counted = false

    init(origins: OriginPolicy, addresses: AddressLimiter? = nil) {
        self.origins = origins
        self.addresses = addresses
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if refused { return }
        guard case .head(let head) = part, head.headers.contains(name: "upgrade") else {
            context.fireChannelRead(data)
            return
        }
        var refusal = WebSocketHandshake.check(method: head.method, uri: head.uri, headers: head.headers, origins: origins)
        if refusal == nil, let addresses, !counted, let peer = context.channel.remoteAddress?.ipAddress {
            let client = addresses.client(peer: peer, forwardedFor: head.headers["x-forwarded-for"])
            if addresses.admit(client) {
                counted = true
                context.channel.closeFuture.whenComplete { _ in addresses.release(client) }
            } else {
                refusal = WebSocketHandshake.Refusal(status: .tooManyRequests, error: .tooManyFromAddress)
            }
        }
        guard let refusal else {
            context.fireChannelRead(data)
            return
        }
        refused = true
        let (responseHead, body) = WebSocketHandshake.response(refusal)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Counts the node's open TCP connections against `--max-connections`.
final class ConnectionLimiter: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes a place for a new connection; false (and no place taken) when the node is full.
    func admit() -> Bool {
        if open.add(1, ordering: .relaxed).newValue > limit {
            open.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func release() {
        open.subtract(1, ordering: .relaxed)
    }

    var count: Int { open.load(ordering: .relaxed) }
}

/// Open connections per client address, for `--max-connections-per-ip`. The address is the
/// peer's, or, when the peer is one of `--trusted-proxies`, the nearest untrusted entry of
/// `X-Forwarded-For` (set by that proxy); no other peer's `X-Forwarded-For` is believed.
final class AddressLimiter: Sendable {
    let limit: Int
    let trustedProxies: Set<String>
    private let open = Mutex<[String: Int]>([:])

    init(limit: Int, trustedProxies: [String]) {
        self.limit = limit
        self.trustedProxies = Set(trustedProxies)
    }

    var isOn: Bool { limit > 0 }

    func isTrusted(_ peer: String?) -> Bool {
        peer.map { trustedProxies.contains($0) } ?? false
    }

    /// The client behind a trusted proxy: the rightmost `X-Forwarded-For` entry that is not
    /// itself a trusted proxy.
    func client(peer: String, forwardedFor: [String]) -> String {
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        for hop in hops.reversed() where !hop.isEmpty && !trustedProxies.contains(hop) {
            return String(hop.utf8.prefix(64)) ?? peer
        }
        return peer
    }

    /// Takes a place for `address`; false (nothing taken) when it has `limit` open already.
    func admit(_ address: String) -> Bool {
        open.withLock { open in
            let count = open[address, default: 0]
            guard count < limit else { return false }
            open[address] = count + 1
            return true
        }
    }

    func release(_ address: String) {
        open.withLock { open in
            let count = (open[address] ?? 1) - 1
            open[address] = count > 0 ? count : nil
        }
    }
}

/// Answers one connection over the cap with 503 and closes it, without reading what it sent.
final class OverCapacityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    static let nodeFull = raw(.overloaded, status: "503 Service Unavailable")
    static let addressFull = raw(.tooManyFromAddress, status: "429 Too Many Requests")

    static func raw(_ error: HeraldError, status: String) -> String {
        let body = String(decoding: APIAnswer.failure(error).body, as: UTF8.self)
        return "HTTP/1.1 \(status)\r\nContent-Type: application/json; charset=utf-8\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\nRetry-After: 1\r\n\r\n" + body
    }

    let response: String

    init(response: String = OverCapacityHandler.nodeFull) {
        self.response = response
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context: context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context: context) }
    }

    private var answered = false

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        let channel = context.channel
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// Time limits on an HTTP connection: a request head must arrive within `headerTimeout` of the
/// connection's start (and a WebSocket be admitted within it: the upgrade removes this handler),
/// a body within `bodyTimeout` of its head, and a kept-alive connection must start its next
/// request within `keepAliveTimeout` of the last answer. While a request is being answered no
/// limit runs. Past one, the connection closes. Sits after the HTTP decoder.
final class HTTPDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let headerTimeout: TimeAmount
    private let bodyTimeout: TimeAmount
    private let keepAliveTimeout: TimeAmount
    private let onTimeout: @Sendable () -> Void
    /// When the connection must have made progress by, or nil while a request is being answered.
    private var deadline: NIODeadline?
    /// The one scheduled check. It runs at the deadline or at most `checkEvery` from now,
    /// whichever is first, so a new deadline (never nearer than `checkEvery`) never has to move
    /// it: a request's head, end and answer only set `deadline`, and a kept-alive connection
    /// schedules one timer per `checkEvery` instead of three per request.
    private var timer: Scheduled<Void>?
    private let checkEvery: TimeAmount

    init(headerTimeout: TimeAmount, bodyTimeout: TimeAmount, keepAliveTimeout: TimeAmount, onTimeout: @escaping @Sendable () -> Void) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.keepAliveTimeout = keepAliveTimeout
        self.onTimeout = onTimeout
        checkEvery = min(headerTimeout, bodyTimeout, keepAliveTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(headerTimeout, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: arm(bodyTimeout, context: context)
        case .body: break
        case .end: deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(keepAliveTimeout, context: context) }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func arm(_ amount: TimeAmount, context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        deadline = now + amount
        if timer == nil { schedule(at: now + min(amount, checkEvery), context: context) }
    }

    private func schedule(at due: NIODeadline, context: ChannelHandlerContext) {
        timer?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) {
            let (handler, context) = loopBound.value
            handler.check(context: context)
        }
    }

    /// The scheduled check: past the deadline the connection is closed; otherwise the next
    /// check is at the deadline or `checkEvery` from now (with no deadline: a request is being
    /// answered).
    private func check(context: ChannelHandlerContext) {
        timer = nil
        let now = context.eventLoop.now
        if let deadline, now >= deadline {
            stop()
            onTimeout()
            context.channel.close(promise: nil)
            return
        }
        let next = now + checkEvery
        schedule(at: deadline.map { min($0, next) } ?? next, context: context)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        deadline = nil
    }
}

extension HeraldError {
    public static let originNotAllowed = HeraldError(.originNotAllowed, message: "this Origin is not allowed (see --allowed-origins and --api-allowed-origins)")
    public static let tooManyFromAddress = HeraldError(.rateLimited, message: "too many open connections from this address (--max-connections-per-ip)")
    public static let overloaded = HeraldError(.unavailable, message: "the node is at its connection limit; try again later or another node")
}
