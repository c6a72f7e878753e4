// HeraldEtcd: etcd v3 client over the JSON gateway (`/v3/...`), on AsyncHTTPClient.

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization

/// A client of the etcd v3 JSON gateway. Cheap to copy; copies share their endpoint preference.
public struct EtcdClient: Sendable {
    public let endpoints: [String]
    public let requestTimeout: Duration
    let httpClient: HTTPClient
    let logger: Logger
    let state: EndpointState

    /// Largest unary answer accepted.
    static let maxResponseBytes = 64 << 20
    /// Largest single watch line accepted.
    static let maxWatchLineBytes = 64 << 20

    /// - Parameters:
    ///   - endpoints: base URLs such as `http://127.0.0.1:2379`; on a connection failure the next one is tried.
    ///   - requestTimeout: bound on each unary call to one endpoint (and on opening a watch).
    public init(
        endpoints: [String],
        httpClient: HTTPClient = .shared,
        requestTimeout: Duration = .seconds(2),
        logger: Logger = Logger(label: "etcd")
    ) {
        var cleaned = endpoints.map { endpoint -> String in
            var endpoint = endpoint.trimmingCharacters(in: .whitespaces)
            while endpoint.hasSuffix("/") { endpoint.removeLast() }
            return endpoint
        }.filter { !$0.isEmpty }
        if cleaned.isEmpty { cleaned = ["http://127.0.0.1:2379"] }
        self.endpoints = cleaned
        self.httpClient = httpClient
        self.requestTimeout = requestTimeout
        self.logger = logger
        self.state = EndpointState()
    }

    // MARK: Leases

    /// Grants a lease; answers its id and the TTL etcd granted.
    public func grantLease(ttl: Int64) async throws -> (id: Int64, ttl: Int64) {
        let answer = try await call(
            "/v3/lease/grant", WireLeaseGrantRequest(TTL: String(ttl), ID: "0"), as: WireLeaseGrantResponse.self)
        if let error = answer.error, !error.isEmpty {
            throw EtcdError.server(status: 200, message: error)
        }
        let id = answer.ID.int64
        guard id != 0 else { throw EtcdError.badResponse("lease grant answered no ID") }
        return (id, answer.TTL.int64)
    }

    /// Renews a lease once. Answers the remaining TTL in seconds, or nil if the lease is gone.
    public func keepAliveOnce(lease: Int64) async throws -> Int64? {
        let body: ByteBuffer
        do {
            body = try await callRaw("/v3/lease/keepalive", WireLeaseIDRequest(ID: String(lease)))
        } catch EtcdError.server(_, let message) where Self.isLeaseNotFound(message) {
            return nil
        }
        // A streamed answer: one `{"result":{...}}` line (or `{"error":{...}}`).
        var sawLine = false
        for line in Self.lines(of: body) {
            sawLine = true
            let decoded = try Self.decode(WireStreamLine<WireLeaseKeepAliveResponse>.self, from: line)
            if let error = decoded.error {
                let message = error.message ?? "keepalive failed"
                if Self.isLeaseNotFound(message) { return nil }
                throw Self.streamError(error)
            }
            if let result = decoded.result {
                let ttl = result.TTL.int64
                return ttl > 0 ? ttl : nil
            }
        }
        throw EtcdError.badResponse(sawLine ? "keepalive answer without result" : "empty keepalive answer")
    }

    /// Revokes a lease, deleting its keys. Revoking a lease that no longer exists is not an error.
    public func revokeLease(_ lease: Int64) async throws {
        do {
            _ = try await callRaw("/v3/lease/revoke", WireLeaseIDRequest(ID: String(lease)))
        } catch EtcdError.server(_, let message) where Self.isLeaseNotFound(message) {
            return
        }
    }

    // MARK: Key-value

    /// Puts a key; answers the revision of the write.
    @discardableResult
    public func put(_ key: String, value: [UInt8], lease: Int64? = nil) async throws -> Int64 {
        let request = WirePutRequest(
            key: Base64.encode(key), value: Base64.encode(value), lease: lease.map { String($0) })
        let answer = try await call("/v3/kv/put", request, as: WirePutResponse.self)
        return answer.header?.revision.int64 ?? 0
    }

    @discardableResult
    public func put(_ key: String, string: String, lease: Int64? = nil) async throws -> Int64 {
        try await put(key, value: Array(string.utf8), lease: lease)
    }

    public func get(_ key: String) async throws -> EtcdKeyValue? {
        let answer = try await call(
            "/v3/kv/range", WireRangeRequest(key: Base64.encode(key), range_end: nil), as: WireRangeResponse.self)
        return try answer.kvs?.first?.decoded()
    }

