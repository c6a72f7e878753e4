import NIOCore
import NIOWebSocket

/// What a WebSocket session writes: a frame (control frames, the welcome), or a text frame
/// already framed by `ServerFrameEncoder.textFrame`, whose bytes every member of a group on one
/// event loop shares.
enum OutboundWebSocket {
    case frame(WebSocketFrame)
    case framed(ByteBuffer)
}

/// Writes server-to-client frames (RFC 6455 5.2: never masked). Takes the place of NIO's
/// `WebSocketFrameEncoder`, which writes a separate header buffer for every frame whose payload
/// it cannot prepend in place (any shared one), so a group send cost two writes and an
/// allocation per member. Here a push is framed once per loop and written to each member as is.
final class ServerFrameEncoder: ChannelOutboundHandler {
    typealias OutboundIn = OutboundWebSocket
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .framed(let bytes):
            context.write(wrapOutboundOut(bytes), promise: promise)
        case .frame(let frame):
            var bytes = context.channel.allocator.buffer(capacity: Self.headerLength(frame.data.readableBytes) + frame.data.readableBytes)
            Self.writeHeader(fin: frame.fin, opcode: frame.opcode, length: frame.data.readableBytes, into: &bytes)
            var payload = frame.data
            bytes.writeBuffer(&payload)
            context.write(wrapOutboundOut(bytes), promise: promise)
        }
    }

    /// A final text frame carrying `text`, header and payload in one buffer.
    static func textFrame(_ text: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let length = text.utf8.count
        var bytes = allocator.buffer(capacity: headerLength(length) + length)
        writeHeader(fin: true, opcode: .text, length: length, into: &bytes)
        bytes.writeString(text)
        return bytes
    }

    static func headerLength(_ length: Int) -> Int {
        length < 126 ? 2 : length <= Int(UInt16.max) ? 4 : 10
    }

    private static func writeHeader(fin: Bool, opcode: WebSocketOpcode, length: Int, into bytes: inout ByteBuffer) {
        bytes.writeInteger((fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode))
        if length < 126 {
            bytes.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            bytes.writeInteger(UInt8(126))
            bytes.writeInteger(UInt16(length))
        } else {
            bytes.writeInteger(UInt8(127))
            bytes.writeInteger(UInt64(length))
        }
    }
}
