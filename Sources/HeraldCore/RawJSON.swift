/// A JSON value exactly as a business system sent it: checked once by `JSONScanner` and then
/// carried as its text, so that `data` reaches the client as the same value (a 64-bit integer
/// stays an integer, key order stays) and no send parses it into a tree and encodes it again.
public struct RawJSON: Sendable, Hashable, CustomStringConvertible {
    /// Valid JSON text of one value, at most `JSONScanner.maxDepth` levels deep.
    public let text: String

    public static let jsonNull = RawJSON(trusted: "null")

    /// Checks `bytes` as one JSON value (surrounding whitespace allowed and dropped).
    public init(validating bytes: some Collection<UInt8>, maxDepth: Int = JSONScanner.maxDepth) throws(JSONSyntaxError) {
        let array = Array(bytes)
        let range = try JSONScanner.value(in: array, maxDepth: maxDepth)
        text = String(decoding: array[range], as: UTF8.self)
    }

    public init(validating text: String, maxDepth: Int = JSONScanner.maxDepth) throws(JSONSyntaxError) {
        try self.init(validating: Array(text.utf8), maxDepth: maxDepth)
    }

    /// A value the scanner already checked: `range` of `bytes`, as `JSONScanner.members` gave it.
    public init(checked bytes: [UInt8], _ range: Range<Int>) {
        text = String(decoding: bytes[range], as: UTF8.self)
    }

    /// Text that our own writer produced (or a literal); not checked.
    init(trusted text: String) {
        self.text = text
    }

    public var description: String { text }
}

/// Why a text is not the JSON the fabric accepts.
public struct JSONSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case syntax(String)
        case tooDeep(Int)
    }

    public var reason: Reason
    /// Byte offset where the problem was found.
    public var offset: Int

    public var description: String {
        switch reason {
        case .syntax(let what): "\(what) at byte \(offset)"
        case .tooDeep(let limit): "nested deeper than \(limit) levels"
        }
    }
}

/// A small validating JSON scanner (RFC 8259): it checks syntax, UTF-8 and nesting depth
/// without building a tree, and finds the byte ranges of an object's members, so callers can
/// carry a value's bytes as they came. Recursion is bounded by `maxDepth`, so no input can
/// exhaust the stack.
public enum JSONScanner {
    /// Nesting levels a business system's `data` may use.
    public static let maxDepth = 64

    /// The range of the one JSON value that `bytes` holds, whitespace around it excluded.
    public static func value(in bytes: [UInt8], maxDepth: Int = maxDepth) throws(JSONSyntaxError) -> Range<Int> {
        var cursor = Cursor(bytes: bytes, maxDepth: maxDepth)
        cursor.skipWhitespace()
        let start = cursor.position
        try cursor.scanValue(depth: 1)
        let end = cursor.position
        cursor.skipWhitespace()
        guard cursor.atEnd else { throw cursor.error("unexpected text after the JSON value") }
        return start..<end
    }

    /// One member of a JSON object: its decoded key and the byte range of its value.
    public struct Member: Sendable, Hashable {
        public var key: String
        public var value: Range<Int>
    }

    /// Why an object could not be read, and under which top-level key (if any).
    public struct ObjectError: Error, Sendable, Hashable {
        public var key: String?
        public var error: JSONSyntaxError
    }

