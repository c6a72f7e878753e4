import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization

/// `POST /api/send_to_client` without an `Idempotency-Key`: the hottest route, answered in the
/// pipeline instead of through Hummingbird's per-request machinery (its async request stream,
/// router, middlewares and response writer were a quarter of a unicast send's CPU; see
/// docs/benchmarks.md). Only requests whose answer can differ in nothing are taken: a known
/// length within the body limit, no Origin (CORS), no Idempotency-Key, no Expect, no Upgrade.
/// Everything else goes on to Hummingbird unchanged.
///
/// Answers stay in request order on a kept-alive connection: while one request is being
/// answered (here or by Hummingbird) the parts of the next are held, and reads stop.
struct SendFastPathMachine {
    /// A request this path answers: the headers the send needs and the body's length.
    struct FastRequest: Equatable {
        var systemId: String?
        var authorization: String?
        var length: Int
        /// `Connection: close`: the connection ends after the answer (as Hummingbird does).
        var closeAfter: Bool
    }

    enum State: Equatable {
        case idle
        /// A request went on to Hummingbird; the next one waits for both its ends.
        case forwarding(requestEnded: Bool, responseEnded: Bool)
        case collecting(FastRequest, received: [UInt8])
        /// The send runs; its answer is not written yet.
        case answering
    }

    enum InboundAction: Equatable {
        /// Pass the part on to Hummingbird.
        case forward
        /// Keep the part until the answer in progress is written (the state did not change).
        case hold
        /// Taken into the body being collected.
        case consumed
        /// The request is complete: send and answer.
        case answer(FastRequest, body: [UInt8])
    }

    static let path = "/api/send_to_client"
    let bodyLimit: Int
    private(set) var state = State.idle

    init(bodyLimit: Int) {
        self.bodyLimit = bodyLimit
    }

    /// Whether parts may flow (nothing is being answered and nothing waits).
    var isIdle: Bool { state == .idle }

    /// A complete request waits for its answer: the next request's parts must wait too.
    var awaitsAnswer: Bool {
        switch state {
        case .answering, .forwarding(requestEnded: true, _): true
        case .idle, .collecting, .forwarding(requestEnded: false, _): false
        }
    }

    mutating func inbound(_ part: HTTPRequestPart) -> InboundAction {
        switch (state, part) {
        case (.idle, .head(let head)):
            if let fast = Self.fastRequest(head, bodyLimit: bodyLimit) {
                state = .collecting(fast, received: [])
                return .consumed
            }
            state = .forwarding(requestEnded: false, responseEnded: false)
            return .forward
        case (.idle, _):
            return .forward
        case (.forwarding(false, let responseEnded), .body):
            _ = responseEnded
            return .forward
        case (.forwarding(false, let responseEnded), .end):
            state = responseEnded ? .idle : .forwarding(requestEnded: true, responseEnded: false)
            return .forward
        case (.forwarding(false, _), .head):
            // A new head before the last request ended cannot come from NIO's decoder.
            return .hold
        case (.forwarding(true, _), _), (.answering, _):
            return .hold
        case (.collecting(let fast, var received), .body(let buffer)):
            received += buffer.readableBytesView
            state = .collecting(fast, received: received)
            return .consumed
        case (.collecting(let fast, let received), .end):
            state = .answering
            return .answer(fast, body: received)
        case (.collecting, .head):
            return .hold
        }
    }

    /// Hummingbird wrote the end of an answer. Returns whether parts may flow again.
    mutating func responseEnded() -> Bool {
        if case .forwarding(let requestEnded, _) = state {
            state = requestEnded ? .idle : .forwarding(requestEnded: false, responseEnded: true)
        }
        return isIdle
    }

    /// This path's answer is written.
    mutating func answered() {
        if state == .answering { state = .idle }
    }

    static func fastRequest(_ head: HTTPRequest, bodyLimit: Int) -> FastRequest? {
        guard head.method == .post, let path = head.path,
            path == Self.path || path.hasPrefix(Self.path + "?")
        else { return nil }
        let fields = head.headerFields
        guard fields[.origin] == nil, fields[.upgrade] == nil, fields[.expect] == nil, fields[.transferEncoding] == nil,
            fields[Self.idempotencyKey] == nil,
            let length = fields[.contentLength].flatMap({ Int($0) }), length >= 0, length <= bodyLimit
        else { return nil }
        return FastRequest(
            systemId: fields[Self.systemId], authorization: fields[.authorization], length: length,
            closeAfter: fields[.connection] == "close")
    }

