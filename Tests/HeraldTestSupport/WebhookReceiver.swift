import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A webhook receiver on loopback for tests: records every POST (body, signature, when) and
/// answers as told: a status, or never (the connection stays open, unanswered).
public final class WebhookReceiver: Sendable {
    public enum Mode: Sendable, Equatable {
        case answer(Int)
        case hang
    }

    public struct Delivery: Sendable {
        public let body: [UInt8]
        public let signature: String?
        public let systemHeader: String?
        /// `X-Herald-Node`: the node that delivered it.
        public let node: String?
        public let at: ContinuousClock.Instant
        /// What it was answered (nil: never).
        public let answered: Int?
    }

    private let mode = Mutex<Mode>(.answer(200))
    private let log = Mutex<[Delivery]>([])
    private let channel: any Channel
    public let port: Int

    public var url: String { "http://127.0.0.1:\(port)/hook" }

    private init(channel: any Channel) {
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    public static func start() async throws -> WebhookReceiver {
        let box = Mutex<WebhookReceiver?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(receiver: { box.withLock { $0 } }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let receiver = WebhookReceiver(channel: channel)
        box.withLock { $0 = receiver }
        return receiver
    }

    public func setMode(_ mode: Mode) { self.mode.withLock { $0 = mode } }

    public var deliveries: [Delivery] { log.withLock { $0 } }

    /// The events of every POST answered 2xx, in arrival order (duplicates kept).
    public var acceptedEvents: [JSON] {
        deliveries.filter { ($0.answered ?? 0) / 100 == 2 }.flatMap { delivery -> [JSON] in
            guard case .array(let events)? = try? JSONDecoder().decode(JSON.self, from: Data(delivery.body)) else { return [] }
            return events
        }
    }

    /// Whether a delivery's signature is `sha256=<hex HMAC-SHA256 of its body under secret>`.
    public static func signatureIsValid(_ delivery: Delivery, secret: String) -> Bool {
        let mac = HMAC<SHA256>.authenticationCode(for: delivery.body, using: SymmetricKey(data: Data(secret.utf8)))
        return delivery.signature == "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public func shutdown() async {
        try? await channel.close()
    }

    fileprivate func received(_ head: HTTPRequestHead, body: [UInt8]) -> Int? {
        let answer: Int? =
            switch mode.withLock({ $0 }) {
            case .answer(let status): status
            case .hang: nil
            }
        log.withLock {
            $0.append(
                Delivery(
                    body: body, signature: head.headers.first(name: "X-Herald-Signature"),
                    systemHeader: head.headers.first(name: "X-Herald-System"), node: head.headers.first(name: "X-Herald-Node"),
                    at: .now, answered: answer))
        }
        return answer
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let receiver: @Sendable () -> WebhookReceiver?
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(receiver: @escaping @Sendable () -> WebhookReceiver?) {
            self.receiver = receiver
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(var buffer):
                if body.count < 16 << 20 { body += buffer.readBytes(length: buffer.readableBytes) ?? [] }
            case .end:
                guard let head, let receiver = receiver() else { return }
                guard let status = receiver.received(head, body: body) else { return }
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