    /// The members of the JSON object that `bytes` holds, in order. Each member's value is
    /// checked to `memberDepth` levels; an error names the member it was found in.
    public static func members(of bytes: [UInt8], memberDepth: Int = maxDepth) throws(ObjectError) -> [Member] {
        var cursor = Cursor(bytes: bytes, maxDepth: memberDepth)
        var members: [Member] = []
        var key: String?
        do throws(JSONSyntaxError) {
            cursor.skipWhitespace()
            guard cursor.peek == UInt8(ascii: "{") else { throw cursor.error("expected a JSON object") }
            cursor.position += 1
            cursor.skipWhitespace()
            if cursor.peek == UInt8(ascii: "}") {
                cursor.position += 1
            } else {
                while true {
                    cursor.skipWhitespace()
                    guard cursor.peek == UInt8(ascii: "\"") else { throw cursor.error("expected a member name in quotes") }
                    key = try cursor.scanString()
                    cursor.skipWhitespace()
                    guard cursor.peek == UInt8(ascii: ":") else { throw cursor.error("expected ':' after a member name") }
                    cursor.position += 1
                    cursor.skipWhitespace()
                    let start = cursor.position
                    try cursor.scanValue(depth: 1)
                    members.append(Member(key: key ?? "", value: start..<cursor.position))
                    key = nil
                    cursor.skipWhitespace()
                    if cursor.peek == UInt8(ascii: ",") {
                        cursor.position += 1
                        continue
                    }
                    guard cursor.peek == UInt8(ascii: "}") else { throw cursor.error("expected ',' or '}' in an object") }
                    cursor.position += 1
                    break
                }
            }
            cursor.skipWhitespace()
            guard cursor.atEnd else { throw cursor.error("unexpected text after the JSON object") }
        } catch {
            throw ObjectError(key: key, error: error)
        }
        return members
    }

    /// Decodes a JSON string literal (quotes included) that the scanner already accepted.
    public static func string(in bytes: [UInt8], _ range: Range<Int>) -> String? {
        var cursor = Cursor(bytes: bytes, maxDepth: 1)
        cursor.position = range.lowerBound
        guard cursor.peek == UInt8(ascii: "\""), let text = try? cursor.scanString(), cursor.position == range.upperBound
        else { return nil }
        return text
    }

    /// The element ranges of a JSON array literal that the scanner already accepted; nil if
    /// the value is not an array.
    public static func elements(in bytes: [UInt8], _ range: Range<Int>) -> [Range<Int>]? {
        guard range.lowerBound < bytes.count, bytes[range.lowerBound] == UInt8(ascii: "[") else { return nil }
        var cursor = Cursor(bytes: bytes, maxDepth: Int.max)
        cursor.position = range.lowerBound + 1
        var elements: [Range<Int>] = []
        cursor.skipWhitespace()
        if cursor.peek == UInt8(ascii: "]") { return elements }
        while cursor.position < range.upperBound {
            cursor.skipWhitespace()
            let start = cursor.position
            guard (try? cursor.scanValue(depth: 1)) != nil else { return nil }
            elements.append(start..<cursor.position)
            cursor.skipWhitespace()
            guard cursor.peek == UInt8(ascii: ",") else { break }
            cursor.position += 1
        }
        return elements
    }

    struct Cursor {
        let bytes: [UInt8]
        let maxDepth: Int
        var position = 0

        init(bytes: [UInt8], maxDepth: Int) {
            self.bytes = bytes
            self.maxDepth = maxDepth
        }

        var atEnd: Bool { position >= bytes.count }
        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

        func error(_ what: String) -> JSONSyntaxError {
            JSONSyntaxError(reason: .syntax(what), offset: position)
        }

        mutating func skipWhitespace() {
            while let byte = peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
        }

