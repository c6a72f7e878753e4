import Foundation

/// The coordinator's handle on one worker process: `herald-bench worker`, driven with one
/// JSON request line at a time on its stdin, answered on its stdout.
actor WorkerProcess {
    let index: Int
    private let process: Process
    private let input: FileHandle
    private let replies: LineQueue
    private(set) var lastCPUNanos: UInt64 = 0
    private(set) var lastRSSBytes: UInt64 = 0

    init(index: Int) throws {
        self.index = index
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.ownExecutable())
        process.arguments = ["worker"]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.standardError
        try process.run()
        self.process = process
        self.input = stdin.fileHandleForWriting
        self.replies = LineIO.queue(from: stdout.fileHandleForReading.fileDescriptor)
    }

    static func ownExecutable() throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    func request(_ request: WorkerRequest) async throws -> WorkerReply {
        try LineIO.write(try LineIO.encode(request), to: input.fileDescriptor)
        guard let line = await replies.next() else {
            throw HarnessError("worker \(index) exited (status \(process.isRunning ? -1 : process.terminationStatus))")
        }
        let reply = try LineIO.decode(WorkerReply.self, from: line)
        lastCPUNanos = reply.cpuNanos
        lastRSSBytes = reply.rssBytes
        if let error = reply.error { throw HarnessError("worker \(index): \(error)") }
        return reply
    }

    func stop() async {
        _ = try? await request(.exit)
        for _ in 0..<50 where process.isRunning {
            try? await Task.sleep(for: .milliseconds(100))
        }
        if process.isRunning { process.terminate() }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
