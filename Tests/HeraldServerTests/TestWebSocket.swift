import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization

/// What the raw test client observed from the server.
enum WSEvent: Sendable, Equatable {
    case text(String)
    case binary(Int)
    case ping
    /// A close frame from the server with its status code (nil when the frame had no code).
    case close(code: Int?)
    /// The TCP connection ended.
    case eof
    /// The server sent bytes that are not a valid WebSocket frame (e.g. a control frame over 125 bytes).
    case invalidFrame(String)
}

struct WebSocketNotUpgraded: Error, CustomStringConvertible {
    let status: Int
    let response: String
    var description: String { "WebSocket upgrade refused with HTTP \(status): \(response.prefix(400))" }
}

struct WebSocketTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

struct WebSocketClosedError: Error, CustomStringConvertible {
    let event: WSEvent
    var description: String { "connection closed instead of a text frame: \(event)" }
}

/// Events queue with a single async consumer and a timeout per wait.
final class WSInbox: Sendable {
    private struct State {
        var events: [WSEvent] = []
        var head = 0
        var waiter: (id: Int, cont: CheckedContinuation<WSEvent?, Never>)?
        var nextWaiterId = 0
        var pings = 0

        mutating func pop() -> WSEvent? {
            guard head < events.count else { return nil }
            let e = events[head]
            head += 1
            if head > 1024, head * 2 > events.count {
                events.removeFirst(head)
                head = 0
            }
            return e
        }
    }

    private let state = Mutex(State())
    /// When set, text frames for which it returns false are dropped (used by the 1,000-client test).
    let textFilter: (@Sendable (String) -> Bool)?

    init(textFilter: (@Sendable (String) -> Bool)?) {
        self.textFilter = textFilter
    }

    var pingCount: Int { state.withLock { $0.pings } }

    func push(_ event: WSEvent) {
        if case .text(let t) = event, let f = textFilter, !f(t) { return }
        state.withLock { s in
            if case .ping = event { s.pings += 1 }
            if let w = s.waiter {
                s.waiter = nil
                w.cont.resume(returning: event)
            } else {
                s.events.append(event)
            }
        }
    }

    func next(timeout: Duration, eventLoop: any EventLoop) async -> WSEvent? {
        if let e = state.withLock({ $0.pop() }) { return e }
        return await withCheckedContinuation { (cont: CheckedContinuation<WSEvent?, Never>) in
            let id: Int? = state.withLock { s in
                if let e = s.pop() {
                    cont.resume(returning: e)
                    return nil
                }
                precondition(s.waiter == nil, "WSInbox supports a single consumer")
                s.nextWaiterId += 1
                s.waiter = (s.nextWaiterId, cont)
                return s.nextWaiterId
            }
            guard let id else { return }
            eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in
                self.expire(id)
            }
        }
    }

    private func expire(_ id: Int) {
        state.withLock { s in
            if let w = s.waiter, w.id == id {
                s.waiter = nil
                w.cont.resume(returning: nil)
            }
        }
    }
}

final class WSFlags: Sendable {
    let autoPong = Atomic<Bool>(true)
}

