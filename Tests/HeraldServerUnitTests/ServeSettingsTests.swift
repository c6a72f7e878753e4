import Foundation
import Testing

@testable import HeraldServer

@Suite("The settings table: one source for --help, the environment, the config file and the docs")
struct ServeSettingsTests {
    @Test("names are unique, lower-case words joined by '-', and each maps to its HERALD_ variable")
    func names() {
        let names = ServeSetting.all.map(\.name)
        #expect(Set(names).count == names.count, "a setting is listed twice")
        for name in names {
            #expect(name.wholeMatch(of: /[a-z]+(-[a-z]+)*/) != nil, "\(name)")
        }
        #expect(ServeSetting.environmentName(of: "max-connections-per-ip") == "HERALD_MAX_CONNECTIONS_PER_IP")
    }

    @Test("each parser takes its text or names what it expected; rules reject values out of range")
    func parsers() throws {
        var configuration = HeraldConfiguration()
        try #require(ServeSetting.named("port")).apply("7801", to: &configuration)
        try #require(ServeSetting.named("ping-interval")).apply("2.5", to: &configuration)
        try #require(ServeSetting.named("group-presence")).apply("off", to: &configuration)
        try #require(ServeSetting.named("allowed-origins")).apply(" https://a.example , ,https://b.example", to: &configuration)
        try #require(ServeSetting.named("log-level")).apply("DEBUG", to: &configuration)
        #expect(configuration.port == 7801)
        #expect(configuration.pingInterval == 2.5)
        #expect(configuration.groupPresence == false)
        #expect(configuration.allowedOrigins == ["https://a.example", "https://b.example"])
        #expect(configuration.logLevel == .debug)

        #expect(throws: ConfigurationError.self) {
            try #require(ServeSetting.named("port")).apply("80x", to: &configuration)
        }
        #expect(throws: ConfigurationError.self) {
            try #require(ServeSetting.named("ping-interval")).apply("inf", to: &configuration)
        }
        configuration.dev = true
        configuration.port = 70000
        #expect(throws: ConfigurationError.self) { try configuration.validated() }
        configuration.port = 0
        configuration.rateLimit = -1
        #expect(throws: ConfigurationError.self) { try configuration.validated() }
        configuration.rateLimit = 0
        // A cluster-only rule does not apply to a standalone node.
        configuration.leaseTTL = 1
        _ = try configuration.validated()
    }

    @Test("docs/configuration.md holds the table the settings generate, row for row")
    func documentation() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        let table = ServeSetting.markdownTable
        if ProcessInfo.processInfo.environment["HERALD_WRITE_SETTINGS_TABLE"] == "1" {
            try table.write(to: URL(fileURLWithPath: "/tmp/settings-table.md"), atomically: true, encoding: .utf8)
        }
        let rows = doc.split(separator: "\n").filter { $0.hasPrefix("| `--") }.map(String.init)
        let expected = table.split(separator: "\n").filter { $0.hasPrefix("| `--") }.map(String.init)
        let differing = zip(rows, expected).first { $0 != $1 }
        #expect(
            rows == expected,
            """
            docs/configuration.md's settings table is not the one ServeSettingsTable.swift generates \
            (\(rows.count) rows documented, \(expected.count) settings; first difference: \
            \(differing.map { "docs: \($0.0) / table: \($0.1)" } ?? "a missing or extra row"); \
            HERALD_WRITE_SETTINGS_TABLE=1 writes the table to /tmp/settings-table.md)
            """)
    }
}
