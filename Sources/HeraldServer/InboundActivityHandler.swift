import NIOCore
import NIOWebSocket

/// Marks a client active on every frame it sends, pongs included. The WebSocket library answers
/// pings and consumes pongs before the endpoint's read loop sees them, so without this a browser
/// that only answers the server's pings would be closed as idle.
final class InboundActivityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private let connection: ClientConnection

    init(connection: ClientConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.touch()
        context.fireChannelRead(data)
    }

    /// Puts the handler right after the frame decoder of an upgraded WebSocket channel.
    static func install(on channel: any Channel, for connection: ClientConnection) async throws {
        try await channel.eventLoop.submit {
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            try pipeline.addHandler(InboundActivityHandler(connection: connection), position: .after(decoder.handler))
        }.get()
    }
}