        mutating func scanValue(depth: Int) throws(JSONSyntaxError) {
            guard let byte = peek else { throw error("expected a JSON value") }
            switch byte {
            case UInt8(ascii: "{"):
                try enter(depth)
                position += 1
                skipWhitespace()
                if peek == UInt8(ascii: "}") {
                    position += 1
                    return
                }
                while true {
                    skipWhitespace()
                    guard peek == UInt8(ascii: "\"") else { throw error("expected a member name in quotes") }
                    try skipString()
                    skipWhitespace()
                    guard peek == UInt8(ascii: ":") else { throw error("expected ':' after a member name") }
                    position += 1
                    skipWhitespace()
                    try scanValue(depth: depth + 1)
                    skipWhitespace()
                    if peek == UInt8(ascii: ",") {
                        position += 1
                        continue
                    }
                    guard peek == UInt8(ascii: "}") else { throw error("expected ',' or '}' in an object") }
                    position += 1
                    return
                }
            case UInt8(ascii: "["):
                try enter(depth)
                position += 1
                skipWhitespace()
                if peek == UInt8(ascii: "]") {
                    position += 1
                    return
                }
                while true {
                    skipWhitespace()
                    try scanValue(depth: depth + 1)
                    skipWhitespace()
                    if peek == UInt8(ascii: ",") {
                        position += 1
                        continue
                    }
                    guard peek == UInt8(ascii: "]") else { throw error("expected ',' or ']' in an array") }
                    position += 1
                    return
                }
            case UInt8(ascii: "\""):
                try skipString()
            case UInt8(ascii: "t"):
                try literal("true")
            case UInt8(ascii: "f"):
                try literal("false")
            case UInt8(ascii: "n"):
                try literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try scanNumber()
            default:
                throw error("expected a JSON value")
            }
        }

        private func enter(_ depth: Int) throws(JSONSyntaxError) {
            guard depth <= maxDepth else { throw JSONSyntaxError(reason: .tooDeep(maxDepth), offset: position) }
        }

        private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
            let count = word.utf8CodeUnitCount
            guard position + count <= bytes.count else { throw error("expected a JSON value") }
            let matches = word.withUTF8Buffer { expected in
                (0..<count).allSatisfy { bytes[position + $0] == expected[$0] }
            }
            guard matches else { throw error("expected a JSON value") }
            position += count
        }

        private mutating func digits() -> Int {
            let start = position
            while let byte = peek, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { position += 1 }
            return position - start
        }

