import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// JSON lines over file descriptors: a thread blocks in read(2) so no task ever does.
enum LineIO {
    /// The lines read from `fd` until end of file.
    static func lines(from fd: Int32) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        let thread = Thread {
            var pending = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { break }
                var start = 0
                for i in 0..<n where chunk[i] == UInt8(ascii: "\n") {
                    pending.append(contentsOf: chunk[start..<i])
                    continuation.yield(String(decoding: pending, as: UTF8.self))
                    pending.removeAll(keepingCapacity: true)
                    start = i + 1
                }
                pending.append(contentsOf: chunk[start..<n])
            }
            if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
            continuation.finish()
        }
        thread.start()
        return stream
    }

    /// The lines read from `fd`, for a reader that asks for one at a time.
    static func queue(from fd: Int32) -> LineQueue {
        let queue = LineQueue()
        let lines = lines(from: fd)
        Task {
            for await line in lines { queue.push(line) }
            queue.finish()
        }
        return queue
    }

    /// Writes `text` and a newline to `fd` in full.
    static func write(_ text: String, to fd: Int32) throws {
        var bytes = Array(text.utf8)
        bytes.append(UInt8(ascii: "\n"))
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LineIOError(description: "write failed: errno \(errno)")
            }
            offset += n
        }
    }

    static func encode(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, from line: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(line.utf8))
    }
}

struct LineIOError: Error, CustomStringConvertible {
    let description: String
}

/// Lines waiting for one reader at a time; nil once the source has ended.
final class LineQueue: Sendable {
    private struct State {
        var lines: [String] = []
        var head = 0
        var waiter: CheckedContinuation<String?, Never>?
        var finished = false
    }
    private let state = Mutex(State())

    func push(_ line: String) {
        let waiter: CheckedContinuation<String?, Never>? = state.withLock { s in
            if let waiter = s.waiter {
                s.waiter = nil
                return waiter
            }
            s.lines.append(line)
            return nil
        }
        waiter?.resume(returning: line)
    }

    func finish() {
        let waiter = state.withLock { s in
            s.finished = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }

    func next() async -> String? {
        await withCheckedContinuation { continuation in
            let ready: String?? = state.withLock { s in
                if s.head < s.lines.count {
                    let line = s.lines[s.head]
                    s.head += 1
                    if s.head == s.lines.count {
                        s.lines.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    return .some(line)
                }
                if s.finished { return .some(nil) }
                s.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
