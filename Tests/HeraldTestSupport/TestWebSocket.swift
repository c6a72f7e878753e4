import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization

/// What the raw test client observed from the server.
public enum WSEvent: Sendable, Equatable {
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

public struct WebSocketNotUpgraded: Error, CustomStringConvertible {
    public let status: Int
    public let response: String
    public var description: String { "WebSocket upgrade refused with HTTP \(status): \(response.prefix(400))" }
}

public struct WebSocketTimeout: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "timed out waiting for \(what)" }
}

public struct WebSocketClosedError: Error, CustomStringConvertible {
    public let event: WSEvent
    public var description: String { "connection closed instead of a text frame: \(event)" }
}

/// Events queue with a single async consumer and a timeout per wait.
public final class WSInbox: Sendable {
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
    public let textFilter: (@Sendable (String) -> Bool)?

    public init(textFilter: (@Sendable (String) -> Bool)?) {
        self.textFilter = textFilter
    }

    public var pingCount: Int { state.withLock { $0.pings } }

    public func push(_ event: WSEvent) {
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

    public func next(timeout: Duration, eventLoop: any EventLoop) async -> WSEvent? {
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

public final class WSFlags: Sendable {
    public let autoPong = Atomic<Bool>(true)
    /// Whether `next()` returns the server's 1003 session frames (it skips them by default,
    /// as go-websocket-era clients ignore them, and keeps the latest token).
    public let sessionFrames = Atomic<Bool>(false)
    /// The latest session token seen (`{"code":1003,...,"data":{"session":…}}`).
    public let session = Mutex<String?>(nil)
}

/// Writes the HTTP/1.1 upgrade request, parses the answer, then installs the WebSocket codec.
private final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let request: String
    private let promise: EventLoopPromise<Void>
    private let inbox: WSInbox
    private let flags: WSFlags
    private var buffer = ByteBuffer()
    private var upgraded = false
    private var failed = false

    public init(request: String, promise: EventLoopPromise<Void>, inbox: WSInbox, flags: WSFlags) {
        self.request = request
        self.promise = promise
        self.inbox = inbox
        self.flags = flags
    }

    public func channelActive(context: ChannelHandlerContext) {
        var buf = context.channel.allocator.buffer(capacity: request.utf8.count)
        buf.writeString(request)
        context.writeAndFlush(Self.wrapOutboundOut(buf), promise: nil)
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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

    public func channelInactive(context: ChannelHandlerContext) {
        if !upgraded && !failed {
            failed = true
            promise.fail(WebSocketNotUpgraded(status: 0, response: "connection closed during handshake"))
        }
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !upgraded && !failed {
            failed = true
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }
}

/// Collects frames into the inbox, answers pings, echoes the close handshake.
private final class FrameCollector: ChannelInboundHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    private let inbox: WSInbox
    private let flags: WSFlags
    private var fragments: ByteBuffer?
    private var fragmentIsText = true
    private var sawClose = false

    public init(inbox: WSInbox, flags: WSFlags) {
        self.inbox = inbox
        self.flags = flags
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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

    public func channelInactive(context: ChannelHandlerContext) {
        inbox.push(.eof)
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        inbox.push(.invalidFrame("\(error)"))
        context.close(promise: nil)
    }
}

/// A minimal WebSocket client on SwiftNIO for black-box tests.
public final class TestWebSocket: Sendable {
    public let channel: any Channel
    public let inbox: WSInbox
    public let flags: WSFlags

    private init(channel: any Channel, inbox: WSInbox, flags: WSFlags) {
        self.channel = channel
        self.inbox = inbox
        self.flags = flags
    }

    /// Connects and performs the upgrade; throws `WebSocketNotUpgraded` (with the HTTP status) when refused.
    public static func connect(
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

    /// The next event (pings are skipped unless `includePings`, session frames unless
    /// `flags.sessionFrames`). Throws `WebSocketTimeout`.
    public func nextEvent(timeout: Duration = .seconds(5), includePings: Bool = false) async throws -> WSEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero,
                let e = await inbox.next(timeout: remaining, eventLoop: channel.eventLoop)
            else {
                throw WebSocketTimeout(what: "a WebSocket frame")
            }
            if case .ping = e, !includePings { continue }
            if case .text(let t) = e, t.hasPrefix(#"{"code":1003,"#) {
                flags.session.withLock { $0 = JSON.parse(t)?["data"]?["session"]?.string }
                if !flags.sessionFrames.load(ordering: .relaxed) { continue }
            }
            return e
        }
    }

    /// The next text frame; throws `WebSocketClosedError` when the server closed instead.
    public func next(timeout: Duration = .seconds(5)) async throws -> String {
        while true {
            switch try await nextEvent(timeout: timeout) {
            case .text(let t): return t
            case .binary: continue
            case let e: throw WebSocketClosedError(event: e)
            }
        }
    }

    public func nextJSON(timeout: Duration = .seconds(5)) async throws -> JSON {
        let t = try await next(timeout: timeout)
        guard let j = JSON.parse(t) else { throw WebSocketTimeout(what: "a JSON frame, got \(t.prefix(200))") }
        return j
    }

    /// Reads until the server closes; returns the close code (nil if the TCP connection ended without
    /// a close frame, or the close frame had no code) and how many text frames came before it.
    public func waitForClose(timeout: Duration = .seconds(5)) async throws -> (code: Int?, texts: Int) {
        let r = try await waitForCloseEvent(timeout: timeout)
        if case .close(let code) = r.event { return (code, r.texts) }
        return (nil, r.texts)
    }

    /// Like `waitForClose` but returns the ending event (`.close(code:)` or `.eof`).
    public func waitForCloseEvent(timeout: Duration = .seconds(5)) async throws -> (event: WSEvent, texts: Int) {
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

    public var pingCount: Int { inbox.pingCount }

    public func setAutoPong(_ on: Bool) { flags.autoPong.store(on, ordering: .relaxed) }

    public func sendText(_ text: String) async throws {
        var buf = channel.allocator.buffer(capacity: text.utf8.count)
        buf.writeString(text)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buf))
    }

    /// Sends one text frame of exactly `size` payload bytes.
    public func sendFrame(size: Int) async throws {
        var buf = channel.allocator.buffer(capacity: size)
        buf.writeRepeatingByte(UInt8(ascii: "a"), count: size)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buf))
    }

    public func sendBinary(_ bytes: [UInt8]) async throws {
        var buf = channel.allocator.buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buf))
    }

    /// Stops reading from the socket (the server's writes back up).
    public func pauseReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    public func resumeReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
        channel.read()
    }

    /// Sends a close frame (1000) and closes the TCP connection.
    public func close() async throws {
        guard channel.isActive else { return }
        var buf = channel.allocator.buffer(capacity: 2)
        buf.writeInteger(UInt16(1000))
        try? await channel.writeAndFlush(
            WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: buf))
        try? await channel.close()
    }

    /// Drops the TCP connection without a close frame.
    public func abort() async {
        try? await channel.close()
    }
}