    /// All keys under `prefix`, in key order, and the store revision they were read at.
    public func getPrefix(_ prefix: String) async throws -> (kvs: [EtcdKeyValue], revision: Int64) {
        let request = WireRangeRequest(
            key: Base64.encode(prefix), range_end: Base64.encode(etcdPrefixRangeEnd(Array(prefix.utf8))))
        let answer = try await call("/v3/kv/range", request, as: WireRangeResponse.self)
        let kvs = try (answer.kvs ?? []).map { try $0.decoded() }
        return (kvs, answer.header?.revision.int64 ?? 0)
    }

    /// Deletes a key; answers how many keys were deleted (0 or 1).
    @discardableResult
    public func delete(_ key: String) async throws -> Int64 {
        let answer = try await call(
            "/v3/kv/deleterange", WireDeleteRangeRequest(key: Base64.encode(key), range_end: nil),
            as: WireDeleteRangeResponse.self)
        return answer.deleted.int64
    }

    /// Deletes every key under `prefix`; answers how many were deleted.
    @discardableResult
    public func deletePrefix(_ prefix: String) async throws -> Int64 {
        let request = WireDeleteRangeRequest(
            key: Base64.encode(prefix), range_end: Base64.encode(etcdPrefixRangeEnd(Array(prefix.utf8))))
        let answer = try await call("/v3/kv/deleterange", request, as: WireDeleteRangeResponse.self)
        return answer.deleted.int64
    }

    /// Creates `key` only if it does not exist (compare create_revision == 0), optionally under a lease.
    /// Answers whether it did and the key-value as it is now (the new one, or the existing holder's).
    public func createIfAbsent(_ key: String, value: [UInt8], lease: Int64?) async throws -> (
        created: Bool, kv: EtcdKeyValue?
    ) {
        let encodedKey = Base64.encode(key)
        let read = WireRequestOp(request_range: WireRangeRequest(key: encodedKey, range_end: nil))
        let request = WireTxnRequest(
            compare: [WireCompare(key: encodedKey, target: "CREATE", result: "EQUAL", create_revision: "0")],
            success: [
                WireRequestOp(
                    request_put: WirePutRequest(
                        key: encodedKey, value: Base64.encode(value), lease: lease.map { String($0) })),
                read,
            ],
            failure: [read]
        )
        let answer = try await call("/v3/kv/txn", request, as: WireTxnResponse.self)
        let created = answer.succeeded ?? false
        let kv = try answer.responses?
            .compactMap { $0.response_range?.kvs?.first }
            .first?
            .decoded()
        return (created, kv)
    }

    /// Puts `key` only if its mod_revision still equals `modRevision` (0: the key does not exist),
    /// so of several writers that saw the same value, exactly one succeeds.
    public func put(_ key: String, value: [UInt8], ifModRevision modRevision: Int64) async throws -> Bool {
        let encodedKey = Base64.encode(key)
        let request = WireTxnRequest(
            compare: [WireCompare(key: encodedKey, target: "MOD", result: "EQUAL", mod_revision: String(modRevision))],
            success: [WireRequestOp(request_put: WirePutRequest(key: encodedKey, value: Base64.encode(value), lease: nil))],
            failure: []
        )
        let answer = try await call("/v3/kv/txn", request, as: WireTxnResponse.self)
        return answer.succeeded ?? false
    }

    /// Deletes `key` only if its create_revision still equals `createRevision` (so you never delete someone else's claim).
    public func deleteIfCreateRevision(_ key: String, equals createRevision: Int64) async throws -> Bool {
        let encodedKey = Base64.encode(key)
        let request = WireTxnRequest(
            compare: [
                WireCompare(
                    key: encodedKey, target: "CREATE", result: "EQUAL", create_revision: String(createRevision))
            ],
            success: [WireRequestOp(request_delete_range: WireDeleteRangeRequest(key: encodedKey, range_end: nil))],
            failure: []
        )
        let answer = try await call("/v3/kv/txn", request, as: WireTxnResponse.self)
        return answer.succeeded ?? false
    }

    // MARK: Maintenance

    /// Whether etcd answers and has a leader. Answers false when no endpoint is reachable.
    public func status() async throws -> Bool {
        do {
            let answer = try await call("/v3/maintenance/status", WireEmpty(), as: WireStatusResponse.self)
            return (answer.leader?.value ?? 0) != 0
        } catch EtcdError.unavailable(let message) {
            logger.debug("etcd status: unavailable", metadata: ["error": "\(message)"])
            return false
        }
    }

    // MARK: Transport

    static func isLeaseNotFound(_ message: String) -> Bool {
        message.contains("requested lease not found")
    }

    static func streamError(_ error: WireStreamError) -> EtcdError {
        let status = error.http_code ?? 500
        let message = error.message ?? error.http_status ?? "unknown error"
        if status == 503 || error.grpc_code == 14 { return .unavailable(message) }
        return .server(status: status, message: message)
    }

