import Foundation
import Testing

public let testAdminToken = "test-admin-token-7f3c"

/// Checks a failure answer: HTTP status, body code, the `{code,msg,data}` envelope and (optionally) that
/// `msg` names a field.
public func expectFailure(
    _ r: APIResponse, status: Int, code: Int, mentions: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(r.status == status, "expected HTTP \(status), got \(r)", sourceLocation: sourceLocation)
    #expect(r.code == code, "expected code \(code), got \(r)", sourceLocation: sourceLocation)
    #expect(r.hasEnvelope, "body is not a {code,msg,data} envelope: \(r)", sourceLocation: sourceLocation)
    if let mentions {
        #expect(
            r.msg?.localizedCaseInsensitiveContains(mentions) == true, "msg should name \(mentions): \(r)",
            sourceLocation: sourceLocation)
    }
}

public func expectSuccess(_ r: APIResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 200, "expected HTTP 200, got \(r)", sourceLocation: sourceLocation)
    #expect(r.code == 0, "expected code 0, got \(r)", sourceLocation: sourceLocation)
    #expect(r.hasEnvelope, "body is not a {code,msg,data} envelope: \(r)", sourceLocation: sourceLocation)
}

/// After bad input the node must keep serving: a good call for the system succeeds.
public func expectStillServing(_ sys: TestSystem, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let r = try await sys.call("get_online_list", ["groupName": "still-serving"])
    expectSuccess(r, sourceLocation: sourceLocation)
    let h = try await sys.api.get("/healthz")
    #expect(h.status == 200, "healthz after bad input: \(h)", sourceLocation: sourceLocation)
}

public func isPresence(_ f: JSON) -> Bool {
    let c = f["code"]?.int
    let m = f["messageId"]?.string ?? ""
    return (c == 1001 || c == 1002) && m.isEmpty && f["data"]?["clientId"] != nil
}

/// The next frame that is not a presence (1001/1002) notification.
public func nextNonPresence(_ ws: TestWebSocket, timeout: Duration = .seconds(5)) async throws -> JSON {
    let deadline = ContinuousClock.now + timeout
    while true {
        let f = try await ws.nextJSON(timeout: max(deadline - ContinuousClock.now, .milliseconds(1)))
        if !isPresence(f) { return f }
    }
}

/// Checks a presence frame: top-level code and groupName, data {clientId,userId,extend}.
public func expectPresence(
    _ f: JSON, code: Int, group: String, clientId: String, userId: String? = nil, extend: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(f["code"]?.int == code, "expected presence \(code): \(f)", sourceLocation: sourceLocation)
    #expect(f["groupName"]?.string == group, "groupName in \(f)", sourceLocation: sourceLocation)
    #expect(f["data"]?["clientId"]?.string == clientId, "data.clientId in \(f)", sourceLocation: sourceLocation)
    #expect(f["data"]?.object?.keys.contains("userId") == true, "data.userId in \(f)", sourceLocation: sourceLocation)
    #expect(f["data"]?.object?.keys.contains("extend") == true, "data.extend in \(f)", sourceLocation: sourceLocation)
    if let userId {
        #expect(f["data"]?["userId"]?.string == userId, "data.userId in \(f)", sourceLocation: sourceLocation)
    }
    if let extend {
        #expect(f["data"]?["extend"]?.string == extend, "data.extend in \(f)", sourceLocation: sourceLocation)
    }
}

/// Waits until the server reports the client offline (client_status online == false).
public func waitOffline(_ sys: TestSystem, _ clientId: String, timeout: Duration = .seconds(5)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        let r = try await sys.call("client_status", ["clientId": .string(clientId)])
        if r.code == 0, r.data?["online"]?.bool == false { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("client \(clientId) still reported online after \(timeout)")
}

/// Sends a marker straight to a client and checks that it is the next non-presence frame, which proves
/// that nothing else (e.g. a group or system message) was delivered to it in between.
public func expectNothingElseBefore(
    marker ws: TestWebSocket, clientId: String, sys: TestSystem, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let m = try await sys.send(to: clientId, ["msg": "marker"])
    let f = try await nextNonPresence(ws)
    #expect(f["messageId"]?.string == m, "expected only the marker, got \(f)", sourceLocation: sourceLocation)
}

public func rfc3339(_ date: Date) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: date)
}

public func parseRFC3339(_ s: String) -> Date? {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let d = f.date(from: s) { return d }
    f.formatOptions = [.withInternetDateTime]
    return f.date(from: s)
}

public func percentEncoded(_ s: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}

/// Polls `body` until it returns a value or the timeout passes.
public func eventually<T: Sendable>(
    timeout: Duration = .seconds(5), _ body: () async throws -> T?
) async throws -> T? {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let v = try await body() { return v }
        if ContinuousClock.now >= deadline { return nil }
        try await Task.sleep(for: .milliseconds(100))
    }
}
