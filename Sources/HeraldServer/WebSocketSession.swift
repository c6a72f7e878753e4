import Foundation
import HeraldCore
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// One client's WebSocket, driven by SwiftNIO callbacks on its event loop: no task per
/// connection, so an idle client costs its channel and this object, not a stack of suspended
/// tasks. What the client sends is judged by `WebSocketInboundMachine`; this handler only
/// carries out its actions. Pushes from any thread go through the event loop's `LoopOutbox` and
/// are written in order. A client is closed with 1013 when more than `limit` frames (or
/// `limitBytes` bytes) wait for the event loop, or when that much was written while its socket
/// was backed up; one that does not take its close within `closeTimeout` loses its socket.
/// While its socket is backed up the session stops reading from it, and pongs wait (coalesced
/// into one) until it drains, so a client that sends and never reads cannot grow the node.
final class WebSocketSession: ChannelDuplexHandler, RemovableChannelHandler, ClientSink {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = OutboundWebSocket

    /// What the endpoint decided when the upgrade was asked for.
    enum Admission: Sendable {
        /// `resume`: what the client asked to resume, if it did.
        case admitted(systemId: String, userId: String, resume: ResumeRequest? = nil)
        case refused(code: Int, message: String)
        case goingAway
        /// Close 1013 (try again later) with this reason.
        case tryAgain(String)
    }

    /// Message ids a connection remembers having been pushed, so its acks can be checked.
    static let ackWindow = 64

    let serial: UInt64
    let clientId: String
    private let admission: Admission
    private let node: HeraldNodeServices
    private let limit: Int
    private let limitBytes: Int
    private let channel: any Channel
    private let outbox: LoopOutbox
    /// Frames and bytes pushed and not yet written into the channel; any thread.
    private let queued = Atomic<Int>(0)
    private let queuedBytes = Atomic<Int>(0)
    /// Set once a close was asked for (by us) or the channel went away; any thread reads it.
    private let closing = Atomic<Bool>(false)
    /// Why the node ended the connection, if it did (any thread).
    private let endReason = Mutex<LifecycleEvent.Reason?>(nil)

    // Event-loop state.
    private var context: ChannelHandlerContext?
    private var inbound: WebSocketInboundMachine
    private var lastInbound = NIODeadline.now()
    private var lastPing = NIODeadline.now()
    /// Frames and bytes written while the socket was backed up, since it last drained.
    private var backlog = 0
    private var backlogBytes = 0
    private var closeSent = false
    /// Written in the outbox's current pass, not yet flushed.
    private var awaitingFlush = false
    private var registered = false
    /// Whether its `connected` (or `resumed`) event was recorded: only then a `disconnected`.
    private var announced = false
    /// A ping's payload (or the text "ping") to answer once the socket drains; newer replace older.
    private var pendingPong: ByteBuffer?
    private var pendingTextPong = false
    /// A read NIO asked for while the socket was backed up; issued once it drains.
    private var readPending = false
    /// The ids of the last pushes written, oldest overwritten first.
    private var recentPushes: [String] = []
    private var recentPushesNext = 0
    /// Set while a resume is being found: live frames wait in `held` until it is written.
    private var resuming = false
    private var held: [(framed: ByteBuffer, size: Int, messageId: String?)] = []

    init(serial: UInt64, clientId: String, admission: Admission, node: HeraldNodeServices, channel: any Channel) {
        self.serial = serial
        self.clientId = clientId
        self.admission = admission
        self.node = node
        self.limit = node.configuration.outboundQueueLimit
        self.limitBytes = node.configuration.outboundQueueBytes
        self.channel = channel
        self.outbox = node.outboxes.outbox(for: channel.eventLoop)
        self.inbound = WebSocketInboundMachine(
            maxMessageBytes: node.configuration.maxFrameBytes, frameRate: node.configuration.inboundFrameRate)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastInbound = .now()
        lastPing = .now()
        switch admission {
        case .admitted(let systemId, let userId, let resume):
            // A client that left during the upgrade is gone already: registering it would leave a
            // session that no channelInactive ever removes.
            guard context.channel.isActive else {
                closing.store(true, ordering: .relaxed)
                return
            }
            // Registered before the welcome is written: if that write fails and closes the
            // channel, channelInactive finds the session registered and removes it.
            let connection = node.registry.makeConnection(
                serial: serial, clientId: clientId, systemId: systemId, userId: userId, sink: self)
            let outcome: ResumeOutcome?
            switch resume {
            case nil: outcome = nil
            case .refused(let reason)?: outcome = .notResumed(reason: reason)
            case .resume(let token, let since)?:
                node.metrics.connections.increment()
                start(resuming: token, since: since, connection: connection)
                return
            }
            // Registered between two deliveries: the session frame's `pos` is exactly where the
            // connection joined the log (a client that gets no push can still resume from it).
            let joined = register(connection)
            registered = true
            node.metrics.connections.increment()
            write(OutboundFrame(FrameEncoding.welcome(clientId: clientId, resume: outcome)), context: context)
            write(OutboundFrame(FrameEncoding.session(sessionToken(), pos: joined)), context: context)
            record(.connected)
            context.flush()
        case .refused(let code, let message):
            node.metrics.refusedConnections.increment()
            node.logger.debug(
                "websocket refused", metadata: ["code": "\(code)", "reason": .string(String(message.utf8.prefix(160)) ?? "")])
            write(OutboundFrame(FrameEncoding.refusal(code: code, msg: message)), context: context)
            // Close reasons must fit a control frame (125 bytes): the detail went in the frame.
            sendClose(code: .policyViolation, reason: code == 4010 ? "unauthorized" : "unknown system", context: context)
        case .goingAway:
            sendClose(code: .goingAway, reason: "server is shutting down", context: context)
        case .tryAgain(let reason):
            sendClose(code: .init(codeNumber: 1013), reason: reason, context: context)
        }
    }