        private mutating func scanNumber() throws(JSONSyntaxError) {
            if peek == UInt8(ascii: "-") { position += 1 }
            if peek == UInt8(ascii: "0") {
                position += 1
            } else {
                guard digits() > 0 else { throw error("invalid number") }
            }
            if peek == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw error("invalid number: digits must follow '.'") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                position += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw error("invalid number: digits must follow the exponent") }
            }
        }

        /// Skips a string literal, checking escapes and UTF-8.
        private mutating func skipString() throws(JSONSyntaxError) {
            var none: [UInt8]? = nil
            try scanString(into: &none)
        }

        /// Reads a string literal into a `String`. A literal without escapes is taken as it is
        /// (one copy); escapes are decoded as they come.
        mutating func scanString() throws(JSONSyntaxError) -> String {
            let start = position + 1
            var collected: [UInt8]? = []
            try scanString(into: &collected)
            guard let collected else { return "" }
            if collected.count == position - 1 - start {
                return String(decoding: bytes[start..<(position - 1)], as: UTF8.self)
            }
            return String(decoding: collected, as: UTF8.self)
        }

        /// Checks one string literal; when `sink` is non-nil, appends the decoded UTF-8 to it.
        private mutating func scanString(into sink: inout [UInt8]?) throws(JSONSyntaxError) {
            position += 1  // the opening quote
            let collecting = sink != nil
            var out = sink ?? []
            sink = nil  // `out` holds the only reference while it grows
            defer { if collecting { sink = out } }
            while true {
                guard position < bytes.count else { throw error("unterminated string") }
                let byte = bytes[position]
                switch byte {
                case UInt8(ascii: "\""):
                    position += 1
                    return
                case UInt8(ascii: "\\"):
                    position += 1
                    guard let escaped = peek else { throw error("unterminated string") }
                    position += 1
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): if collecting { out.append(escaped) }
                    case UInt8(ascii: "b"): if collecting { out.append(0x08) }
                    case UInt8(ascii: "f"): if collecting { out.append(0x0C) }
                    case UInt8(ascii: "n"): if collecting { out.append(0x0A) }
                    case UInt8(ascii: "r"): if collecting { out.append(0x0D) }
                    case UInt8(ascii: "t"): if collecting { out.append(0x09) }
                    case UInt8(ascii: "u"):
                        let unit = try hex4()
                        var scalar = unit
                        if (0xD800...0xDBFF).contains(unit) {
                            // A high surrogate must be followed by an escaped low one.
                            guard peek == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u")
                            else { throw error("unpaired surrogate in \\u escape") }
                            position += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate in \\u escape") }
                            scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(unit) {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        if collecting, let value = Unicode.Scalar(scalar) {
                            out.append(contentsOf: UTF8.encode(value) ?? UTF8.EncodedScalar())
                        }
                    default:
                        throw error("invalid escape in string")
                    }
                case 0x00..<0x20:
                    throw error("control character in string")
                case 0x00..<0x80:
                    if collecting { out.append(byte) }
                    position += 1
                default:
                    let start = position
                    try utf8Sequence()
                    if collecting { out.append(contentsOf: bytes[start..<position]) }
                }
            }
        }

        private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
            guard position + 4 <= bytes.count else { throw error("invalid \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw error("invalid \\u escape")
                }
                value = value << 4 | digit
                position += 1
            }
            return value
        }

        /// One multi-byte UTF-8 sequence, well-formed per the Unicode standard (no overlongs,
        /// no surrogates, nothing above U+10FFFF).
        private mutating func utf8Sequence() throws(JSONSyntaxError) {
            let lead = bytes[position]
            let length: Int
            var lowest: UInt8 = 0x80
            var highest: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lowest = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; highest = 0x9F
            case 0xF0: length = 4; lowest = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; highest = 0x8F
            default: throw error("invalid UTF-8 in string")
            }
            guard position + length <= bytes.count else { throw error("invalid UTF-8 in string") }
            for index in 1..<length {
                let byte = bytes[position + index]
                let (low, high) = index == 1 ? (lowest, highest) : (0x80, 0xBF)
                guard byte >= low, byte <= high else { throw error("invalid UTF-8 in string") }
            }
            position += length
        }
    }
}

/// Read access to one JSON object's members by name, their values still as bytes: for formats
/// Herald writes itself (the Kafka envelope) and that carry a client's `data` to pass on as it is.
public struct JSONObjectView: Sendable {
    private let bytes: [UInt8]
    private let members: [String: Range<Int>]

    /// nil unless `bytes` is one valid JSON object (members checked to `memberDepth` levels).
    public init?(_ bytes: [UInt8], memberDepth: Int = JSONScanner.maxDepth + 2) {
        guard let list = try? JSONScanner.members(of: bytes, memberDepth: memberDepth) else { return nil }
        self.bytes = bytes
        var members: [String: Range<Int>] = [:]
        members.reserveCapacity(list.count)
        for member in list { members[member.key] = member.value }
        self.members = members
    }

    public func has(_ key: String) -> Bool { members[key] != nil }

    /// The member's value as it is written (already checked by the scanner).
    public func raw(_ key: String) -> RawJSON? {
        members[key].map { RawJSON(trusted: String(decoding: bytes[$0], as: UTF8.self)) }
    }

    public func string(_ key: String) -> String? {
        members[key].flatMap { JSONScanner.string(in: bytes, $0) }
    }

    public func integer(_ key: String) -> Int64? {
        members[key].flatMap { Int64(String(decoding: bytes[$0], as: UTF8.self)) }
    }

    public func bool(_ key: String) -> Bool? {
        switch members[key].map({ String(decoding: bytes[$0], as: UTF8.self) }) {
        case "true": true
        case "false": false
        default: nil
        }
    }

    public func object(_ key: String) -> JSONObjectView? {
        members[key].flatMap { JSONObjectView(Array(bytes[$0]), memberDepth: JSONScanner.maxDepth + 1) }
    }
}
