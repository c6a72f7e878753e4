/// Base64url without padding (RFC 4648 §5), the spelling of client IDs. Decoding is strict: it
/// accepts only the one canonical spelling `encode` produces (no padding, no `+` or `/`, no
/// stray bits in the last character), so a client ID has exactly one accepted form.
/// Written out by hand because Foundation's route (base64 plus string replacing) cost about a
/// tenth of a send's CPU.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
        return table
    }()

    static func encode(_ bytes: some Collection<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var iterator = bytes.makeIterator()
        while let b0 = iterator.next() {
            let b1 = iterator.next()
            let b2 = iterator.next()
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
            guard let b1 else { break }
            out.append(alphabet[Int((b1 & 0x0F) << 2 | (b2 ?? 0) >> 6)])
            guard let b2 else { break }
            out.append(alphabet[Int(b2 & 0x3F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil unless `text` is exactly what `encode` would write for some bytes.
    static func decode(_ text: String) -> [UInt8]? {
        var text = text
        return text.withUTF8 { utf8 -> [UInt8]? in
            guard utf8.count % 4 != 1 else { return nil }
            var out: [UInt8] = []
            out.reserveCapacity(utf8.count * 3 / 4)
            var accumulator: UInt32 = 0
            var bits = 0
            for character in utf8 {
                let value = values[Int(character)]
                guard value != 0xFF else { return nil }
                accumulator = accumulator << 6 | UInt32(value)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                }
            }
            // Bits left over must be zero, or two spellings would decode alike.
            guard accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
            return out
        }
    }
}
