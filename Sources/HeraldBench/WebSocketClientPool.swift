import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What a worker's clients report, shared by all of them.
final class ClientEvents: Sendable {
    let recorder = LatencyRecorder()
    private struct Counters {
        var otherFrames: UInt64 = 0
        var pongs: UInt64 = 0
        var serverCloses: [String: Int] = [:]
        var closedIndices: Set<Int> = []
    }
    private let counters = Mutex(Counters())

    func otherFrame() {
        counters.withLock { $0.otherFrames += 1 }
    }

    func pong() {
        counters.withLock { $0.pongs += 1 }
    }

    func closed(index: Int, code: Int?) {
        counters.withLock {
            $0.serverCloses[code.map(String.init) ?? "none", default: 0] += 1
            $0.closedIndices.insert(index)
        }
    }

    /// Text frames that were neither bench messages nor pongs (Herald: presence).
    var otherFrames: UInt64 { counters.withLock { $0.otherFrames } }
    var serverCloses: [String: Int] { counters.withLock { $0.serverCloses } }

    /// Forgets closes seen so far (closes the bench asked for are not the server's doing).
    func resetCloses() {
        counters.withLock {
            $0.serverCloses = [:]
            $0.closedIndices = []
        }
    }
}

/// A worker's WebSocket clients on one event loop: opens them at a bounded concurrency from
/// a chosen source address, keeps them alive, reports what they saw, closes them.
final class WebSocketClientPool: Sendable {
    private let group: MultiThreadedEventLoopGroup
    let events = ClientEvents()
    private let channels = Mutex<[Int: any Channel]>([:])
    private let keepalive = Mutex<RepeatedTask?>(nil)

    init(group: MultiThreadedEventLoopGroup) {
        self.group = group
    }

    func connect(_ spec: ConnectSpec) async -> ConnectReport {
        let start = MonotonicClock.nanos()
        let next = Shared(0)
        let results = Shared(
            (
                ids: [String](repeating: "", count: spec.expectWelcome ? spec.count : 0), connected: 0, failed: 0,
                last: UInt64(0), errors: [String](), latency: LatencyHistogram()
            ))
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<max(1, min(spec.concurrency, spec.count)) {
                tasks.addTask {
                    while true {
                        let k = next.withLock { n in
                            defer { n += 1 }
                            return n
                        }
                        guard k < spec.count else { return }
                        let began = MonotonicClock.nanos()
                        let outcome = await self.open(index: spec.firstIndex + k, spec: spec)
                        let now = MonotonicClock.nanos()
                        results.withLock { r in
                            switch outcome {
                            case .success(let clientId):
                                r.connected += 1
                                r.last = max(r.last, now)
                                r.latency.record(nanos: now - began)
                                if spec.expectWelcome { r.ids[k] = clientId ?? "" }
                            case .failure(let error):
                                r.failed += 1
                                if r.errors.count < 5 { r.errors.append("client \(spec.firstIndex + k): \(error)") }
                            }
                        }
                    }
                }
            }
        }
        if spec.keepaliveSeconds > 0 { startKeepalive(every: spec.keepaliveSeconds) }
        return results.withLock { r in
            ConnectReport(
                connected: r.connected, failed: r.failed, startNanos: start, lastEstablishedNanos: r.last,
                clientIds: r.ids,
                errors: r.errors, latencyMicros: r.latency.sparse)
        }
    }

    private func open(index: Int, spec: ConnectSpec) async -> Result<String?, any Error> {
        let endpoint = spec.endpoints[index % spec.endpoints.count]
        let path = spec.pathTemplate.replacingOccurrences(of: "{i}", with: String(index))
        let loop = group.next()
        let established = loop.makePromise(of: String?.self)
        let request = WebSocketClientHandler.upgradeRequest(host: endpoint.host, port: endpoint.port, path: path)
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(spec.timeoutSeconds * 1000)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        WebSocketClientHandler(
                            request: request, index: index, expectWelcome: spec.expectWelcome, events: self.events,
                            established: established))
                }
            }
        if let source = spec.sourceAddress {
            do {
                // Let connect() pick the port for the whole 4-tuple, not bind() for the address alone.
                bootstrap = bootstrap.channelOption(.ipOption(.init(rawValue: Self.bindAddressNoPort)), value: 1)
                    .bind(to: try SocketAddress(ipAddress: source, port: 0))
            } catch {
                established.fail(error)
                return .failure(error)
            }
        }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            established.fail(error)
            return .failure(error)
        }
        let timeout = loop.scheduleTask(in: .milliseconds(Int64(spec.timeoutSeconds * 1000))) {
            channel.close(promise: nil)
        }
        do {
            let clientId = try await established.futureResult.get()
            timeout.cancel()
            channels.withLock { $0[index] = channel }
            return .success(clientId)
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            return .failure(error)
        }
    }

    /// IP_BIND_ADDRESS_NO_PORT (Linux 4.2+).
    private static let bindAddressNoPort = Int32(24)

    /// Every client sends a `ping` text frame once per period, spread evenly over it.
    private func startKeepalive(every seconds: Double) {
        let slices = max(1, Int(seconds))
        let tick = Shared(0)
        let task = group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            let slice =
                tick.withLock { t in
                    defer { t += 1 }
                    return t
                } % slices
            let due = self.channels.withLock { $0.filter { $0.key % slices == slice }.map(\.value) }
            for channel in due where channel.isActive {
                channel.writeAndFlush(
                    WebSocketClientHandler.textFrame("ping", allocator: channel.allocator), promise: nil)
            }
        }
        keepalive.withLock {
            $0?.cancel()
            $0 = task
        }
    }

    func stats() -> PoolStats {
        let open = channels.withLock { $0.values.filter(\.isActive).count }
        return PoolStats(
            open: open, serverCloses: events.serverCloses,
            stampedFrames: events.recorder.receivedCounts().values.reduce(0, +),
            otherFrames: events.otherFrames)
    }

    /// Sends every client a close frame (1000), waits up to 5 s for the handshakes, then drops the rest.
    func closeAll() async {
        keepalive.withLock {
            $0?.cancel()
            $0 = nil
        }
        let all = channels.withLock { channels in
            defer { channels = [:] }
            return Array(channels.values)
        }
        var code = ByteBuffer()
        code.writeInteger(UInt16(1000))
        for channel in all where channel.isActive {
            channel.writeAndFlush(
                WebSocketClientHandler.frame(opcode: 0x8, payload: code, allocator: channel.allocator), promise: nil)
        }
        let deadline = ContinuousClock.now + .seconds(5)
        for channel in all {
            while channel.isActive, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        for channel in all where channel.isActive {
            channel.close(promise: nil)
        }
        events.resetCloses()
    }
}
