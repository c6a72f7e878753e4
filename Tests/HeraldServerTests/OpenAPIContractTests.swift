import Foundation
import HeraldTestSupport
import NIOHTTP1
import Testing

/// docs/openapi.yaml and the routes a real `herald serve --dev` serves agree in both directions,
/// and the error codes the spec names are the ones the code can answer.
@Suite("OpenAPI contract: docs/openapi.yaml against the served routes", .herald(["--admin-token", testAdminToken]))
struct OpenAPIContractTests {
    var server: HeraldInstance { get throws { try SharedHerald.get() } }

    @Test("the spec parses: paths with operations, each with responses")
    func specParses() throws {
        let spec = try OpenAPISpec.load()
        #expect(spec.operations.count >= 20, "too few operations read from the spec: \(spec.operations.map(\.key))")
        for op in spec.operations {
            #expect(!op.statuses.isEmpty, "\(op.key) documents no responses")
        }
        #expect(!spec.errorCatalogue.isEmpty, "components.schemas.ErrorCode has no enum line")
    }

    @Test("every (method, path) in the spec is served: neither the unknown-route answer (404/4004) nor 405")
    func specRoutesAreServed() async throws {
        let spec = try OpenAPISpec.load()
        let sys = try await server.api.registerSystem()
        for op in spec.operations {
            if op.path == "/ws" {
                // The upgrade itself: a real WebSocket handshake gets the first frame.
                let c = try await sys.connect()
                #expect(!c.clientId.isEmpty)
                try await c.ws.close()
                continue
            }
            let path = op.path.replacingOccurrences(of: #"\{[^}]+\}"#, with: "probe", options: .regularExpression)
            let method = HTTPMethod(rawValue: op.method.uppercased())
            var headers = try server.api.adminHeaders
            headers.append(("SystemId", sys.id))
            headers.append(("Content-Type", "application/json"))
            let r = try await server.api.request(
                method, path, headers: headers, body: method == .POST ? Data("{}".utf8) : nil)
            #expect(r.status != 405, "\(op.key) answered 405: \(r)")
            #expect(!(r.status == 404 && r.code == 4004), "\(op.key) is not served: \(r)")
            #expect(
                op.statuses.contains(String(r.status)),
                "\(op.key) answered HTTP \(r.status), which the spec does not document (it has \(op.statuses.sorted())): \(r)"
            )
            // HEAD answers carry headers only; metrics, replay and the client are not JSON.
            if !["/metrics", "/admin/replay", "/herald.js", "/herald.d.ts"].contains(op.path), method != .HEAD {
                #expect(r.hasEnvelope, "\(op.key) did not answer the {code,msg,data} envelope: \(r)")
            }
        }
        // The control: a route that is not served does give the unknown-route answer.
        expectFailure(try await server.api.get("/no/such/route"), status: 404, code: 4004)
    }

    @Test("every route the node serves (GET /admin/routes) is in the spec")
    func servedRoutesAreInSpec() async throws {
        let spec = try OpenAPISpec.load()
        let r = try await server.api.adminGet("/admin/routes")
        expectSuccess(r)
        let served = try #require(r.data?.array, "/admin/routes data is not an array: \(r)").compactMap {
            entry -> String? in
            guard let method = entry["method"]?.string, let path = entry["path"]?.string else { return nil }
            return "\(method.uppercased()) \(path)"
        }
        #expect(served.count >= 20, "suspiciously few routes served: \(served)")
        let documented = Set(spec.operations.map(\.key))
        for route in served {
            #expect(documented.contains(route), "\(route) is served but not in docs/openapi.yaml")
        }
        for route in documented {
            #expect(served.contains(route), "\(route) is in docs/openapi.yaml but not in the router's table")
        }
    }

    @Test("every error code in the spec exists in the code, with the HTTP status the spec documents")
    func errorCodesExist() throws {
        let spec = try OpenAPISpec.load()
        let catalogue = try CodeCatalogue.load()
        #expect(
            catalogue.httpErrors.count >= 10, "read too few HeraldError codes from the sources: \(catalogue.httpErrors)"
        )
        // The spec's catalogue and the code's are the same set.
        for code in spec.errorCatalogue {
            #expect(
                catalogue.httpErrors[code] != nil, "the spec lists error code \(code), which the code never answers")
        }
        for code in catalogue.httpErrors.keys {
            #expect(
                spec.errorCatalogue.contains(code),
                "the code answers \(code), which ErrorCode in the spec does not list")
        }
        for op in spec.operations {
            for code in op.errorCodes {
                #expect(spec.errorCatalogue.contains(code), "\(op.key) lists \(code), which is not in ErrorCode")
                guard let status = catalogue.httpErrors[code] else {
                    Issue.record("\(op.key) lists \(code), which the code never answers")
                    continue
                }
                #expect(
                    op.statuses.contains(String(status)),
                    "\(op.key) lists code \(code) but documents no HTTP \(status) response")
            }
            for code in op.frameCodes {
                #expect(
                    catalogue.frameCodes.contains(code),
                    "\(op.key) lists frame code \(code), which the code never sends")
            }
        }
        #expect(
            Set(spec.operations.flatMap(\.frameCodes)) == catalogue.frameCodes,
            "the WebSocket refusal codes in the spec and in WebSocketEndpoint differ")
    }
}

