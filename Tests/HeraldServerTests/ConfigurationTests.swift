import Foundation
import HeraldTestSupport
import Testing

/// `herald serve` settings from the command line, HERALD_* variables and a JSON config file, and
/// docs/configuration.md agreeing with `herald serve --help`.
@Suite("Configuration: environment, config file, precedence, errors, documentation")
struct ConfigurationTests {
    @Test("every setting from HERALD_* variables: port, admin token, client-ID key, body limit")
    func fromEnvironment() async throws {
        let port = try await freePort()
        let admin = unique("env-admin")
        let server = try await HeraldInstance.start(
            dev: false,
            environment: [
                "HERALD_PORT": String(port), "HERALD_ADMIN_TOKEN": admin, "HERALD_CLIENT_ID_KEY": randomKey(),
                "HERALD_MAX_BODY_BYTES": "2000",
            ], port: port)
        defer { Task { await server.stop() } }
        let id = newSystemId()
        expectFailure(
            try await server.api.post("/api/register", systemId: nil, json: .object(["systemId": .string(id)])),
            status: 401, code: 4010)
        let sys = try await server.api.registerSystem(id: id, adminAuth: admin)
        try await expectBodyLimit(2000, sys)
    }

    @Test("a JSON config file: port, dev mode and body limit, with numbers and booleans as JSON values")
    func fromConfigFile() async throws {
        let port = try await freePort()
        let file = try writeConfig(["port": .number(Double(port)), "dev": .bool(true), "max-body-bytes": .number(2000)])
        defer { try? FileManager.default.removeItem(at: file) }
        let server = try await HeraldInstance.start(dev: false, extraArgs: ["--config", file.path], port: port)
        defer { Task { await server.stop() } }
        // Dev mode from the file: registering needs no admin token.
        let sys = try await server.api.registerSystem()
        try await expectBodyLimit(2000, sys)
    }

    @Test("the command line wins over the environment, which wins over the config file")
    func precedence() async throws {
        let filePort = try await freePort()
        let envPort = try await freePort()
        let cliPort = try await freePort()
        let file = try writeConfig([
            "port": .number(Double(filePort)), "max-body-bytes": .number(100_000), "rate-limit": .number(1),
        ])
        defer { try? FileManager.default.removeItem(at: file) }
        let server = try await HeraldInstance.start(
            extraArgs: ["--config", file.path, "--port", String(cliPort), "--rate-limit", "0"],
            environment: ["HERALD_PORT": String(envPort), "HERALD_MAX_BODY_BYTES": "2000", "HERALD_RATE_LIMIT": "1"],
            port: cliPort)
        defer { Task { await server.stop() } }
        // The port came from the command line (the instance is healthy on cliPort).
        #expect(server.port == cliPort)
        let sys = try await server.api.registerSystem()
        // The body limit came from the environment, not the file.
        try await expectBodyLimit(2000, sys)
        // The rate limit came from the command line (0, off), not the environment or the file (1 a second).
        for _ in 0..<5 { expectSuccess(try await sys.call("get_online_list", ["groupName": "g"])) }
    }

    @Test(
        "an invalid setting stops the node at start with status 2 and a message naming it",
        arguments: [
            (["HERALD_PORT": "abc"], [String](), "HERALD_PORT"),
            (["HERALD_DEV": "maybe"], [], "dev"),
            (["HERALD_LEASE_TTL": "1", "HERALD_KAFKA": "127.0.0.1:1", "HERALD_ETCD": "http://127.0.0.1:1"],
             ["--admin-token", "t"], "lease-ttl"),
            (["HERALD_OUTBOUND_QUEUE": "0"], [], "outbound-queue"),
            ([:], ["--log-level", "loud"], "log-level"),
            ([:], ["--config", "/nonexistent/herald.json"], "config"),
        ])
    func invalidSetting(environment: [String: String], args: [String], named: String) async throws {
        // No --dev or --port here: the command line would win over the variables under test.
        let r = try await runHerald(
            ["serve", "--host", "127.0.0.1"] + args, timeout: .seconds(10), environment: environment)
        #expect(!r.timedOut, "serve kept running with an invalid \(named)")
        #expect(r.status == 2, "status \(r.status); stderr: \(r.stderr)")
        #expect(r.stderr.contains(named), "stderr should name \(named): \(r.stderr)")
    }