    /// A resume. The fabric runs the attach (register, join the token's groups) where no
    /// message slips between live delivery and recovery, then finds what the client missed
    /// (from the journal, or from Kafka on a cluster: a wait). Live frames pushed meanwhile are
    /// held, still counted against the queue's bounds; the welcome, the recovered frames
    /// (oldest first) and the session frame go out before them.
    private func start(resuming token: SessionToken, since: LogCut, connection: ConnectionRegistry.Connection) {
        resuming = true
        registered = true
        let registry = node.registry
        let serial = self.serial
        let fabric = node.fabric
        let limits = ResumeLimits(
            windowMillis: Int64(node.configuration.resumeWindow * 1000), maxMessages: node.configuration.resumeMaxMessages,
            maxBytes: limitBytes)
        let joined = Mutex<[ConnectionRegistry.Change]>([])
        Task {
            let outcome = await fabric.recover(token, since: since, limits: limits) {
                registry.add(connection)
                var changes: [ConnectionRegistry.Change] = []
                for binding in token.groups {
                    if case .bound(let change) = registry.bind(
                        serial: serial, group: binding.group, userId: binding.userId, extend: binding.extend)
                    {
                        changes.append(change)
                    }
                }
                joined.withLock { $0 = changes }
            }
            // Gone while it was attached: `unregister` may have run before the attach.
            if self.closing.load(ordering: .relaxed) {
                _ = registry.remove(serial: serial)
                return
            }
            let changes = joined.withLock { $0 }
            self.onLoop { session, context in
                session.finishResume(outcome, resumed: token.clientId, joined: changes, connection: connection, context: context)
            }
        }
    }

    private func finishResume(
        _ outcome: ResumeRecovery, resumed oldClientId: String, joined: [ConnectionRegistry.Change],
        connection: ConnectionRegistry.Connection, context: ChannelHandlerContext
    ) {
        resuming = false
        let registry = node.registry
        guard !closeSent else { return }
        switch outcome {
        case .recovered(let messages, let from):
            // The new session before the recovered frames: their positions are the new
            // connection's, so a client cut off among them resumes with the new token.
            write(OutboundFrame(FrameEncoding.welcome(clientId: clientId, resume: .resumed(recovered: messages.count))), context: context)
            write(OutboundFrame(FrameEncoding.session(sessionToken(), pos: from)), context: context)
            for (message, cut) in messages {
                guard let text = message.pushFrame(pos: cut.encoded, recovered: true) else { continue }
                write(OutboundFrame(text, messageId: message.messageId), context: context)
                rememberPush(message.messageId)
            }
            node.metrics.resumes.increment()
            record(.resumed, oldClientId: oldClientId)
            for change in joined { node.fabric.delivery.announce(.joined, change) }
            releaseHeld(context: context)
        case .refused(let reason):
            // Not resumed: a fresh connection, without the old groups; what was held came
            // through them (or before the welcome) and is dropped.
            for change in joined { _ = registry.unbind(serial: serial, group: change.group) }
            // Registered only now (refused before the attach): its `pos` is known; otherwise the
            // client's first push gives it one.
            var pos: LogCut?
            if registry.connection(serial: serial) == nil { pos = register(connection) }
            dropHeld()
            write(OutboundFrame(FrameEncoding.welcome(clientId: clientId, resume: .notResumed(reason: reason))), context: context)
            write(OutboundFrame(FrameEncoding.session(sessionToken(), pos: pos)), context: context)
            node.metrics.resumesRefused.increment()
            record(.connected)
        case .unavailable(let reason):
            // Not now: the client may ask the same resume again.
            for change in joined { _ = registry.unbind(serial: serial, group: change.group) }
            dropHeld()
            node.metrics.resumesRefused.increment()
            sendClose(code: .init(codeNumber: 1013), reason: reason, context: context)
        }
        context.flush()
    }

