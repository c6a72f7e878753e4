import Crypto
import Foundation
import HeraldCore
import HeraldEtcd
import Synchronization

/// The cluster's shared record of `Idempotency-Key`s, in etcd, so a retry that the load
/// balancer sends to another node finds the first answer. One key per system, route and
/// Idempotency-Key (`<prefix>idempotency/<system>/<sha256>`): created by the first request
/// (a transaction that succeeds only if absent, so of two concurrent requests exactly one
/// sends), then filled with its answer. Keys are bound to a lease granted per minute with a
/// TTL of the window plus that minute, so each lives at least the window and at most a minute
/// longer, and they vanish with no clean-up.
public final class EtcdIdempotency: Sendable {
    /// What a request with a key finds.
    public enum Claim: Sendable {
        /// This request is the first: it sends, then calls `complete` or `release`.
        case claimed(revision: Int64)
        /// The first request's answer (status, code, body).
        case answered(status: Int, code: Int, body: Data)
        /// The same key with a different request body.
        case conflict
    }

    struct Record: Codable {
        var fingerprint: String
        var status: Int?
        var code: Int?
        var body: Data?
    }

    private let etcd: EtcdClient
    private let keys: EtcdKeys
    private let window: Duration
    private let pendingTimeout: Duration
    private let leases = Mutex<(bucket: Int64, lease: Int64)?>(nil)

    /// `pendingTimeout`: how long a repeat waits for a first request still in flight elsewhere.
    public init(etcd: EtcdClient, keys: EtcdKeys, window: Duration = .seconds(600), pendingTimeout: Duration) {
        self.etcd = etcd
        self.keys = keys
        self.window = window
        self.pendingTimeout = pendingTimeout
    }

    func key(systemId: String, route: String, key: String) -> String {
        let digest = SHA256.hash(data: Data("\(route)\n\(key)".utf8))
        return keys.idempotency(systemId: systemId, digestHex: digest.map { String(format: "%02x", $0) }.joined())
    }

    /// The lease of the current minute, granted on first use.
    private func currentLease() async throws -> Int64 {
        let bucket = Int64(Date().timeIntervalSince1970 / 60)
        if let (known, lease) = leases.withLock({ $0 }), known == bucket { return lease }
        let ttl = window.components.seconds + 60
        let lease = try await etcd.grantLease(ttl: ttl).id
        leases.withLock { $0 = (bucket, lease) }
        return lease
    }

    /// Claims `key` for this request, or answers what an earlier request with it got. Waits up
    /// to `pendingTimeout` for a first request still in flight; still unanswered, the outcome
    /// is unknown (5031) and nothing is sent.
    public func claim(systemId: String, route: String, key rawKey: String, fingerprint: [UInt8]) async throws(HeraldError) -> Claim {
        let key = key(systemId: systemId, route: route, key: rawKey)
        let print = fingerprint.map { String(format: "%02x", $0) }.joined()
        do {
            let value = try JSONEncoder().encode(Record(fingerprint: print))
            let (created, kv) = try await etcd.createIfAbsent(key, value: Array(value), lease: try await currentLease())
            if created { return .claimed(revision: kv?.createRevision ?? 0) }
            let deadline = ContinuousClock.now + pendingTimeout
            while true {
                guard let kv = try await etcd.get(key) else {
                    // Released by a first request that sent nothing (5030): this one may run.
                    return try await claim(systemId: systemId, route: route, key: rawKey, fingerprint: fingerprint)
                }
                let record = try JSONDecoder().decode(Record.self, from: Data(kv.value))
                guard record.fingerprint == print else { return .conflict }
                if let status = record.status, let code = record.code, let body = record.body {
                    return .answered(status: status, code: code, body: body)
                }
                guard ContinuousClock.now < deadline else {
                    throw HeraldError.outcomeUnknown("a request with this Idempotency-Key is still being answered by another node")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        } catch let error as HeraldError {
            throw error
        } catch {
            throw .unavailable("the Idempotency-Key could not be recorded (etcd): \(error)")
        }
    }

    /// Stores the answer of the request that claimed `key`.
    public func complete(systemId: String, route: String, key rawKey: String, fingerprint: [UInt8], status: Int, code: Int, body: Data) async {
        let key = key(systemId: systemId, route: route, key: rawKey)
        let record = Record(fingerprint: fingerprint.map { String(format: "%02x", $0) }.joined(), status: status, code: code, body: body)
        guard let value = try? JSONEncoder().encode(record), let lease = try? await currentLease() else { return }
        // If this fails the key stays pending: a repeat then answers 5031 (unknown), never sends.
        _ = try? await etcd.put(key, value: Array(value), lease: lease)
    }

    /// Forgets `key` after an answer that sent nothing (5030), so its retry runs.
    public func release(systemId: String, route: String, key rawKey: String, revision: Int64) async {
        _ = try? await etcd.deleteIfCreateRevision(key(systemId: systemId, route: route, key: rawKey), equals: revision)
    }
}