    private static let systemId = HTTPField.Name("SystemId")!
    private static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
}

/// The handler around `SendFastPathMachine`, between HTTP/1's codec and Hummingbird's channel.
final class SendFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Sends and answers one fast request (`APIController.fastSendToClient`).
    typealias Route = @Sendable (SendFastPathMachine.FastRequest, [UInt8]) async -> APIAnswer

    private var machine: SendFastPathMachine
    private let route: Route
    /// Parts that arrived while an answer was in progress, in order.
    private var held = CircularBuffer<HTTPRequestPart>()
    private var heldBytes = 0
    private var readPending = false

    init(bodyLimit: Int, route: @escaping Route) {
        machine = SendFastPathMachine(bodyLimit: bodyLimit)
        self.route = route
    }

    /// What one socket read can hold past a body: parts beyond it close the connection.
    private var heldLimit: Int { machine.bodyLimit + 64 * 1024 }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if held.isEmpty {
            handle(part, context: context)
        } else {
            hold(part, context: context)
        }
    }

    /// Reads stop only while an answer is awaited (ours, or Hummingbird's to a complete request):
    /// a body being collected, here or by Hummingbird, needs them.
    func read(context: ChannelHandlerContext) {
        if machine.awaitsAnswer || !held.isEmpty {
            readPending = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isEnd: Bool
        if case .end = unwrapOutboundIn(data) { isEnd = true } else { isEnd = false }
        context.write(data, promise: promise)
        if isEnd, machine.responseEnded() { resume(context: context) }
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        perform(machine.inbound(part), on: part, context: context)
    }

    private func perform(_ action: SendFastPathMachine.InboundAction, on part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch action {
        case .forward: context.fireChannelRead(wrapInboundOut(part))
        case .hold: hold(part, context: context)
        case .consumed: break
        case .answer(let request, let body): answer(request, body: body, context: context)
        }
    }

    private func hold(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        if case .body(let buffer) = part { heldBytes += buffer.readableBytes }
        held.append(part)
        if heldBytes > heldLimit { context.close(promise: nil) }
    }

    /// Hands on what was held, until an answer is in progress again; then reads again.
    private func resume(context: ChannelHandlerContext) {
        var forwarded = false
        // Hummingbird's channel takes what was read at the read's completion: end each batch with one.
        defer { if forwarded { context.fireChannelReadComplete() } }
        while let part = held.first {
            let action = machine.inbound(part)
            if case .hold = action { return }
            _ = held.removeFirst()
            if case .body(let buffer) = part { heldBytes -= buffer.readableBytes }
            if case .forward = action { forwarded = true }
            perform(action, on: part, context: context)
        }
        if !machine.awaitsAnswer, readPending {
            readPending = false
            context.read()
        }
    }

    private func answer(_ request: SendFastPathMachine.FastRequest, body: [UInt8], context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let route = self.route
        // On the channel's own loop: no hop to the cooperative pool and back per request.
        Task(executorPreference: EventLoopTaskExecutor(loop)) {
            let answer = await route(request, body)
            loop.execute {
                let (handler, context) = bound.value
                handler.write(answer, closing: request.closeAfter, context: context)
            }
        }
    }

    /// The answer as Hummingbird writes it: the same headers, in the same order.
    private func write(_ answer: APIAnswer, closing: Bool, context: ChannelHandlerContext) {
        var head = HTTPResponse(status: .init(code: answer.status))
        head.headerFields[.contentType] = "application/json; charset=utf-8"
        head.headerFields[.contentLength] = String(answer.body.count)
        head.headerFields[.date] = HTTPDate.now
        head.headerFields[.server] = "Herald"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: answer.body))), promise: nil)
        if closing {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        machine.answered()
        resume(context: context)
    }
}

/// The `Date` header's value (RFC 9110 IMF-fixdate), formatted once a second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static var now: String {
        var seconds = time(nil)
        return cache.withLock { cache in
            if cache.second == seconds { return cache.text }
            var parts = tm()
            gmtime_r(&seconds, &parts)
            func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
            let text =
                "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
                + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
            cache = (seconds, text)
            return text
        }
    }
}
