import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

public struct HeraldLaunchError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}

/// Locates the `herald` executable built next to the test bundle.
public enum HeraldBinary {
    public static let path: String = {
        if let env = ProcessInfo.processInfo.environment["HERALD_BIN"], !env.isEmpty {
            return env
        }
        let fm = FileManager.default
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("herald").path
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue,
                fm.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        // <package root>/Tests/HeraldServerTests/HeraldProcess.swift -> <package root>
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/herald").path
    }()
}

/// Finds a free loopback TCP port below the kernel's ephemeral range (32768-60999 on Linux).
/// A port from bind(0) lies inside that range, where every outgoing test connection also takes
/// its local port: between our close and herald's bind, a client could take it (CI saw a suite's
/// server fail to start that way). Below the range only servers bind, so a free port stays free.
public func freePort() async throws -> Int {
    for _ in 0..<64 {
        let candidate = Int.random(in: 20_000..<32_000)
        if let port = try? await bindAndRelease(port: candidate) { return port }
    }
    return try await bindAndRelease(port: 0)
}

private func bindAndRelease(port: Int) async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: port).get()
    let bound = channel.localAddress?.port ?? 0
    try await channel.close().get()
    guard bound > 0 else { throw HeraldLaunchError(description: "could not find a free port") }
    return bound
}

public func tailOfFile(_ url: URL, lines: Int = 30) -> String {
    guard let data = try? Data(contentsOf: url) else { return "" }
    let text = String(decoding: data, as: UTF8.self)
    return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
}

/// A running `herald serve` process.
public final class HeraldInstance: HeraldEndpoint, @unchecked Sendable {
    public let process: Process
    public let port: Int
    public let args: [String]
    public let stderrURL: URL
    public let stdoutURL: URL
    public let adminToken: String?
    private let stopped = Mutex(false)

    public var host: String { "127.0.0.1" }

    private init(process: Process, port: Int, args: [String], stderrURL: URL, stdoutURL: URL, adminToken: String?) {
        self.process = process
        self.port = port
        self.args = args
        self.stderrURL = stderrURL
        self.stdoutURL = stdoutURL
        self.adminToken = adminToken
    }

    /// Starts `herald serve [--dev] --host 127.0.0.1 --port P <extra>` and waits until /healthz answers 200.
    /// With `waitForReady`, waits for /readyz rather than /healthz (cluster nodes).
    /// `environment` is added to the test's own environment, from which HERALD_* variables are removed.
    public static func start(
        dev: Bool = true, extraArgs: [String] = [], waitForReady: Bool = false, environment: [String: String] = [:],
        port fixedPort: Int? = nil
    ) async throws -> HeraldInstance {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let port: Int
            if let fixedPort { port = fixedPort } else { port = try await freePort() }
            var args = ["serve"]
            if dev { args.append("--dev") }
            args += ["--host", "127.0.0.1"]
            // With a fixed port the caller sets it (by option, environment or config file).
            if fixedPort == nil { args += ["--port", String(port)] }
            args += extraArgs
            var adminToken: String?
            if let i = extraArgs.firstIndex(of: "--admin-token"), i + 1 < extraArgs.count {
                adminToken = extraArgs[i + 1]
            }
            let (process, errURL, outURL) = try heraldProcess(args, name: "herald-\(port)", environment: environment)
            do {
                try process.run()
            } catch {
                throw HeraldLaunchError(description: "cannot launch \(HeraldBinary.path): \(error)")
            }
            let instance = HeraldInstance(
                process: process, port: port, args: args, stderrURL: errURL, stdoutURL: outURL,
                adminToken: adminToken)
            do {
                try await instance.waitUntilHealthy(timeout: .seconds(30), path: waitForReady ? "/readyz" : "/healthz")
                return instance
            } catch {
                lastError = error
                _ = await instance.stop()
                print("herald failed to start (\(args.joined(separator: " "))): \(error)\n--- stderr tail ---\n\(tailOfFile(errURL))\n---")
                // Retry only when the port was taken meanwhile (Serve's message: "port P on H is in use").
                if fixedPort != nil || !tailOfFile(errURL).contains("is in use") { break }
            }
        }
        throw lastError ?? HeraldLaunchError(description: "herald did not start")
    }

    private func waitUntilHealthy(timeout: Duration, path: String) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                throw HeraldLaunchError(
                    description: "herald exited with status \(process.terminationStatus) before becoming healthy")
            }
            if let r = try? await api.get(path, timeout: .seconds(1)), r.status == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HeraldLaunchError(description: "herald did not answer GET \(path) with 200 within \(timeout)")
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; then SIGKILL. Returns the exit status, or nil when killed.
    @discardableResult
    public func stop(grace: Duration = .seconds(5)) async -> (status: Int32, reason: Process.TerminationReason, elapsed: Duration)? {
        let already = stopped.withLock { s -> Bool in
            let was = s
            s = true
            return was
        }
        let start = ContinuousClock.now
        if !already, process.isRunning {
            kill(process.processIdentifier, SIGTERM)
        }
        let exited = await waitForExit(timeout: grace)
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            _ = await waitForExit(timeout: .seconds(5))
            return nil
        }
        return (process.terminationStatus, process.terminationReason, ContinuousClock.now - start)
    }

    public func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    public var stderrTail: String { tailOfFile(stderrURL) }

    /// Removes the captured output files (after a clean run).
    public func removeLogs() {
        try? FileManager.default.removeItem(at: stderrURL)
        try? FileManager.default.removeItem(at: stdoutURL)
    }
}

