import Foundation
import HeraldCore
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// One client's WebSocket, driven by SwiftNIO callbacks on its event loop: no task per
/// connection, so an idle client costs its channel and this object, not a stack of suspended
/// tasks. Pushes from any thread go through the event loop's `LoopOutbox` and are written in
/// order. A client is closed with 1013 when more than `limit` frames wait for the event loop,
/// or when `limit` frames were written while its socket was backed up (NIO's write buffer over
/// its high-water mark); one that does not take its close within `closeTimeout` loses its socket.
final class WebSocketSession: ChannelInboundHandler, RemovableChannelHandler, ClientSink {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// What the endpoint decided when the upgrade was asked for.
    enum Admission: Sendable {
        case admitted(systemId: String, userId: String)
        case refused(code: Int, message: String)
        case goingAway
        /// Close 1013 (try again later) with this reason.
        case tryAgain(String)
    }

    let serial: UInt64
    let clientId: String
    private let admission: Admission
    private let node: HeraldNodeServices
    private let limit: Int
    private let channel: any Channel
    private let outbox: LoopOutbox
    /// Frames pushed and not yet written into the channel; any thread.
    private let queued = Atomic<Int>(0)
    /// Set once a close was asked for (by us) or the channel went away; any thread reads it.
    private let closing = Atomic<Bool>(false)

    // Event-loop state.
    private var context: ChannelHandlerContext?
    private var lastInbound = NIODeadline.now()
    private var lastPing = NIODeadline.now()
    /// Frames written while the socket was backed up, since it last drained.
    private var backlog = 0
    private var closeSent = false
    /// Written in the outbox's current pass, not yet flushed.
    private var awaitingFlush = false
    private var registered = false
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false

    init(serial: UInt64, clientId: String, admission: Admission, node: HeraldNodeServices, channel: any Channel) {
        self.serial = serial
        self.clientId = clientId
        self.admission = admission
        self.node = node
        self.limit = node.configuration.outboundQueueLimit
        self.channel = channel
        self.outbox = node.outboxes.outbox(for: channel.eventLoop)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastInbound = .now()
        lastPing = .now()
        switch admission {
        case .admitted(let systemId, let userId):
            write(OutboundFrame(FrameEncoding.welcome(clientId: clientId)), context: context)
            context.flush()
            node.registry.add(
                node.registry.makeConnection(serial: serial, clientId: clientId, systemId: systemId, userId: userId, sink: self))
            registered = true
            node.metrics.connections.increment()
        case .refused(let code, let message):
            node.metrics.refusedConnections.increment()
            node.logger.info("websocket refused", metadata: ["code": "\(code)", "reason": .string(message)])
            write(OutboundFrame(FrameEncoding.refusal(code: code, msg: message)), context: context)
            // Close reasons must fit a control frame (125 bytes): the detail went in the frame.
            sendClose(code: 1008, reason: code == 4010 ? "unauthorized" : "unknown system", context: context)
        case .goingAway:
            sendClose(code: 1001, reason: "server is shutting down", context: context)
        case .tryAgain(let reason):
            sendClose(code: 1013, reason: reason, context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing.store(true, ordering: .relaxed)
        if registered {
            registered = false
            for change in node.registry.remove(serial: serial) {
                node.delivery.announce(.left, change)
            }
            node.metrics.connections.decrement()
        }
        context.fireChannelInactive()
    }

    /// The server allows half-closed connections (for HTTP); a WebSocket whose client stopped
    /// sending is over.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            closing.store(true, ordering: .relaxed)
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: ClientSink (any thread)

    @discardableResult
    func push(_ frame: OutboundFrame) -> Bool {
        guard !closing.load(ordering: .relaxed) else { return false }
        if queued.add(1, ordering: .relaxed).newValue > limit {
            tooSlow()
            return false
        }
        outbox.enqueue(self, frame)
        return true
    }

    private func tooSlow() {
        node.metrics.slowConsumerCloses.increment()
        close(code: 1013, reason: "client is too slow to keep up")
    }

    /// Closes after the frames already pushed; the socket goes `closeTimeout` later at the latest.
    func close(code: UInt16, reason: String) {
        guard !closing.exchange(true, ordering: .relaxed) else { return }
        onLoop { session, context in
            session.sendClose(code: code, reason: reason, context: context)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastInbound = .now()
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                if frame.opcode == .text { received(text: frame.unmaskedData, context: context) }
            } else {
                fragments = frame.unmaskedData
                fragmentsAreText = frame.opcode == .text
            }
        case .continuation:
            guard var collected = fragments else { return }
            var more = frame.unmaskedData
            guard collected.readableBytes + more.readableBytes <= node.configuration.maxFrameBytes else {
                fragments = nil
                closing.store(true, ordering: .relaxed)
                sendClose(code: 1009, reason: "message too large", context: context)
                return
            }
            collected.writeBuffer(&more)
            if frame.fin {
                fragments = nil
                if fragmentsAreText { received(text: collected, context: context) }
            } else {
                fragments = collected
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            break  // activity, noted above
        case .connectionClose:
            if closing.exchange(true, ordering: .relaxed) {
                // Our close was answered: the handshake is done.
                context.close(promise: nil)
            } else {
                // The client closes: echo its code, then end the connection.
                var data = frame.unmaskedData
                let code = data.readInteger(as: UInt16.self) ?? 1000
                var buffer = context.channel.allocator.buffer(capacity: 2)
                buffer.writeInteger(code)
                let echo = WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(echo)).whenComplete { _ in channel.close(promise: nil) }
            }
        default:
            closing.store(true, ordering: .relaxed)
            sendClose(code: 1002, reason: "unknown opcode", context: context)
        }
    }

    private func received(text buffer: ByteBuffer, context: ChannelHandlerContext) {
        let text = String(buffer: buffer)
        if text == "ping" {
            guard !closeSent else { return }
            write(OutboundFrame("pong"), context: context)
            context.flush()
        } else if let ack = Self.ack(in: text) {
            node.trace.record(ack, TraceStep(.acked, node: node.membership.local.nodeId, clientId: clientId))
        }
    }

    /// The message id of an `{"ack":"<messageId>"}` frame.
    static func ack(in text: String) -> String? {
        guard text.hasPrefix("{"), text.utf8.count <= 1024,
            let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let id = object["ack"] as? String, !id.isEmpty
        else { return nil }
        return id
    }

    // MARK: Keep-alive (called by WebSocketKeeper)

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Pings when a ping is due, and closes a client that sent nothing, not even a pong, for the
    /// idle timeout. (A late pong is not a dead client: a busy client reads its backlog first.)
    /// On the session's event loop (the keeper visits each loop once per tick).
    func keepAlive(pingInterval: TimeAmount, idleTimeout: TimeAmount) {
        guard let context, !closing.load(ordering: .relaxed) else { return }
        let now = NIODeadline.now()
        if now - lastInbound >= idleTimeout {
            closing.store(true, ordering: .relaxed)
            node.metrics.idleCloses.increment()
            sendClose(code: 1000, reason: "idle timeout", context: context)
        } else if now - lastPing >= pingInterval {
            lastPing = now
            let ping = WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
        }
    }

    // MARK: Outbound (event loop)

    /// Called by the outbox on the event loop: writes one pushed frame. Answers true when the
    /// session needs a flush at the end of the outbox's pass (the first frame of the pass).
    func writeQueued(_ payload: ByteBuffer) -> Bool {
        queued.subtract(1, ordering: .relaxed)
        guard let context, !closeSent else { return false }
        write(payload, context: context)
        if context.channel.isWritable {
            backlog = 0
        } else {
            backlog += 1
            if backlog > limit {
                tooSlow()
                return false
            }
        }
        defer { awaitingFlush = true }
        return !awaitingFlush
    }

    /// The end of an outbox pass.
    func flushQueued() {
        awaitingFlush = false
        context?.flush()
    }

    private func write(_ frame: OutboundFrame, context: ChannelHandlerContext) {
        write(context.channel.allocator.buffer(string: frame.text), context: context)
    }

    private func write(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: payload)), promise: nil)
        node.metrics.framesSent.increment()
    }

    /// Writes the close frame and drops the socket if the client does not answer in time.
    private func sendClose(code: UInt16, reason longReason: String, context: ChannelHandlerContext) {
        closing.store(true, ordering: .relaxed)
        guard !closeSent else { return }
        closeSent = true
        var reason = longReason
        while reason.utf8.count > 123 { reason.removeLast() }
        var buffer = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        buffer.writeInteger(code)
        buffer.writeString(reason)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer)), promise: nil)
        let channel = context.channel
        channel.eventLoop.scheduleTask(in: WebSocketSession.closeTimeout) {
            channel.close(promise: nil)
        }
    }

    static let closeTimeout = TimeAmount.seconds(3)

    /// Runs `body` on the event loop with this handler's context (if it is still in the pipeline).
    private func onLoop(_ body: @escaping @Sendable (WebSocketSession, ChannelHandlerContext) -> Void) {
        let run: @Sendable () -> Void = {
            guard let context = self.context else { return }
            body(self, context)
        }
        if channel.eventLoop.inEventLoop {
            run()
        } else {
            channel.eventLoop.execute(run)
        }
    }
}

