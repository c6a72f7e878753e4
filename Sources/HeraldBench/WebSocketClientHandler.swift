import NIOCore

/// One lean WebSocket client in a single handler: it writes the upgrade request, checks the
/// 101 answer, then parses the server's (unmasked) frames itself, answers pings and the close
/// handshake, and hands stamped messages to the recorder. No per-connection pipeline of
/// decoders and encoders, and no buffer kept between reads unless a frame is split.
final class WebSocketClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State { case handshaking, awaitingWelcome, open, closed }

    private let request: String
    private let index: Int
    private let events: ClientEvents
    /// Succeeds with the client ID (Herald's first frame) or nil (no welcome expected).
    private let established: EventLoopPromise<String?>
    private var state: State = .handshaking
    private let expectWelcome: Bool
    private var pending: ByteBuffer?
    private var fragments: ByteBuffer?
    private var lastSeq: UInt64 = 0
    private var lastPhase: UInt32 = 0
    private var closeCode: Int?
    private var sawClose = false
    /// Set once `established` is completed, either way.
    private var settled = false
    private var wasEstablished = false
    static let maxFrameBytes = 16 << 20

    init(request: String, index: Int, expectWelcome: Bool, events: ClientEvents, established: EventLoopPromise<String?>)
    {
        self.request = request
        self.index = index
        self.expectWelcome = expectWelcome
        self.events = events
        self.established = established
    }

    static func upgradeRequest(host: String, port: Int, path: String) -> String {
        "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: aGVyYWxkLWJlbmNoLWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: request.utf8.count)
        buffer.writeString(request)
        context.writeAndFlush(Self.wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var earlier = pending {
            pending = nil
            earlier.writeBuffer(&incoming)
            incoming = earlier
        }
        if state == .handshaking {
            guard readHandshake(&incoming, context: context) else { return }
        }
        readFrames(&incoming, context: context)
        if incoming.readableBytes > 0, state != .closed {
            // Keep only the split frame's bytes, not the whole receive buffer.
            var rest = context.channel.allocator.buffer(capacity: incoming.readableBytes)
            rest.writeBuffer(&incoming)
            pending = rest
        }
    }

    /// True once the 101 answer is consumed; false while it is incomplete or after a refusal.
    private func readHandshake(_ incoming: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        guard let end = incoming.readableBytesView.firstRange(of: [13, 10, 13, 10]) else {
            if incoming.readableBytes > 16 << 10 {
                fail(context: context, "upgrade answer too long")
            } else {
                pending = incoming
            }
            return false
        }
        let headLength = end.lowerBound - incoming.readableBytesView.startIndex
        let head = incoming.readString(length: headLength) ?? ""
        incoming.moveReaderIndex(forwardBy: 4)
        let statusLine = head.prefix(while: { $0 != "\r" })
        guard statusLine.split(separator: " ").dropFirst().first == "101" else {
            fail(context: context, "upgrade refused: \(statusLine)")
            return false
        }
        if expectWelcome {
            state = .awaitingWelcome
        } else {
            state = .open
            succeed(nil)
        }
        return true
    }

    private func readFrames(_ incoming: inout ByteBuffer, context: ChannelHandlerContext) {
        while state != .closed, incoming.readableBytes >= 2 {
            let start = incoming.readerIndex
            let first = incoming.getInteger(at: start, as: UInt8.self)!
            let second = incoming.getInteger(at: start + 1, as: UInt8.self)!
            var headerLength = 2
            var length = Int(second & 0x7F)
            if length == 126 {
                guard incoming.readableBytes >= 4 else { return }
                length = Int(incoming.getInteger(at: start + 2, as: UInt16.self)!)
                headerLength = 4
            } else if length == 127 {
                guard incoming.readableBytes >= 10 else { return }
                let long = incoming.getInteger(at: start + 2, as: UInt64.self)!
                length = long > UInt64(Self.maxFrameBytes) ? Self.maxFrameBytes + 1 : Int(long)
                headerLength = 10
            }
            guard second & 0x80 == 0, length <= Self.maxFrameBytes else {
                fail(context: context, "invalid frame from server (masked or over 16 MiB)")
                return
            }
            guard incoming.readableBytes >= headerLength + length else { return }
            incoming.moveReaderIndex(forwardBy: headerLength)
            let payload = incoming.readSlice(length: length)!
            frame(opcode: first & 0x0F, fin: first & 0x80 != 0, payload: payload, context: context)
        }
    }

    private func frame(opcode: UInt8, fin: Bool, payload: ByteBuffer, context: ChannelHandlerContext) {
        switch opcode {
        case 0x1, 0x2:
            if fin {
                message(payload, context: context)
            } else {
                fragments = payload
            }
        case 0x0:
            guard var collected = fragments else { return }
            var more = payload
            collected.writeBuffer(&more)
            if fin {
                fragments = nil
                message(collected, context: context)
            } else {
                fragments = collected
            }
        case 0x8:
            closeCode = payload.getInteger(at: payload.readerIndex, as: UInt16.self).map(Int.init)
            if !sawClose {
                sawClose = true
                var code = context.channel.allocator.buffer(capacity: 2)
                code.writeInteger(UInt16(closeCode ?? 1000))
                let channel = context.channel
                context.writeAndFlush(
                    Self.wrapOutboundOut(Self.frame(opcode: 0x8, payload: code, allocator: channel.allocator))
                )
                .whenComplete { _ in channel.close(promise: nil) }
            }
            state = .closed
        case 0x9:
            context.writeAndFlush(
                Self.wrapOutboundOut(Self.frame(opcode: 0xA, payload: payload, allocator: context.channel.allocator)),
                promise: nil)
        default:
            break
        }
    }

    private func message(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        if state == .awaitingWelcome {
            guard let clientId = Self.clientId(in: payload) else {
                fail(context: context, "first frame carries no clientId: \(String(buffer: payload).prefix(200))")
                return
            }
            state = .open
            succeed(clientId)
            return
        }
        if let stamp = BenchStamp.find(in: payload) {
            if stamp.phase != lastPhase {
                lastPhase = stamp.phase
                lastSeq = 0
            }
            let inOrder = stamp.seq > lastSeq
            if inOrder { lastSeq = stamp.seq }
            events.recorder.record(stamp, receivedAt: MonotonicClock.nanos(), inOrder: inOrder)
        } else if payload.readableBytes == 4, payload.readableBytesView.elementsEqual("pong".utf8) {
            events.pong()
        } else if payload.readableBytesView.starts(with: Self.sessionFramePrefix) {
            // Herald's session token (resume), after the welcome and each bind: not presence.
            return
        } else {
            events.otherFrame()
        }
    }

    private static let sessionFramePrefix = Array(#"{"code":1003,"#.utf8)

    /// The value of `"clientId":"…"` in Herald's first frame.
    static func clientId(in payload: ByteBuffer) -> String? {
        let view = payload.readableBytesView
        guard let key = view.firstRange(of: Array(#""clientId":""#.utf8)) else { return nil }
        let rest = view[key.upperBound...]
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: rest[rest.startIndex..<end], as: UTF8.self)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        if wasEstablished {
            events.closed(index: index, code: closeCode)
        } else {
            settle(.failure(ClientConnectError("connection closed before it was established")))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settle(.failure(error))
        context.close(promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ why: String) {
        settle(.failure(ClientConnectError(why)))
        state = .closed
        context.close(promise: nil)
    }

    private func succeed(_ clientId: String?) {
        wasEstablished = !settled
        settle(.success(clientId))
    }

    private func settle(_ result: Result<String?, any Error>) {
        guard !settled else { return }
        settled = true
        established.completeWith(result)
    }

    /// A client frame: always masked (RFC 6455 5.3), payload at most 125 bytes here.
    static func frame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: payload.readableBytes + 6)
        frame.writeInteger(0x80 | opcode)
        frame.writeInteger(0x80 | UInt8(min(payload.readableBytes, 125)))
        let mask = (
            UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255)
        )
        frame.writeMultipleIntegers(mask.0, mask.1, mask.2, mask.3)
        let keys = [mask.0, mask.1, mask.2, mask.3]
        var i = 0
        for byte in payload.readableBytesView.prefix(125) {
            frame.writeInteger(byte ^ keys[i & 3])
            i += 1
        }
        return frame
    }

    static func textFrame(_ text: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: text.utf8.count)
        payload.writeString(text)
        return frame(opcode: 0x1, payload: payload, allocator: allocator)
    }
}

struct ClientConnectError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
