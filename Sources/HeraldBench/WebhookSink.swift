import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The lifecycle scenario's webhook receiver: answers every POST 200 and notes, for each event
/// ID in its JSON array, the wall-clock millisecond it first arrived.
final class WebhookSink: Sendable {
    /// Event ID → when it first arrived (wall-clock ms).
    let arrivals: Shared<[String: Int64]>
    private let channel: any Channel

    var url: String { "http://127.0.0.1:\(channel.localAddress?.port ?? 0)/hook" }

    private init(channel: any Channel, arrivals: Shared<[String: Int64]>) {
        self.channel = channel
        self.arrivals = arrivals
    }

    static func start(group: MultiThreadedEventLoopGroup) async throws -> WebhookSink {
        let arrivals = Shared([String: Int64]())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(arrivals: arrivals))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return WebhookSink(channel: channel, arrivals: arrivals)
    }

    func close() async {
        try? await channel.close()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let arrivals: Shared<[String: Int64]>
        var body: [UInt8] = []
        var version = HTTPVersion.http1_1

        init(arrivals: Shared<[String: Int64]>) {
            self.arrivals = arrivals
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                version = head.version
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                if let events = try? JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]] {
                    arrivals.withLock { arrivals in
                        for event in events {
                            if let id = event["eventId"] as? String, arrivals[id] == nil { arrivals[id] = now }
                        }
                    }
                }
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .ok, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