    static func decode<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: buffer)
        } catch {
            let text = String(buffer: buffer).prefix(200)
            throw EtcdError.badResponse("cannot decode \(T.self): \(error) in \(text)")
        }
    }

    /// Splits a buffer on newlines, dropping blank lines.
    static func lines(of buffer: ByteBuffer) -> [ByteBuffer] {
        var buffer = buffer
        var result: [ByteBuffer] = []
        while buffer.readableBytes > 0 {
            let view = buffer.readableBytesView
            let length = view.firstIndex(of: UInt8(ascii: "\n")).map { $0 - view.startIndex + 1 } ?? view.count
            if let line = buffer.readSlice(length: length), !isBlank(line) {
                result.append(line)
            }
        }
        return result
    }

    static func isBlank(_ buffer: ByteBuffer) -> Bool {
        buffer.readableBytesView.allSatisfy { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
    }

    /// Posts a request and decodes a 2xx answer.
    func call<Request: Encodable & Sendable, Response: Decodable>(
        _ path: String, _ request: Request, as type: Response.Type
    ) async throws -> Response {
        let body = try await callRaw(path, request)
        return try Self.decode(type, from: body)
    }

    /// Posts a request to the endpoints in turn (starting with the last one that worked) and answers a 2xx body.
    func callRaw<Request: Encodable & Sendable>(_ path: String, _ request: Request) async throws -> ByteBuffer {
        let payload: ByteBuffer
        do {
            payload = try JSONEncoder().encodeAsByteBuffer(request, allocator: ByteBufferAllocator())
        } catch {
            throw EtcdError.badResponse("cannot encode request: \(error)")
        }
        let start = state.preferred
        var lastError = EtcdError.unavailable("no endpoint")
        for attempt in 0..<endpoints.count {
            let index = (start + attempt) % endpoints.count
            let endpoint = endpoints[index]
            do {
                let (status, body) = try await roundTrip(endpoint: endpoint, path: path, payload: payload)
                if attempt > 0 { state.prefer(index) }
                if (200..<300).contains(status) { return body }
                throw Self.errorFromBody(status: status, body: body)
            } catch let error as EtcdError {
                guard case .unavailable = error else { throw error }
                try Task.checkCancellation()
                logger.debug(
                    "etcd endpoint unavailable", metadata: ["endpoint": "\(endpoint)", "path": "\(path)", "error": "\(error)"])
                lastError = error
            }
        }
        throw lastError
    }

    static func errorFromBody(status: Int, body: ByteBuffer) -> EtcdError {
        let decoded = try? JSONDecoder().decode(WireErrorBody.self, from: body)
        let message = decoded?.message ?? decoded?.error ?? String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        if status == 503 || decoded?.code == 14 { return .unavailable("HTTP \(status): \(message)") }
        return .server(status: status, message: message)
    }

    /// One request to one endpoint, bounded by `requestTimeout` from start to the end of the body.
    func roundTrip(endpoint: String, path: String, payload: ByteBuffer) async throws -> (Int, ByteBuffer) {
        let timeout = requestTimeout
        let httpClient = httpClient
        let logger = logger
        do {
            return try await Self.withTimeout(timeout) {
                var request = HTTPClientRequest(url: endpoint + path)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(payload)
                let response = try await httpClient.execute(
                    request, deadline: .now() + TimeAmount(timeout), logger: logger)
                let body = try await response.body.collect(upTo: Self.maxResponseBytes)
                return (Int(response.status.code), body)
            }
        } catch {
            throw Self.transportError(error, endpoint: endpoint)
        }
    }

    /// Maps an error of the HTTP layer: cancellation stays cancellation, everything else means unavailable.
    static func transportError(_ error: any Error, endpoint: String) -> any Error {
        if error is EtcdError { return error }
        if error is CancellationError { return error }
        if Task.isCancelled { return CancellationError() }
        if error is NIOTooManyBytesError { return EtcdError.badResponse("answer from \(endpoint) too large") }
        return EtcdError.unavailable("\(endpoint): \(error)")
    }

    struct TimedOut: Error {}

    /// Runs `operation`, cancelling it and throwing `.unavailable` if it takes longer than `timeout`.
    static func withTimeout<T: Sendable>(
        _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw EtcdError.unavailable("timed out after \(timeout)")
            }
            return value
        }
    }
}

/// Which endpoint to try first; shared by copies of a client.
final class EndpointState: Sendable {
    private let index = Mutex(0)

    var preferred: Int { index.withLock { $0 } }

    func prefer(_ newIndex: Int) { index.withLock { $0 = newIndex } }
}
