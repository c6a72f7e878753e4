import Foundation
import Testing

/// The events a system's clients give (docs/lifecycle.md), read back through /admin/events,
/// and each one valid against docs/lifecycle.schema.json.
public enum LifecycleChecks {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The system's recent events (oldest first).
    public static func events(_ server: any HeraldEndpoint, _ systemId: String) async throws -> [JSON] {
        let r = try await server.api.adminGet("/admin/events?systemId=\(systemId)&limit=1000")
        guard r.status == 200, case .array(let events)? = r.data else {
            throw HeraldLaunchError(description: "GET /admin/events: \(r)")
        }
        return events
    }

    /// Polls until `count` events of the system are there (or fails after `timeout`).
    public static func events(_ server: any HeraldEndpoint, _ systemId: String, count: Int, timeout: Duration = .seconds(10))
        async throws -> [JSON]
    {
        let start = ContinuousClock.now
        while true {
            let found = try await events(server, systemId)
            if found.count >= count || ContinuousClock.now - start > timeout { return found }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// `(event, clientId, reason or groupName)` of each event, for comparisons.
    public static func summary(_ events: [JSON]) -> [String] {
        events.map { e in
            [e["event"]?.string, e["clientId"]?.string.map { String($0.prefix(8)) }, e["reason"]?.string ?? e["groupName"]?.string]
                .compactMap { $0 }.joined(separator: " ")
        }
    }

    /// Validates every event against docs/lifecycle.schema.json with Python's jsonschema (which
    /// scripts/install-deps installs, with openapi-spec-validator).
    public static func expectValid(_ events: [JSON], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lifecycle-\(UUID().uuidString).json")
        try JSONEncoder().encode(JSON.array(events)).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            jsonschema.Draft202012Validator.check_schema(schema)
            validator = jsonschema.Draft202012Validator(schema)
            errors = [f"{i}: {e.message}" for i, event in enumerate(json.load(open(sys.argv[2]))) for e in validator.iter_errors(event)]
            print("\\n".join(errors))
            sys.exit(1 if errors else 0)
            """,
            root.appendingPathComponent("docs/lifecycle.schema.json").path, file.path,
        ]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "events not valid against docs/lifecycle.schema.json:\n\(text)", sourceLocation: sourceLocation)
    }
}

