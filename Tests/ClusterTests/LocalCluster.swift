import Foundation
import HeraldTestSupport
import Testing

/// The cluster `scripts/cluster up` started before the tests: three nodes on 7801-7803,
/// nginx on 7800, Tansu behind its adapter, etcd. Tests drive faults through the same script.
enum LocalCluster {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent()
        .deletingLastPathComponent()

    static let adminToken: String = {
        if let token = ProcessInfo.processInfo.environment["HERALD_ADMIN_TOKEN"], !token.isEmpty {
            return token
        }
        let file = root.appendingPathComponent(".cluster/admin-token")
        return (try? String(contentsOf: file, encoding: .utf8))?.trimmingCharacters(
            in: .whitespacesAndNewlines) ?? ""
    }()

    static let balancer = RemoteHerald(port: 7800, adminToken: adminToken)
    static let nodes = [1, 2, 3].map { node($0) }

    static func node(_ number: Int) -> RemoteHerald {
        RemoteHerald(port: 7800 + number, adminToken: adminToken)
    }

    /// Runs `scripts/cluster VERB PART` and waits for it (starting a node waits for /readyz).
    static func control(_ verb: String, _ part: String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [root.appendingPathComponent("scripts/cluster").path, verb, part]
        process.currentDirectoryURL = root
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "cluster-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = ContinuousClock.now + .seconds(120)
        while process.isRunning, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        // Poll rather than waitUntilExit, which spins a run loop on this thread on Linux.
        if process.isRunning {
            process.terminate()
            while process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        }
        try? handle.close()
        guard process.terminationStatus == 0 else {
            throw HeraldLaunchError(
                description: "scripts/cluster \(verb) \(part) failed: \(tailOfFile(log))")
        }
    }

    /// Registers a fresh system once, for the whole cluster.
    static func registerSystem() async throws -> TestSystem {
        try await balancer.api.registerSystem()
    }

    /// Waits until `condition` holds, polling; fails the test with `what` after `timeout`.
    static func eventually(
        _ what: String, timeout: Duration, every interval: Duration = .milliseconds(200),
        _ condition: @Sendable () async throws -> Bool
    ) async throws -> Duration {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            if (try? await condition()) == true { return ContinuousClock.now - start }
            try await Task.sleep(for: interval)
        }
        throw HeraldLaunchError(description: "timed out after \(timeout) waiting for \(what)")
    }
}
