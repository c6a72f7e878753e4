import NIOCore
import NIOHTTP1
import NIOPosix

/// One POST the publisher makes. The body is built when the request is written, from the
/// write time, so the stamp a message carries is its real send time.
struct PublishRequest: Sendable {
    var path: String
    var headers: [(String, String)] = []
    var body: @Sendable (_ sentAt: UInt64) -> String
}

struct HTTPAnswer: Sendable {
    var status: Int
    var body: String
    /// When the request was written, and when its answer was complete (monotonic ns).
    var sentAt: UInt64
    var answeredAt: UInt64
}

/// Keep-alive HTTP/1.1 connections to one endpoint, at most one request in flight on each
/// (no pipelining), opened on demand up to a maximum; requests beyond that wait in order.
/// All state lives on one event loop.
final class HTTPClientPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let endpoint: Endpoint
    private let maxConnections: Int
    private let requestTimeout: TimeAmount
    private var idle: [any Channel] = []
    private var open = 0
    private var waiting: [(PublishRequest, EventLoopPromise<HTTPAnswer>)] = []
    private var waitingHead = 0

    init(eventLoop: any EventLoop, endpoint: Endpoint, maxConnections: Int, requestTimeout: TimeAmount = .seconds(10)) {
        self.eventLoop = eventLoop
        self.endpoint = endpoint
        self.maxConnections = maxConnections
        self.requestTimeout = requestTimeout
    }

    /// No idle connection and no room for another: a new request would wait. On the event loop only.
    var allBusy: Bool { idle.isEmpty && open >= maxConnections }

    /// Callable from any thread.
    func send(_ request: PublishRequest) -> EventLoopFuture<HTTPAnswer> {
        let promise = eventLoop.makePromise(of: HTTPAnswer.self)
        if eventLoop.inEventLoop {
            enqueue(request, promise)
        } else {
            eventLoop.execute { self.enqueue(request, promise) }
        }
        return promise.futureResult
    }

    func send(_ request: PublishRequest) async throws -> HTTPAnswer {
        try await send(request).get()
    }

    private func enqueue(_ request: PublishRequest, _ promise: EventLoopPromise<HTTPAnswer>) {
        waiting.append((request, promise))
        dispatch()
    }

    private func dispatch() {
        while waitingHead < waiting.count, let channel = idle.popLast() {
            let (request, promise) = waiting[waitingHead]
            waitingHead += 1
            write(request, promise, on: channel)
        }
        if waitingHead > 1024, waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        if waitingHead < waiting.count, open < maxConnections {
            open += 1
            connect()
        }
    }

    private func connect() {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPAnswerHandler(pool: self))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.idle.append(channel)
                    self.dispatch()
                case .failure(let error):
                    self.open -= 1
                    // Fail one waiting request so a dead endpoint cannot stall the queue forever.
                    if self.waitingHead < self.waiting.count {
                        let (_, promise) = self.waiting[self.waitingHead]
                        self.waitingHead += 1
                        promise.fail(error)
                    }
                    self.dispatch()
                }
            }
    }

    private func write(_ request: PublishRequest, _ promise: EventLoopPromise<HTTPAnswer>, on channel: any Channel) {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: HTTPAnswerHandler.self) else {
            promise.fail(HarnessError("HTTP connection without its handler"))
            return
        }
        let sentAt = MonotonicClock.nanos()
        var body = channel.allocator.buffer(string: request.body(sentAt))
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: endpoint.description)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: request.path, headers: headers)
        let timeout = eventLoop.scheduleTask(in: requestTimeout) {
            channel.close(promise: nil)
        }
        handler.expect(promise: promise, sentAt: sentAt, timeout: timeout)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        body.clear()
    }

    /// An answer is complete: the connection takes the next request, or goes if the server closes it.
    fileprivate func finished(_ channel: any Channel, keepAlive: Bool) {
        if keepAlive, channel.isActive {
            idle.append(channel)
        } else {
            channel.close(promise: nil)
        }
        dispatch()
    }

    fileprivate func closed(_ channel: any Channel) {
        idle.removeAll { $0 === channel }
        open -= 1
        dispatch()
    }

    /// Closes every idle connection (busy ones close when their answers are in).
    func shutdown() -> EventLoopFuture<Void> {
        eventLoop.submit {
            for channel in self.idle { channel.close(promise: nil) }
            self.idle.removeAll()
        }
    }
}

/// Collects one answer at a time for its pool.
private final class HTTPAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private unowned let pool: HTTPClientPool
    private var promise: EventLoopPromise<HTTPAnswer>?
    private var timeout: Scheduled<Void>?
    private var sentAt: UInt64 = 0
    private var status = 0
    private var keepAlive = true
    private var body = ByteBuffer()

    init(pool: HTTPClientPool) {
        self.pool = pool
    }

    func expect(promise: EventLoopPromise<HTTPAnswer>, sentAt: UInt64, timeout: Scheduled<Void>) {
        self.promise = promise
        self.sentAt = sentAt
        self.timeout = timeout
        body.clear()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            keepAlive = head.isKeepAlive
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            timeout?.cancel()
            let answer = HTTPAnswer(
                status: status, body: String(buffer: body), sentAt: sentAt, answeredAt: MonotonicClock.nanos())
            let promise = self.promise
            self.promise = nil
            pool.finished(context.channel, keepAlive: keepAlive)
            promise?.succeed(answer)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if let promise {
            self.promise = nil
            promise.fail(HarnessError("connection closed before the answer (timeout or server close)"))
        }
        pool.closed(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
