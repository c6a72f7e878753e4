import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The request context of every route; keeps the channel so a WebSocket that stops
/// reading can be closed hard.
public struct HeraldRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<HeraldRequestContext>
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}
