import Crypto
import Foundation
import Synchronization

/// A registered business system. Its API secret is kept only as a salted hash; when client
/// auth is on, the secret itself is needed to verify HS256 tokens, and with a webhook to sign
/// its bodies, so it is then also kept sealed with the cluster key (never in clear).
public struct SystemRecord: Sendable, Hashable, Codable {
    public var systemId: String
    public var salt: Data?
    public var secretHash: Data?
    public var sealedSecret: Data?
    public var clientAuth: Bool
    public var registeredAt: Int64
    /// Where the system's lifecycle events are POSTed (docs/lifecycle.md), if anywhere.
    public var webhook: String?
    /// When the webhook was set: events before it are not sent to it.
    public var webhookSince: Int64?

    public init(
        systemId: String, secret: String?, clientAuth: Bool, webhook: String? = nil, sealer: ClientIDCodec,
        at: Int64 = Clock.nowMillis()
    ) {
        self.systemId = systemId
        self.registeredAt = at
        self.clientAuth = clientAuth && secret != nil
        guard let secret else { return }
        let salt = Data((0..<16).map { _ in UInt8.random(in: .min ... .max) })
        self.salt = salt
        self.secretHash = Self.hash(secret, salt: salt)
        if let webhook {
            self.webhook = webhook
            self.webhookSince = at
        }
        if self.clientAuth || webhook != nil { self.sealedSecret = sealer.sealBytes(Data(secret.utf8)) }
    }

    /// The same system with its webhook set to `url` (nil: none); `secret` is the system's own
    /// (checked by the caller), sealed to sign the bodies.
    public func withWebhook(_ url: String?, secret: String, sealer: ClientIDCodec, at: Int64 = Clock.nowMillis()) -> SystemRecord {
        var record = self
        record.webhook = url
        record.webhookSince = url == nil ? nil : at
        if url != nil, record.sealedSecret == nil { record.sealedSecret = sealer.sealBytes(Data(secret.utf8)) }
        return record
    }

    /// The secret that signs webhook bodies, when the system has a webhook.
    public func webhookSecret(_ codec: ClientIDCodec) -> Data? {
        guard webhook != nil, let sealedSecret else { return nil }
        return codec.openBytes(sealedSecret)
    }

    public var requiresSecret: Bool { secretHash != nil }

    /// Compares in constant time.
    public func accepts(secret: String?) -> Bool {
        guard let secretHash, let salt else { return true }
        guard let secret else { return false }
        let candidate = Self.hash(secret, salt: salt)
        return candidate.withUnsafeBytes { lhs in
            secretHash.withUnsafeBytes { rhs in
                lhs.count == rhs.count && zip(lhs, rhs).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
            }
        }
    }

    static func hash(_ secret: String, salt: Data) -> Data {
        Data(SHA256.hash(data: salt + Data(secret.utf8)))
    }
}

/// What a system ID may be: 1-64 bytes of `[A-Za-z0-9._:-]`. ASCII only, so Swift's `String`
/// equality (canonical equivalence: the Kelvin sign equals "K") and etcd's byte comparison
/// agree on which IDs are the same, and no ID can pass for another.
public enum SystemIDRule {
    public static let maxBytes = 64
    public static let description = "1-64 characters of A-Z a-z 0-9 . _ : -"

    public static func isValid(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard !utf8.isEmpty, utf8.count <= maxBytes else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-"):
                true
            default: false
            }
        }
    }
}

/// Keeps unknown system IDs from costing an etcd read each: a miss is remembered for
/// `missTTL` (bounded in count), and at most `maxInFlight` reads run at once.
public final class SystemLookupGuard: Sendable {
    private struct Misses {
        var expiry: [String: Int64] = [:]
    }

    private let missTTL: Int64
    private let maxMisses: Int
    private let maxInFlight: Int
    private let misses = Mutex(Misses())
    private let inFlight = Atomic<Int>(0)

    public init(missTTLMillis: Int64 = 2_000, maxMisses: Int = 10_000, maxInFlight: Int = 16) {
        self.missTTL = missTTLMillis
        self.maxMisses = maxMisses
        self.maxInFlight = maxInFlight
    }

    public func isKnownMissing(_ id: String, now: Int64 = Clock.nowMillis()) -> Bool {
        misses.withLock { ($0.expiry[id] ?? 0) > now }
    }

    public func rememberMissing(_ id: String, now: Int64 = Clock.nowMillis()) {
        misses.withLock { misses in
            if misses.expiry.count >= maxMisses {
                misses.expiry = misses.expiry.filter { $0.value > now }
                if misses.expiry.count >= maxMisses { misses.expiry.removeAll(keepingCapacity: true) }
            }
            misses.expiry[id] = now + missTTL
        }
    }

    /// A registration makes a remembered miss wrong at once.
    public func forget(_ id: String) {
        misses.withLock { _ = $0.expiry.removeValue(forKey: id) }
    }

    public func begin() -> Bool {
        if inFlight.add(1, ordering: .relaxed).newValue > maxInFlight {
            inFlight.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    public func end() {
        inFlight.subtract(1, ordering: .relaxed)
    }
}

/// What a webhook URL may be: `http` or `https`, with a host, at most 2,048 bytes.
public enum WebhookURLRule {
    public static let maxBytes = 2048
    public static let description = "an http:// or https:// URL with a host, at most 2048 bytes"

    public static func isValid(_ text: String) -> Bool {
        guard text.utf8.count <= maxBytes, let url = URL(string: text), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty, url.user == nil
        else { return false }
        return true
    }
}

/// Where registered systems live: memory on a standalone node, etcd in a cluster.
public protocol SystemDirectory: Sendable {
    func register(_ record: SystemRecord) async throws(HeraldError)
    /// Replaces a registered system's record (its webhook changed).
    func update(_ record: SystemRecord) async throws(HeraldError)
    func lookup(_ systemId: String) async throws(HeraldError) -> SystemRecord?
}

public final class InMemorySystemDirectory: SystemDirectory {
    private let systems = Mutex<[String: SystemRecord]>([:])

    public init() {}

    public func register(_ record: SystemRecord) async throws(HeraldError) {
        let inserted = systems.withLock { systems in
            guard systems[record.systemId] == nil else { return false }
            systems[record.systemId] = record
            return true
        }
        guard inserted else { throw .alreadyRegistered(record.systemId) }
    }

    public func update(_ record: SystemRecord) async throws(HeraldError) {
        systems.withLock { $0[record.systemId] = record }
    }

    public func lookup(_ systemId: String) async throws(HeraldError) -> SystemRecord? {
        systems.withLock { $0[systemId] }
    }
}
