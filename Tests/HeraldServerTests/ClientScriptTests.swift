import Foundation
import HeraldTestSupport
import Testing

/// `/herald.js` and `/herald.d.ts`: every node serves the files of clients/, as they are.
@Suite("The browser client, served", .herald())
struct ClientScriptTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("GET /herald.js and /herald.d.ts answer the files of clients/, to any origin, with an ETag that answers 304")
    func served() async throws {
        let server = try SharedHerald.get()
        for (path, file, type) in [
            ("/herald.js", "clients/herald.js", "text/javascript"), ("/herald.d.ts", "clients/herald.d.ts", "text/plain"),
        ] {
            let onDisk = try String(contentsOf: Self.root.appendingPathComponent(file), encoding: .utf8)
            let r = try await server.api.get(path, headers: [("Origin", "https://elsewhere.example")])
            #expect(r.status == 200)
            #expect(r.body == onDisk, "\(path) is \(file) (run scripts/embed-clients after changing it)")
            #expect(r.contentType.hasPrefix(type), "\(r.contentType)")
            #expect(r.headers.first(name: "access-control-allow-origin") == "*")
            let etag = try #require(r.headers.first(name: "etag"))
            let again = try await server.api.get(path, headers: [("If-None-Match", etag)])
            #expect(again.status == 304)
            #expect(again.body.isEmpty)
        }
    }
}