    /// Registers `connection` between two deliveries of the fabric's stream and answers the cut
    /// it joined at; plainly (and nil) when the fabric is not consuming.
    private func register(_ connection: ConnectionRegistry.Connection) -> LogCut? {
        let registry = node.registry
        if let cut = node.fabric.join({ registry.add(connection) }) { return cut }
        registry.add(connection)
        return nil
    }

    /// Writes the live frames held while the resume was found, in the order they came.
    private func releaseHeld(context: ChannelHandlerContext) {
        let frames = held
        held = []
        var written = 0
        for frame in frames {
            _ = writeQueued(frame.framed, size: frame.size, messageId: frame.messageId, written: &written)
        }
        countFrames(written)
        // Flushed by the caller, outside any outbox pass: the next pass must flush again.
        awaitingFlush = false
    }

    private func dropHeld() {
        for frame in held {
            queued.subtract(1, ordering: .relaxed)
            queuedBytes.subtract(frame.size, ordering: .relaxed)
        }
        held = []
    }

    /// This connection's session token as it stands (nil when too large to carry).
    private func sessionToken() -> String? {
        guard case .admitted(let systemId, let userId, _) = admission else { return nil }
        let token = SessionToken(
            clientId: clientId, systemId: systemId, userId: userId, groups: node.registry.bindings(serial: serial) ?? [],
            issuedAt: Clock.nowMillis())
        return token.sealed(with: node.router.codec)
    }

    /// A bind or unbind was applied (any thread): the client gets its new token.
    func groupsChanged(at cut: LogCut?) {
        push(OutboundFrame(FrameEncoding.session(sessionToken(), pos: cut)))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        unregister()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        unregister()
        context.fireChannelInactive()
    }

    private func unregister() {
        closing.store(true, ordering: .relaxed)
        guard registered else { return }
        registered = false
        for change in node.registry.remove(serial: serial) {
            node.fabric.delivery.announce(.left, change)
        }
        node.metrics.connections.decrement()
        if announced { record(.disconnected, reason: endReason.withLock { $0 } ?? .clientClosed) }
    }

    /// Records a lifecycle event of this client (docs/lifecycle.md).
    private func record(_ kind: LifecycleEvent.Kind, reason: LifecycleEvent.Reason? = nil, oldClientId: String? = nil) {
        guard case .admitted(let systemId, let userId, _) = admission else { return }
        if kind != .disconnected { announced = true }
        node.fabric.lifecycle.record(
            LifecycleEvent(
                kind, systemId: systemId, clientId: clientId, userId: userId, identity: node.membership.local, reason: reason,
                oldClientId: oldClientId))
    }

