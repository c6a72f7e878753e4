import Crypto
import Foundation

/// Where a client lives: the owning node's address, its partition slot, the slot's epoch,
/// and the connection's serial on that node. `systemTag` ties the ID to its system.
public struct ClientID: Sendable, Hashable {
    public var address: String
    public var slot: UInt32
    public var epoch: UInt64
    public var serial: UInt64
    public var systemTag: UInt32

    public init(address: String, slot: UInt32, epoch: UInt64, serial: UInt64, systemId: String) {
        self.address = address
        self.slot = slot
        self.epoch = epoch
        self.serial = serial
        self.systemTag = ClientID.tag(for: systemId)
    }

    init(address: String, slot: UInt32, epoch: UInt64, serial: UInt64, systemTag: UInt32) {
        self.address = address
        self.slot = slot
        self.epoch = epoch
        self.serial = serial
        self.systemTag = systemTag
    }

    public func belongs(to systemId: String) -> Bool {
        systemTag == ClientID.tag(for: systemId)
    }

    /// Four bytes of SHA-256 of the system id: enough to answer 4030 without a lookup.
    static func tag(for systemId: String) -> UInt32 {
        let digest = SHA256.hash(data: Data(systemId.utf8))
        return digest.prefix(4).reduce(0) { ($0 << 8) | UInt32($1) }
    }
}

public enum ClientIDCodecError: Error, CustomStringConvertible, Equatable {
    case noKeys
    case badKey(String)
    case addressTooLong(Int)

    public var description: String {
        switch self {
        case .noKeys: "client-id-key: at least one key is required"
        case .badKey(let why): "client-id-key: \(why)"
        case .addressTooLong(let max): "advertise address longer than \(max) bytes does not fit in a client ID"
        }
    }
}

/// Seals client IDs with AES-256-GCM and opens them again.
///
/// Layout before base64url: version (1) | key id (1) | nonce (12) | ciphertext | tag (16).
/// The version and key id are authenticated as additional data. The first key seals;
/// every key opens, so keys can be rotated by prepending a new one.
public struct ClientIDCodec: Sendable {
    static let version: UInt8 = 1
    public static let maxAddressBytes = 40
    public static let maxEncodedLength = 128

    struct Key: Sendable {
        let id: UInt8
        let key: SymmetricKey
    }

    private let keys: [Key]

    public init(keys: [SymmetricKey]) throws(ClientIDCodecError) {
        guard !keys.isEmpty else { throw .noKeys }
        for key in keys where key.bitCount != 256 {
            throw .badKey("each key must be 32 bytes, got \(key.bitCount / 8)")
        }
        self.keys = keys.map { key in
            let digest = SHA256.hash(data: key.withUnsafeBytes { Data($0) })
            return Key(id: Array(digest)[0], key: key)
        }
    }

    /// Parses a comma-separated list of base64 keys (standard or URL-safe alphabet).
    public init(base64Keys: String) throws(ClientIDCodecError) {
        let parts = base64Keys.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var keys: [SymmetricKey] = []
        for part in parts where !part.isEmpty {
            guard let data = Data(base64URLEncoded: part) else {
                throw .badKey("'\(part.prefix(6))…' is not base64")
            }
            keys.append(SymmetricKey(data: data))
        }
        try self.init(keys: keys)
    }

    public static func generateKey() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
    }

    public func seal(_ id: ClientID) -> String {
        var plain = Data(capacity: 25 + id.address.utf8.count)
        plain.appendBigEndian(id.slot)
        plain.appendBigEndian(id.epoch)
        plain.appendBigEndian(id.serial)
        plain.appendBigEndian(id.systemTag)
        let address = Data(id.address.utf8.prefix(Self.maxAddressBytes))
        plain.append(UInt8(address.count))
        plain.append(address)
        return Base64URL.encode(sealBytes(plain))
    }

    public func open(_ text: String) throws(HeraldError) -> ClientID {
        // Only the one spelling we issue opens: no padding, no other alphabet, no stray low bits.
        guard text.utf8.count <= Self.maxEncodedLength, let raw = Base64URL.decode(text),
            let plain = openBytes(Data(raw))
        else { throw .badClientID }
        var reader = ByteReader(plain)
        guard let slot: UInt32 = reader.read(), let epoch: UInt64 = reader.read(),
            let serial: UInt64 = reader.read(), let tag: UInt32 = reader.read(),
            let length: UInt8 = reader.read(), let addressBytes = reader.read(count: Int(length)),
            reader.isAtEnd, let address = String(bytes: addressBytes, encoding: .utf8)
        else { throw .badClientID }
        return ClientID(address: address, slot: slot, epoch: epoch, serial: serial, systemTag: tag)
    }

    /// Seals arbitrary bytes with the current key (used to keep system secrets encrypted at rest).
    public func sealBytes(_ plain: Data) -> Data {
        let key = keys[0]
        let header = Data([Self.version, key.id])
        // AES-GCM with a random nonce only fails on invalid key sizes, which init rules out.
        let box = try! AES.GCM.seal(plain, using: key.key, authenticating: header)
        return header + box.combined!
    }

    public func openBytes(_ raw: Data) -> Data? {
        guard raw.count >= 2 + 12 + 16, raw[raw.startIndex] == Self.version else { return nil }
        let keyID = raw[raw.startIndex + 1]
        let header = raw.prefix(2)
        guard let box = try? AES.GCM.SealedBox(combined: raw.dropFirst(2)) else { return nil }
        for key in keys where key.id == keyID {
            if let plain = try? AES.GCM.open(box, using: key.key, authenticating: header) {
                return plain
            }
        }
        return nil
    }
}

extension Data {
    init?(base64URLEncoded text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 = base64.trimmingCharacters(in: CharacterSet(charactersIn: "="))
        let remainder = base64.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { base64 += String(repeating: "=", count: 4 - remainder) }
        self.init(base64Encoded: base64)
    }

    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

/// Reads big-endian integers and byte runs off a buffer, answering nil when it runs short.
struct ByteReader {
    private let bytes: [UInt8]
    private var index = 0

    init(_ data: Data) { bytes = Array(data) }

    var isAtEnd: Bool { index == bytes.count }

    mutating func read<T: FixedWidthInteger>() -> T? {
        let size = MemoryLayout<T>.size
        guard index + size <= bytes.count else { return nil }
        let value = bytes[index..<index + size].reduce(T.zero) { ($0 << 8) | T($1) }
        index += size
        return value
    }

    mutating func read(count: Int) -> [UInt8]? {
        guard index + count <= bytes.count else { return nil }
        defer { index += count }
        return Array(bytes[index..<index + count])
    }
}
