import NIOCore

/// The stamp every published message carries in its data: `HB|<phase>|<seq>|<sentAt>|<padding>`.
/// `sentAt` is the publisher's CLOCK_MONOTONIC nanoseconds when it wrote the request. The
/// stamp is plain ASCII, so it passes through Herald's JSON envelope and Nchan unchanged, and
/// a receiver finds it with a byte scan instead of a JSON parse.
struct BenchStamp: Sendable, Equatable {
    var phase: UInt32
    var seq: UInt64
    var sentAt: UInt64

    /// The stamp followed by padding, `size` characters in all (at least the stamp itself).
    func text(size: Int) -> String {
        var text = "HB|\(phase)|\(seq)|\(sentAt)|"
        if text.utf8.count < size { text += String(repeating: "x", count: size - text.utf8.count) }
        return text
    }

    /// Finds the stamp in a received frame's payload.
    static func find(in bytes: UnsafeRawBufferPointer) -> BenchStamp? {
        let count = bytes.count
        guard count >= 9 else { return nil }
        var i = 0
        while i + 2 < count {
            if bytes[i] == UInt8(ascii: "H"), bytes[i + 1] == UInt8(ascii: "B"), bytes[i + 2] == UInt8(ascii: "|") {
                var cursor = i + 3
                guard let phase = number(bytes, &cursor), let seq = number(bytes, &cursor),
                    let sentAt = number(bytes, &cursor)
                else { return nil }
                return BenchStamp(phase: UInt32(truncatingIfNeeded: phase), seq: seq, sentAt: sentAt)
            }
            i += 1
        }
        return nil
    }

    static func find(in buffer: ByteBuffer) -> BenchStamp? {
        buffer.withUnsafeReadableBytes { find(in: $0) }
    }

    /// Decimal digits up to a `|`, which is consumed.
    private static func number(_ bytes: UnsafeRawBufferPointer, _ cursor: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        while cursor < bytes.count {
            let byte = bytes[cursor]
            cursor += 1
            if byte == UInt8(ascii: "|") { return digits > 0 ? value : nil }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 20 else { return nil }
            value = value &* 10 &+ UInt64(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return nil
    }
}