/// Writes the HTTP/1.1 upgrade request, parses the answer, then installs the WebSocket codec.
private final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: String
    private let promise: EventLoopPromise<Void>
    private let inbox: WSInbox
    private let flags: WSFlags
    private var buffer = ByteBuffer()
    private var upgraded = false
    private var failed = false

    init(request: String, promise: EventLoopPromise<Void>, inbox: WSInbox, flags: WSFlags) {
        self.request = request
        self.promise = promise
        self.inbox = inbox
        self.flags = flags
    }

    func channelActive(context: ChannelHandlerContext) {
        var buf = context.channel.allocator.buffer(capacity: request.utf8.count)
        buf.writeString(request)
        context.writeAndFlush(Self.wrapOutboundOut(buf), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if upgraded {
            context.fireChannelRead(Self.wrapInboundOut(incoming))
            return
        }
        if failed { return }
        buffer.writeBuffer(&incoming)
        let view = buffer.readableBytesView
        guard let end = findHeaderEnd(view) else {
            if buffer.readableBytes > 64 * 1024 { fail(context: context, status: 0) }
            return
        }
        let headLength = end - view.startIndex
        let head = buffer.getString(at: buffer.readerIndex, length: headLength) ?? ""
        buffer.moveReaderIndex(forwardBy: headLength + 4)
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first ?? ""
        let parts = statusLine.split(separator: " ")
        let status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        guard status == 101 else {
            // Give the body a moment to arrive for diagnostics, but fail now.
            let bodyText = buffer.readString(length: buffer.readableBytes) ?? ""
            fail(context: context, status: status, response: head + "\r\n\r\n" + bodyText)
            return
        }
        upgraded = true
        do {
            try context.pipeline.syncOperations.addHandlers(
                [
                    ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 16 << 20)),
                    WebSocketFrameEncoder(),
                    FrameCollector(inbox: inbox, flags: flags),
                ],
                position: .after(self)
            )
        } catch {
            promise.fail(error)
            context.close(promise: nil)
            return
        }
        promise.succeed(())
        if buffer.readableBytes > 0 {
            let rest = buffer.readSlice(length: buffer.readableBytes)!
            context.fireChannelRead(Self.wrapInboundOut(rest))
        }
        buffer = ByteBuffer()
    }

    private func fail(context: ChannelHandlerContext, status: Int, response: String = "") {
        failed = true
        promise.fail(WebSocketNotUpgraded(status: status, response: response))
        context.close(promise: nil)
    }

    private func findHeaderEnd(_ view: ByteBufferView) -> ByteBufferView.Index? {
        let pattern: [UInt8] = [13, 10, 13, 10]
        guard view.count >= 4 else { return nil }
        var i = view.startIndex
        while i + 3 < view.endIndex {
            if view[i] == pattern[0], view[i + 1] == pattern[1], view[i + 2] == pattern[2],
                view[i + 3] == pattern[3]
            {
                return i
            }
            i += 1
        }
        return nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !upgraded && !failed {
            failed = true
            promise.fail(WebSocketNotUpgraded(status: 0, response: "connection closed during handshake"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !upgraded && !failed {
            failed = true
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }
}

/// Collects frames into the inbox, answers pings, echoes the close handshake.
private final class FrameCollector: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let inbox: WSInbox
    private let flags: WSFlags
    private var fragments: ByteBuffer?
    private var fragmentIsText = true
    private var sawClose = false

    init(inbox: WSInbox, flags: WSFlags) {
        self.inbox = inbox
        self.flags = flags
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                deliver(frame.unmaskedData, isText: frame.opcode == .text)
            } else {
                fragments = frame.unmaskedData
                fragmentIsText = frame.opcode == .text
            }
        case .continuation:
            var d = frame.unmaskedData
            fragments?.writeBuffer(&d)
            if frame.fin, let all = fragments {
                fragments = nil
                deliver(all, isText: fragmentIsText)
            }
        case .ping:
            inbox.push(.ping)
            if flags.autoPong.load(ordering: .relaxed) {
                let pong = WebSocketFrame(
                    fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
                context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
            }
        case .pong:
            break
        case .connectionClose:
            var d = frame.unmaskedData
            let code = d.readInteger(as: UInt16.self).map(Int.init)
            if !sawClose {
                sawClose = true
                inbox.push(.close(code: code))
                var reply = context.channel.allocator.buffer(capacity: 2)
                reply.writeInteger(UInt16(code ?? 1000))
                let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: reply)
                let channel = context.channel
                context.writeAndFlush(Self.wrapOutboundOut(frame)).whenComplete { _ in
                    channel.close(promise: nil)
                }
            }
        default:
            break
        }
    }

    private func deliver(_ data: ByteBuffer, isText: Bool) {
        if isText {
            inbox.push(.text(String(buffer: data)))
        } else {
            inbox.push(.binary(data.readableBytes))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.push(.eof)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        inbox.push(.invalidFrame("\(error)"))
        context.close(promise: nil)
    }
}

/// A minimal WebSocket client on SwiftNIO for black-box tests.
final class TestWebSocket: Sendable {
    let channel: any Channel
    let inbox: WSInbox
    let flags: WSFlags

    private init(channel: any Channel, inbox: WSInbox, flags: WSFlags) {
        self.channel = channel
        self.inbox = inbox
        self.flags = flags
    }

    /// Connects and performs the upgrade; throws `WebSocketNotUpgraded` (with the HTTP status) when refused.
    static func connect(
        host: String, port: Int, path: String, receiveBufferSize: Int? = nil, autoPong: Bool = true,
        textFilter: (@Sendable (String) -> Bool)? = nil, timeout: Duration = .seconds(10)
    ) async throws -> TestWebSocket {
        let group = MultiThreadedEventLoopGroup.singleton
        let inbox = WSInbox(textFilter: textFilter)
        let flags = WSFlags()
        flags.autoPong.store(autoPong, ordering: .relaxed)
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for i in keyBytes.indices { keyBytes[i] = UInt8.random(in: 0...255) }
        let key = Data(keyBytes).base64EncodedString()
        let request =
            "GET \(path) HTTP/1.1\r\n"
            + "Host: \(host):\(port)\r\n"
            + "Upgrade: websocket\r\n"
            + "Connection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\n"
            + "Sec-WebSocket-Version: 13\r\n"
            + "\r\n"
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: Void.self)
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let receiveBufferSize {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: .init(receiveBufferSize))
        }
        bootstrap = bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    HandshakeHandler(request: request, promise: promise, inbox: inbox, flags: flags))
            }
        }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        let timer = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            promise.fail(WebSocketTimeout(what: "the WebSocket upgrade answer"))
        }
        defer { timer.cancel() }
        do {
            try await promise.futureResult.get()
        } catch {
            try? await channel.close()
            throw error
        }
        return TestWebSocket(channel: channel, inbox: inbox, flags: flags)
    }

    /// The next event (pings are skipped unless `includePings`). Throws `WebSocketTimeout`.
    func nextEvent(timeout: Duration = .seconds(5), includePings: Bool = false) async throws -> WSEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero,
                let e = await inbox.next(timeout: remaining, eventLoop: channel.eventLoop)
            else {
                throw WebSocketTimeout(what: "a WebSocket frame")
            }
            if case .ping = e, !includePings { continue }
            return e
        }
    }

    /// The next text frame; throws `WebSocketClosedError` when the server closed instead.
    func next(timeout: Duration = .seconds(5)) async throws -> String {
        while true {
            switch try await nextEvent(timeout: timeout) {
            case .text(let t): return t
            case .binary: continue
            case let e: throw WebSocketClosedError(event: e)
            }
        }
    }

    func nextJSON(timeout: Duration = .seconds(5)) async throws -> JSON {
        let t = try await next(timeout: timeout)
        guard let j = JSON.parse(t) else { throw WebSocketTimeout(what: "a JSON frame, got \(t.prefix(200))") }
        return j
    }

    /// Reads until the server closes; returns the close code (nil if the TCP connection ended without
    /// a close frame, or the close frame had no code) and how many text frames came before it.
    func waitForClose(timeout: Duration = .seconds(5)) async throws -> (code: Int?, texts: Int) {
        let r = try await waitForCloseEvent(timeout: timeout)
        if case .close(let code) = r.event { return (code, r.texts) }
        return (nil, r.texts)
    }

    /// Like `waitForClose` but returns the ending event (`.close(code:)` or `.eof`).
    func waitForCloseEvent(timeout: Duration = .seconds(5)) async throws -> (event: WSEvent, texts: Int) {
        let deadline = ContinuousClock.now + timeout
        var texts = 0
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw WebSocketTimeout(what: "the server to close") }
            switch try await nextEvent(timeout: remaining) {
            case .text: texts += 1
            case .binary, .ping: continue
            case .close(let code): return (.close(code: code), texts)
            case .eof: return (.eof, texts)
            case .invalidFrame(let why): return (.invalidFrame(why), texts)
            }
        }
    }

    var pingCount: Int { inbox.pingCount }

    func setAutoPong(_ on: Bool) { flags.autoPong.store(on, ordering: .relaxed) }

    func sendText(_ text: String) async throws {
        var buf = channel.allocator.buffer(capacity: text.utf8.count)
        buf.writeString(text)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buf))
    }

    /// Sends one text frame of exactly `size` payload bytes.
    func sendFrame(size: Int) async throws {
        var buf = channel.allocator.buffer(capacity: size)
        buf.writeRepeatingByte(UInt8(ascii: "a"), count: size)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buf))
    }

    func sendBinary(_ bytes: [UInt8]) async throws {
        var buf = channel.allocator.buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buf))
    }

    /// Stops reading from the socket (the server's writes back up).
    func pauseReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    func resumeReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
        channel.read()
    }

    /// Sends a close frame (1000) and closes the TCP connection.
    func close() async throws {
        guard channel.isActive else { return }
        var buf = channel.allocator.buffer(capacity: 2)
        buf.writeInteger(UInt16(1000))
        try? await channel.writeAndFlush(
            WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: buf))
        try? await channel.close()
    }

    /// Drops the TCP connection without a close frame.
    func abort() async {
        try? await channel.close()
    }
}
