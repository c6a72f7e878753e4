import Foundation
import NIOCore
import Synchronization

/// What the reconnect scenario knows of each client: its session token and last position
/// (to resume with), and how its resume went. Any thread.
final class ResumeLedger: Sendable {
    struct Client: Sendable {
        var clientId = ""
        var token: String?
        var pos: String?
        var pushes = 0
        var recovered = 0
        var live = 0
        /// The welcome of the resumed connection.
        var resumed: Bool?
        var expected = 0
        var reason: String?
        /// Monotonic ns: the first connection dropped; the resume's welcome; its last recovered frame.
        var droppedAt: UInt64?
        var welcomedAt: UInt64?
        var recoveredAt: UInt64?
        var closeCode: Int?
    }

    private let clients: Mutex<[Client]>

    init(count: Int) {
        clients = Mutex(Array(repeating: Client(), count: count))
    }

    func update(_ index: Int, _ body: (inout Client) -> Void) {
        clients.withLock { body(&$0[index]) }
    }

    var snapshot: [Client] { clients.withLock { $0 } }
}

/// A lean WebSocket client for the reconnect scenario: it keeps the latest 1003 session token
/// and push `pos`, and on a resumed connection counts the recovered frames against the
/// welcome's `recovered`. Frames from the server are unmasked and unfragmented (Herald's).
final class ResumingClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: String
    private let index: Int
    private let ledger: ResumeLedger
    /// Whether this connection is a resume (its welcome says how it went).
    private let resuming: Bool
    private let welcomed: EventLoopPromise<Void>
    private var handshaken = false
    private var sawWelcome = false
    private var pending: ByteBuffer?
    private var settled = false

    init(request: String, index: Int, resuming: Bool, ledger: ResumeLedger, welcomed: EventLoopPromise<Void>) {
        self.request = request
        self.index = index
        self.resuming = resuming
        self.ledger = ledger
        self.welcomed = welcomed
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var earlier = pending {
            pending = nil
            earlier.writeBuffer(&incoming)
            incoming = earlier
        }
        if !handshaken {
            guard let end = incoming.readableBytesView.firstRange(of: [13, 10, 13, 10]) else {
                pending = incoming
                return
            }
            let head = incoming.readString(length: end.lowerBound - incoming.readableBytesView.startIndex) ?? ""
            incoming.moveReaderIndex(forwardBy: 4)
            guard head.split(separator: " ").dropFirst().first == "101" else {
                settle(.failure(ClientConnectError("upgrade refused: \(head.prefix(while: { $0 != "\r" }))")))
                context.close(promise: nil)
                return
            }
            handshaken = true
        }
        while let (opcode, payload) = Self.nextFrame(&incoming) {
            frame(opcode: opcode, payload: payload, context: context)
        }
        if incoming.readableBytes > 0 { pending = incoming }
    }

    /// The next whole frame, or nil (the buffer keeps a partial one).
    static func nextFrame(_ buffer: inout ByteBuffer) -> (UInt8, ByteBuffer)? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        var header = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let long = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(long)
            header = 4
        } else if length == 127 {
            guard let long = buffer.getInteger(at: start + 2, as: UInt64.self), long < 1 << 26 else { return nil }
            length = Int(long)
            header = 10
        }
        guard buffer.readableBytes >= header + length else { return nil }
        buffer.moveReaderIndex(forwardBy: header)
        guard let payload = buffer.readSlice(length: length) else { return nil }
        return (first & 0x0F, payload)
    }

    private func frame(opcode: UInt8, payload: ByteBuffer, context: ChannelHandlerContext) {
        switch opcode {
        case 0x1: text(payload)
        case 0x8:
            ledger.update(index) { $0.closeCode = payload.getInteger(at: payload.readerIndex, as: UInt16.self).map(Int.init) }
            context.close(promise: nil)
        case 0x9:
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketClientHandler.frame(opcode: 0xA, payload: payload, allocator: context.channel.allocator)),
                promise: nil)
        default: break
        }
    }

    private func text(_ payload: ByteBuffer) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.readableBytesView)) as? [String: Any] else { return }
        let data = object["data"] as? [String: Any]
        let now = MonotonicClock.nanos()
        if !sawWelcome {
            sawWelcome = true
            ledger.update(index) { client in
                if let id = data?["clientId"] as? String { client.clientId = id }
                guard resuming else { return }
                client.welcomedAt = now
                client.resumed = data?["resumed"] as? Bool
                client.expected = data?["recovered"] as? Int ?? 0
                client.reason = data?["reason"] as? String
                if client.expected == 0 { client.recoveredAt = now }
            }
            settle(.success(()))
            return
        }
        if object["code"] as? Int == 1003 {
            ledger.update(index) { $0.token = data?["session"] as? String }
            return
        }
        guard object["messageId"] != nil else { return }
        let pos = object["pos"] as? String
        let recovered = object["recovered"] as? Bool == true
        ledger.update(index) { client in
            client.pushes += 1
            if let pos { client.pos = pos }
            if recovered {
                client.recovered += 1
                if client.recovered == client.expected { client.recoveredAt = now }
            } else {
                client.live += 1
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let now = MonotonicClock.nanos()
        ledger.update(index) { if $0.droppedAt == nil { $0.droppedAt = now } }
        settle(.failure(ClientConnectError("closed before its welcome")))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settle(.failure(error))
        context.close(promise: nil)
    }

    private func settle(_ result: Result<Void, any Error>) {
        guard !settled else { return }
        settled = true
        welcomed.completeWith(result)
    }
}
