import AsyncHTTPClient
import Foundation
import Synchronization
import Testing

@testable import HeraldEtcd

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The etcd the tests talk to: env HERALD_TEST_ETCD or http://127.0.0.1:2379.
let testEndpoint: String = {
    if let value = ProcessInfo.processInfo.environment["HERALD_TEST_ETCD"], !value.isEmpty { return value }
    return "http://127.0.0.1:2379"
}()

func makeClient(requestTimeout: Duration = .seconds(2)) -> EtcdClient {
    EtcdClient(endpoints: [testEndpoint], requestTimeout: requestTimeout)
}

/// A key prefix no other test (or other user of the same etcd) touches.
func uniquePrefix(_ name: String = #function) -> String {
    let clean = name.filter { $0.isLetter || $0.isNumber }
    return "/herald-etcd-tests/\(clean)-\(UUID().uuidString)/"
}

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `operation`, failing with `TestTimeout` if it has not finished after `seconds`.
func within<T: Sendable>(
    _ seconds: Double, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TestTimeout(what: what) }
        return value
    }
}

/// Takes the first `count` events of a watch, failing after `seconds`.
func firstEvents(
    _ stream: AsyncThrowingStream<EtcdWatchEvent, any Error>, count: Int, seconds: Double = 10
) async throws -> [EtcdWatchEvent] {
    try await within(seconds, "\(count) watch events") {
        var events: [EtcdWatchEvent] = []
        for try await event in stream {
            events.append(event)
            if events.count == count { break }
        }
        return events
    }
}

/// Polls `condition` every 100 ms until it holds or `seconds` pass; answers whether it held.
func eventually(_ seconds: Double, _ condition: @Sendable () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}

/// Counts calls of a callback.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

/// A TCP listener on 127.0.0.1 that never accepts or answers: requests to it hang until their timeout.
final class SilentListener: Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw TestTimeout(what: "socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw TestTimeout(what: "bind/listen")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}
