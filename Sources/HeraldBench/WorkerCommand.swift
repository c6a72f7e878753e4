import ArgumentParser
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// `herald-bench worker`: one load-generator process holding WebSocket clients on a single
/// event loop. The coordinator starts it and drives it with JSON lines on stdin; replies go
/// to stdout, diagnostics to stderr.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "A load-generator process (started by `herald-bench run`).",
        shouldDisplay: false)

    func run() async throws {
        FileLimit.raiseToHard()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = WebSocketClientPool(group: group)
        for await line in LineIO.lines(from: STDIN_FILENO) {
            var reply = WorkerReply(cpuNanos: 0, rssBytes: 0)
            var exit = false
            do {
                switch try LineIO.decode(WorkerRequest.self, from: line) {
                case .connect(let spec): reply.connect = await pool.connect(spec)
                case .stats: reply.stats = pool.stats()
                case .counts:
                    reply.counts = Dictionary(
                        uniqueKeysWithValues: pool.events.recorder.receivedCounts().map { (String($0.key), $0.value) })
                case .phase(let id): reply.phase = pool.events.recorder.report(phase: id)
                case .closeAll: await pool.closeAll()
                case .exit: exit = true
                }
            } catch {
                reply.error = "\(error)"
            }
            reply.cpuNanos = OwnCPU.nanos()
            reply.rssBytes = OwnCPU.rssBytes()
            try LineIO.write(try LineIO.encode(reply), to: STDOUT_FILENO)
            if exit { break }
        }
        await pool.closeAll()
        try await group.shutdownGracefully()
    }
}

enum FileLimit {
    /// Raises the soft open-files limit to the hard one (20,000 on the bench machine).
    static func raiseToHard() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    static var current: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(limit.rlim_cur)
    }
}