    /// Why the connection ends, as its `disconnected` event says; the first cause wins.
    private func ending(_ reason: LifecycleEvent.Reason) {
        endReason.withLock { if $0 == nil { $0 = reason } }
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
        let size = frame.text.utf8.count
        if queued.add(1, ordering: .relaxed).newValue > limit
            || queuedBytes.add(size, ordering: .relaxed).newValue > limitBytes
        {
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
        // The codes the node closes with: 1000 the business system asked (close_client), 1001
        // shutdown, 1012 the node re-joined under a new epoch, 1013 too slow.
        switch code {
        case 1000: ending(.closedByAPI)
        case 1001, 1012: ending(.nodeShutdown)
        case 1013: ending(.slowConsumer)
        default: break
        }
        guard !closing.exchange(true, ordering: .relaxed) else { return }
        onLoop { session, context in
            session.sendClose(code: WebSocketErrorCode(codeNumber: Int(code)), reason: reason, context: context)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastInbound = .now()
        switch inbound.receive(frame, now: lastInbound) {
        case .none:
            break
        case .text(let text):
            received(text: text, context: context)
        case .pong(let payload):
            pong(payload, context: context)
        case .closed(let echo, let handshakeDone):
            closing.store(true, ordering: .relaxed)
            if handshakeDone || closeSent {
                // Our close was answered: the handshake is done.
                context.close(promise: nil)
            } else {
                closeSent = true
                var buffer = context.channel.allocator.buffer(capacity: 2)
                buffer.writeInteger(echo)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.frame(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer))))
                    .whenComplete { _ in channel.close(promise: nil) }
                scheduleCloseTimeout(context: context)
            }
        case .fail(let code, let reason):
            node.metrics.protocolErrorCloses.increment()
            sendClose(code: code, reason: reason, context: context)
        }
    }

    /// A frame the decoder refused (too large: 1009; malformed: 1002) closes the connection
    /// with that code once the close frame is written: the decoder cannot go on after it.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? NIOWebSocketError else {
            context.fireErrorCaught(error)
            return
        }
        node.metrics.protocolErrorCloses.increment()
        closing.store(true, ordering: .relaxed)
        guard !closeSent else {
            context.close(promise: nil)
            return
        }
        closeSent = true
        inbound.sentClose()
        var data = context.channel.allocator.buffer(capacity: 2)
        switch error {
        case .invalidFrameLength: data.write(webSocketErrorCode: .messageTooLarge)
        case .fragmentedControlFrame, .multiByteControlFrameLength: data.write(webSocketErrorCode: .protocolError)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.frame(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    private func received(text buffer: ByteBuffer, context: ChannelHandlerContext) {
        if buffer.readableBytesView.elementsEqual("ping".utf8) {
            guard !closeSent else { return }
            pendingTextPong = true
            flushPongs(context: context)
        } else if let ack = Self.ack(in: buffer), recentPushes.contains(ack) {
            node.fabric.trace.record(ack, TraceStep(.acked, node: node.membership.local.nodeId, clientId: clientId))
        }
    }

    private func pong(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        pendingPong = payload
        flushPongs(context: context)
    }

    /// Writes the pending pongs if the socket takes them now; otherwise they wait for it to drain.
    private func flushPongs(context: ChannelHandlerContext) {
        guard context.channel.isWritable, !closeSent else { return }
        if let payload = pendingPong {
            pendingPong = nil
            context.write(wrapOutboundOut(.frame(WebSocketFrame(fin: true, opcode: .pong, data: payload))), promise: nil)
        }
        if pendingTextPong {
            pendingTextPong = false
            write(OutboundFrame("pong"), context: context)
        }
        context.flush()
    }

    /// The message id of an `{"ack":"<messageId>"}` frame.
    static func ack(in buffer: ByteBuffer) -> String? {
        guard buffer.readableBytes <= 1024, buffer.readableBytesView.first == UInt8(ascii: "{") else { return nil }
        let bytes = Array(buffer.readableBytesView)
        guard let members = try? JSONScanner.members(of: bytes, memberDepth: 2),
            let member = members.last(where: { $0.key == "ack" }),
            let id = JSONScanner.string(in: bytes, member.value), !id.isEmpty
        else { return nil }
        return id
    }

    private func rememberPush(_ messageId: String) {
        if recentPushes.count < Self.ackWindow {
            recentPushes.append(messageId)
        } else {
            recentPushes[recentPushesNext] = messageId
            recentPushesNext = (recentPushesNext + 1) % Self.ackWindow
        }
    }

    // MARK: Backpressure

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            backlog = 0
            backlogBytes = 0
            flushPongs(context: context)
            if readPending {
                readPending = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Reads wait while the socket is backed up: a client that does not take what it is sent
    /// gets nothing more read from it, so its pings and acks cannot pile up here.
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
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
            node.metrics.idleCloses.increment()
            ending(.idleTimeout)
            sendClose(code: .normalClosure, reason: "idle timeout", context: context)
        } else if now - lastPing >= pingInterval, context.channel.isWritable {
            lastPing = now
            let ping = WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))
            context.writeAndFlush(wrapOutboundOut(.frame(ping)), promise: nil)
        }
    }

    // MARK: Outbound (event loop)

    /// Called by the outbox on the event loop: writes one pushed frame. Answers true when the
    /// session needs a flush at the end of the outbox's pass (the first frame of the pass);
    /// adds the frame to `written` if it was written. `framed` is the whole frame (shared by the
    /// loop's sessions), `size` its text's bytes as `push` counted them.
    func writeQueued(_ framed: ByteBuffer, size: Int, messageId: String?, written: inout Int) -> Bool {
        if resuming {
            // Still counted as queued: held frames are bounded like any others.
            held.append((framed, size, messageId))
            return false
        }
        queued.subtract(1, ordering: .relaxed)
        queuedBytes.subtract(size, ordering: .relaxed)
        guard let context, !closeSent else { return false }
        // Counted by the outbox, once per pass: one shared counter bumped per frame from every
        // loop would bounce its cache line between the cores.
        context.write(wrapOutboundOut(.framed(framed)), promise: nil)
        written += 1
        if let messageId { rememberPush(messageId) }
        if context.channel.isWritable {
            backlog = 0
            backlogBytes = 0
        } else {
            backlog += 1
            backlogBytes += size
            if backlog > limit || backlogBytes > limitBytes {
                tooSlow()
                return false
            }
        }
        defer { awaitingFlush = true }
        return !awaitingFlush
    }

    /// Frames an outbox pass wrote (for every session of its loop).
    func countFrames(_ count: Int) {
        node.metrics.framesSent.increment(by: count)
    }

    /// The end of an outbox pass.
    func flushQueued() {
        awaitingFlush = false
        context?.flush()
    }

    private func write(_ frame: OutboundFrame, context: ChannelHandlerContext) {
        let framed = ServerFrameEncoder.textFrame(frame.text, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(.framed(framed)), promise: nil)
        node.metrics.framesSent.increment()
    }

    /// Writes the close frame and drops the socket if the client does not answer in time.
    private func sendClose(code: WebSocketErrorCode, reason longReason: String, context: ChannelHandlerContext) {
        closing.store(true, ordering: .relaxed)
        guard !closeSent else { return }
        closeSent = true
        inbound.sentClose()
        var reason = longReason
        while reason.utf8.count > 123 { reason.removeLast() }
        var buffer = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        buffer.write(webSocketErrorCode: code)
        buffer.writeString(reason)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.frame(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer))), promise: written)
        scheduleCloseTimeout(context: context, written: written.futureResult)
    }

    /// The client gets `closeTimeout` to answer a close once it has reached the socket; a close
    /// queued behind frames the client is slow to read (a 1013) waits for them at most
    /// `closeWriteTimeout`, so a client that never reads cannot hold the socket.
    private func scheduleCloseTimeout(context: ChannelHandlerContext, written: EventLoopFuture<Void>? = nil) {
        let channel = context.channel
        guard let written else {
            channel.eventLoop.scheduleTask(in: Self.closeTimeout) { channel.close(promise: nil) }
            return
        }
        channel.eventLoop.scheduleTask(in: Self.closeWriteTimeout) { channel.close(promise: nil) }
        written.whenComplete { _ in
            channel.eventLoop.scheduleTask(in: Self.closeTimeout) { channel.close(promise: nil) }
        }
    }

    static let closeTimeout = TimeAmount.seconds(3)
    static let closeWriteTimeout = TimeAmount.seconds(15)

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
    /// What waits for the next pass, in push order. A frame is kept once for the pushes of it
    /// that follow one another (a group send's members): each push holds its index, so a group
    /// send retains its frame once, not once per member from another thread than the one that
    /// drains (that shared reference count was the hottest line of a fan-out profile).
    private struct Pending: @unchecked Sendable {
        var sessions: [WebSocketSession] = []
        var frameOf: [Int32] = []
        var frames: [OutboundFrame] = []
        var scheduled = false
    }

    private let eventLoop: any EventLoop
    private let pending = Mutex(Pending())

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ session: WebSocketSession, _ frame: OutboundFrame) {
        let schedule = pending.withLock { pending -> Bool in
            if pending.frames.last !== frame { pending.frames.append(frame) }
            pending.sessions.append(session)
            pending.frameOf.append(Int32(pending.frames.count - 1))
            defer { pending.scheduled = true }
            return !pending.scheduled
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    private func drain() {
        let (sessions, frameOf, frames) = pending.withLock { pending in
            pending.scheduled = false
            let taken = (pending.sessions, pending.frameOf, pending.frames)
            pending.sessions = []
            pending.frameOf = []
            pending.frames = []
            return taken
        }
        // One framed buffer per frame and event loop: the members of a group send on this loop
        // share it (header included: server frames are never masked), and no other thread
        // retains it meanwhile.
        var framed: [ByteBuffer?] = Array(repeating: nil, count: frames.count)
        var toFlush: [WebSocketSession] = []
        var written = 0
        defer { if written > 0, let session = sessions.first { session.countFrames(written) } }
        for (session, index) in zip(sessions, frameOf) {
            let frame = frames[Int(index)]
            let payload: ByteBuffer
            if let shared = framed[Int(index)] {
                payload = shared
            } else {
                payload = ServerFrameEncoder.textFrame(frame.text, allocator: ByteBufferAllocator())
                framed[Int(index)] = payload
            }
            if session.writeQueued(payload, size: frame.text.utf8.count, messageId: frame.messageId, written: &written) {
                toFlush.append(session)
            }
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