    @Test(
        "a config file with an unknown key, a nested value or no JSON object stops the node, naming the problem",
        arguments: [
            ("{\"lease-tt\": 3}", "lease-tt"),
            ("{\"port\": [7800]}", "port"),
            ("[1, 2]", "JSON object"),
            ("port = 7800", "JSON object"),
        ])
    func invalidConfigFile(contents: String, named: String) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("herald-config-\(UUID().uuidString).json")
        try Data(contents.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let r = try await runHerald(
            ["serve", "--dev", "--host", "127.0.0.1", "--port", "0", "--config", file.path], timeout: .seconds(10))
        #expect(!r.timedOut, "serve kept running with config \(contents)")
        #expect(r.status == 2, "status \(r.status); stderr: \(r.stderr)")
        #expect(r.stderr.contains(named), "stderr should name \(named): \(r.stderr)")
    }

    @Test("docs/configuration.md and `herald serve --help` list the same options, variables and defaults")
    func documentationMatchesHelp() async throws {
        let help = try await runHerald(["serve", "--help"])
        #expect(help.status == 0, "serve --help: \(help.stderr)")
        let served = ServeHelp.parse(help.stdout)
        #expect(served.count > 20, "could not read the options from --help:\n\(help.stdout)")
        let documented = try ConfigurationDoc.parse(
            String(contentsOf: packageRoot.appendingPathComponent("docs/configuration.md"), encoding: .utf8))
        #expect(Set(documented.keys) == Set(served.keys),
                "only in docs: \(Set(documented.keys).subtracting(served.keys).sorted()); only in --help: \(Set(served.keys).subtracting(documented.keys).sorted())")
        for (option, doc) in documented {
            guard let shown = served[option] else { continue }
            #expect(doc.environment == shown.environment, "\(option): docs say \(doc.environment), --help \(shown.environment)")
            #expect(doc.defaultValue == shown.defaultValue, "\(option): docs say default \(doc.defaultValue), --help \(shown.defaultValue)")
        }
    }

    private func expectBodyLimit(_ limit: Int, _ sys: TestSystem) async throws {
        let over = try await sys.call("send_to_system", ["data": .string(String(repeating: "x", count: limit + 100))])
        expectFailure(over, status: 413, code: 4130)
        expectSuccess(try await sys.call("send_to_system", ["data": .string("small")]))
    }

    private func writeConfig(_ settings: [String: JSON]) throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("herald-config-\(UUID().uuidString).json")
        try Data(JSON.object(settings).encoded.utf8).write(to: file)
        return file
    }
}

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

private struct DocumentedSetting: Equatable {
    let environment: String
    let defaultValue: String
}

/// Reads `--option ... (default: X; env HERALD_Y)` entries from `herald serve --help`.
private enum ServeHelp {
    static func parse(_ text: String) -> [String: DocumentedSetting] {
        var entries: [(option: String, text: String)] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  --"), let option = line.dropFirst(2).split(separator: " ").first {
                entries.append((String(option), String(line)))
            } else if line.hasPrefix("    "), !entries.isEmpty {
                entries[entries.count - 1].text += " " + line.trimmingCharacters(in: .whitespaces)
            }
        }
        var settings: [String: DocumentedSetting] = [:]
        for entry in entries where entry.option != "--help" {
            let flat = entry.text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            if let match = flat.firstMatch(of: /\(default: (.*?); env (HERALD_[A-Z_]+)\)/) {
                settings[entry.option] = DocumentedSetting(environment: String(match.2), defaultValue: String(match.1))
            } else {
                settings[entry.option] = DocumentedSetting(environment: "?", defaultValue: "?")
            }
        }
        return settings
    }
}

/// Reads the settings table of docs/configuration.md: | `--option` | `HERALD_X` | `default` | ... |
private enum ConfigurationDoc {
    static func parse(_ text: String) throws -> [String: DocumentedSetting] {
        var settings: [String: DocumentedSetting] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `--") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            try #require(cells.count >= 4, "malformed row: \(line)")
            let strip = { (cell: String) in cell.trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
            settings[strip(cells[0])] = DocumentedSetting(environment: strip(cells[1]), defaultValue: strip(cells[2]))
        }
        return settings
    }
}