/// The package's root directory, found from this file's path.
private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// What the contract tests need from docs/openapi.yaml, read line by line (no YAML library):
/// the file keeps the layout its header comment describes.
struct OpenAPISpec {
    struct Operation {
        var method: String
        var path: String
        /// HTTP statuses under `responses:`.
        var statuses: Set<String> = []
        /// `x-herald-error-codes: [..]`: the `code`s this operation can answer.
        var errorCodes: [Int] = []
        /// `x-herald-frame-codes: [..]`: codes of refusal frames (the WebSocket upgrade).
        var frameCodes: [Int] = []

        var key: String { "\(method.uppercased()) \(path)" }
    }

    var operations: [Operation] = []
    /// `components.schemas.ErrorCode.enum`.
    var errorCatalogue: Set<Int> = []

    static func load() throws -> OpenAPISpec {
        let url = packageRoot.appendingPathComponent("docs/openapi.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        return parse(text)
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    static func parse(_ text: String) -> OpenAPISpec {
        var spec = OpenAPISpec()
        var section = ""
        var path: String?
        var current: Operation?
        var inResponses = false
        var inErrorCode = false

        func finish() {
            if let op = current { spec.operations.append(op) }
            current = nil
        }

        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let indent = line.prefix { $0 == " " }.count
            if indent == 0 {
                finish()
                section = String(trimmed.prefix { $0 != ":" })
                continue
            }
            if section == "paths" {
                if indent == 2, trimmed.hasPrefix("/"), trimmed.hasSuffix(":") {
                    finish()
                    path = String(trimmed.dropLast())
                } else if indent == 4, trimmed.hasSuffix(":"), methods.contains(String(trimmed.dropLast())), let path {
                    finish()
                    current = Operation(method: String(trimmed.dropLast()), path: path)
                    inResponses = false
                } else if indent == 4 {
                    finish()  // path-level keys (parameters, summary) end the operation
                } else if indent == 6, current != nil {
                    inResponses = trimmed == "responses:"
                    if let codes = list(after: "x-herald-error-codes:", in: trimmed) { current?.errorCodes = codes }
                    if let codes = list(after: "x-herald-frame-codes:", in: trimmed) { current?.frameCodes = codes }
                } else if indent == 8, inResponses, trimmed.hasSuffix(":") {
                    let key = trimmed.dropLast().trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
                    if key.count == 3, Int(key) != nil { current?.statuses.insert(key) }
                }
            } else if section == "components" {
                if indent == 4 { inErrorCode = trimmed == "ErrorCode:" }
                if inErrorCode, indent == 6, let codes = list(after: "enum:", in: trimmed) {
                    spec.errorCatalogue = Set(codes)
                }
            }
        }
        finish()
        return spec
    }

    /// The integers of a one-line flow list such as `key: [4000, 4010]`.
    static func list(after key: String, in line: String) -> [Int]? {
        guard line.hasPrefix(key) else { return nil }
        let body = line.dropFirst(key.count).trimmingCharacters(in: CharacterSet(charactersIn: " []"))
        return body.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }
}

/// The error codes the code can answer, read from its sources (this test target does not link
/// HeraldCore): every `HeraldError` built with a literal `code: N, status: S` in HeraldCore's
/// catalogue (HeraldError.swift) and in HeraldServer, and the refusal frames of WebSocketEndpoint.
struct CodeCatalogue {
    /// code -> HTTP status.
    var httpErrors: [Int: Int] = [:]
    var frameCodes: Set<Int> = []

    static func load() throws -> CodeCatalogue {
        var catalogue = CodeCatalogue()
        let server = packageRoot.appendingPathComponent("Sources/HeraldServer")
        var files = [packageRoot.appendingPathComponent("Sources/HeraldCore/HeraldError.swift")]
        files += try FileManager.default.contentsOfDirectory(at: server, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "swift" }
        // ErrorCode's cases: `case name = 4130`; the status is the code's first three digits
        // (4004, no such route, is 404: ErrorCode.status says so too).
        let errorPattern = try Regex(#"case \w+ = (\d{4})\b"#)
        let framePattern = try Regex(#"\.refused\(code: (-?\d+)"#)
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for match in text.matches(of: errorPattern) where file.lastPathComponent == "HeraldError.swift" {
                guard let code = match.output[1].substring.flatMap({ Int($0) }) else { continue }
                catalogue.httpErrors[code] = code == 4004 ? 404 : code / 10
            }
            for match in text.matches(of: framePattern) {
                if let code = match.output[1].substring.flatMap({ Int($0) }) { catalogue.frameCodes.insert(code) }
            }
        }
        return catalogue
    }
}
