// HeraldEtcd: etcd v3 client over the JSON gateway. Knows nothing of Herald.

/// One key-value as etcd stores it.
public struct EtcdKeyValue: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    /// The lease the key is bound to, 0 for none.
    public var lease: Int64

    public init(
        key: String,
        value: [UInt8],
        createRevision: Int64 = 0,
        modRevision: Int64 = 0,
        version: Int64 = 0,
        lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The value decoded as UTF-8 (invalid sequences are repaired).
    public var valueString: String { String(decoding: value, as: UTF8.self) }
}

/// One event seen by a watch.
public struct EtcdWatchEvent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case put
        case delete
    }

    public var kind: Kind
    /// For a delete, only `key` and `modRevision` are meaningful.
    public var kv: EtcdKeyValue
    /// Header revision of the watch response that carried the event.
    public var revision: Int64

    public init(kind: Kind, kv: EtcdKeyValue, revision: Int64) {
        self.kind = kind
        self.kv = kv
        self.revision = revision
    }
}

public enum EtcdError: Error, CustomStringConvertible, Sendable {
    /// No endpoint answered: connection refused, timeout, connection dropped, or etcd itself unavailable (HTTP 503).
    case unavailable(String)
    /// The answer could not be understood.
    case badResponse(String)
    /// etcd answered with an error.
    case server(status: Int, message: String)
    /// A watch asked for a revision that has been compacted; the associated value is the compact revision.
    case compacted(Int64)

    public var description: String {
        switch self {
        case .unavailable(let message): "etcd unavailable: \(message)"
        case .badResponse(let message): "bad etcd response: \(message)"
        case .server(let status, let message): "etcd error (HTTP \(status)): \(message)"
        case .compacted(let revision): "etcd revision compacted (compact revision \(revision))"
        }
    }
}

/// Range end covering every key that starts with `prefix`: the prefix with its
/// last byte incremented, trailing 0xff bytes dropped; `[0]` (all keys) when no
/// byte can be incremented.
public func etcdPrefixRangeEnd(_ prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xff {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0]
}