/// Runs `body` with a fresh server and always stops the server afterwards.
public func withHerald<T: Sendable>(
    dev: Bool = true, args: [String] = [], _ body: (HeraldInstance) async throws -> T
) async throws -> T {
    let server = try await HeraldInstance.start(dev: dev, extraArgs: args)
    do {
        let result = try await body(server)
        await server.stop()
        server.removeLogs()
        return result
    } catch {
        print("test failed with \(error); herald stderr tail:\n\(server.stderrTail)")
        await server.stop()
        throw error
    }
}

/// Runs the herald binary to completion (e.g. `keygen`) with a timeout.
public func runHerald(_ args: [String], timeout: Duration = .seconds(15), environment: [String: String] = [:]) async throws -> (
    status: Int32, stdout: String, stderr: String, timedOut: Bool
) {
    let (process, errURL, outURL) = try heraldProcess(args, name: "herald-run", environment: environment)
    try process.run()
    let deadline = ContinuousClock.now + timeout
    var timedOut = false
    while process.isRunning {
        if ContinuousClock.now >= deadline {
            timedOut = true
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            break
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    let out = String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self)
    let err = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
    try? FileManager.default.removeItem(at: outURL)
    try? FileManager.default.removeItem(at: errURL)
    return (process.terminationStatus, out, err, timedOut)
}

/// The server shared by all tests of a suite (set by the `.herald(...)` suite trait).
public enum SharedHerald {
    @TaskLocal public static var current: HeraldInstance?

    public static func get() throws -> HeraldInstance {
        guard let s = current else {
            throw HeraldLaunchError(description: "no shared herald server: apply .herald(...) to the suite")
        }
        return s
    }
}

/// Suite trait: launches one herald for the whole suite and stops it afterwards.
public struct HeraldServerTrait: SuiteTrait, TestScoping {
    public let dev: Bool
    public let args: [String]

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let server = try await HeraldInstance.start(dev: dev, extraArgs: args)
        do {
            try await SharedHerald.$current.withValue(server) {
                try await function()
            }
        } catch {
            print("herald stderr tail:\n\(server.stderrTail)")
            await server.stop()
            throw error
        }
        await server.stop()
        server.removeLogs()
    }
}

extension Trait where Self == HeraldServerTrait {
    /// Launch one `herald serve` for this suite: `--dev` unless `dev` is false, plus `args`.
    public static func herald(dev: Bool = true, _ args: [String] = []) -> Self {
        HeraldServerTrait(dev: dev, args: args)
    }
}

/// A `herald` process, not yet started, with stdout and stderr going to fresh temp files.
/// It inherits the test's environment without HERALD_* variables (which `herald serve` reads), plus `environment`.
func heraldProcess(_ args: [String], name: String, environment: [String: String] = [:]) throws -> (Process, stderr: URL, stdout: URL) {
    let tmp = FileManager.default.temporaryDirectory
    let tag = UUID().uuidString.prefix(8)
    let errURL = tmp.appendingPathComponent("\(name)-\(tag).stderr")
    let outURL = tmp.appendingPathComponent("\(name)-\(tag).stdout")
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: HeraldBinary.path)
    process.arguments = args
    process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("HERALD_") }
        .merging(environment) { $1 }
    process.standardError = try FileHandle(forWritingTo: errURL)
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardInput = FileHandle.nullDevice
    return (process, errURL, outURL)
}