/// Frames for the sessions of one event loop, written in one pass per wake-up: a group send to
/// thousands of clients costs one hop per event loop, not one per client, and each client's
/// frames of a pass go out with one flush.
final class LoopOutbox: Sendable {
    private struct Pending: @unchecked Sendable {
        var items: [(session: WebSocketSession, frame: OutboundFrame)] = []
        var scheduled = false
    }

    private let eventLoop: any EventLoop
    private let pending = Mutex(Pending())

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ session: WebSocketSession, _ frame: OutboundFrame) {
        let schedule = pending.withLock { pending -> Bool in
            pending.items.append((session, frame))
            defer { pending.scheduled = true }
            return !pending.scheduled
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let items = pending.withLock { pending in
            pending.scheduled = false
            defer { pending.items.removeAll(keepingCapacity: true) }
            return pending.items
        }
        // One buffer per frame and event loop: the members of a group send on this loop share
        // it (ByteBuffer is copy-on-write), and no other thread retains it meanwhile.
        var buffers: [ObjectIdentifier: ByteBuffer] = [:]
        var toFlush: [WebSocketSession] = []
        for item in items {
            let key = ObjectIdentifier(item.frame)
            let payload: ByteBuffer
            if let shared = buffers[key] {
                payload = shared
            } else {
                payload = ByteBufferAllocator().buffer(string: item.frame.text)
                buffers[key] = payload
            }
            if item.session.writeQueued(payload) { toFlush.append(item.session) }
        }
        for session in toFlush { session.flushQueued() }
    }
}

/// One outbox per event loop, made on first use.
final class LoopOutboxes: Sendable {
    private let boxes = Mutex<[ObjectIdentifier: LoopOutbox]>([:])

    func outbox(for eventLoop: any EventLoop) -> LoopOutbox {
        boxes.withLock { boxes in
            let key = ObjectIdentifier(eventLoop)
            if let box = boxes[key] { return box }
            let box = LoopOutbox(eventLoop: eventLoop)
            boxes[key] = box
            return box
        }
    }
}

// The mutable state above is only touched on the channel's event loop (handler callbacks and
// `onLoop`); what other threads touch is atomic or immutable.
extension WebSocketSession: @unchecked Sendable {}
