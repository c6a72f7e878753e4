/// Writes JSON text by hand for the frames and records that carry a business system's `data`:
/// it splices `RawJSON` in as it came, and it cannot fail, so nothing in it is forced.
/// Members are written in the order given; callers keep keys sorted where a format promised it.
public struct JSONWriter: Sendable {
    public private(set) var text: String
    private var needsComma = [false]

    public init(capacity: Int = 256) {
        text = ""
        text.reserveCapacity(capacity)
    }

    /// Writes the given object and answers the text.
    public static func object(capacity: Int = 256, _ body: (inout JSONWriter) -> Void) -> String {
        var writer = JSONWriter(capacity: capacity)
        writer.beginObject()
        body(&writer)
        writer.endObject()
        return writer.text
    }

    public mutating func beginObject() {
        separate()
        text.append("{")
        needsComma.append(false)
    }

    public mutating func endObject() {
        needsComma.removeLast()
        text.append("}")
    }

    public mutating func beginArray() {
        separate()
        text.append("[")
        needsComma.append(false)
    }

    public mutating func endArray() {
        needsComma.removeLast()
        text.append("]")
    }

    /// A member name inside an object; the value follows with one of the value writers.
    public mutating func key(_ name: String) {
        separate()
        Self.appendQuoted(name, to: &text)
        text.append(":")
        needsComma[needsComma.count - 1] = false
    }

    public mutating func string(_ value: String) {
        separate()
        Self.appendQuoted(value, to: &text)
    }

    public mutating func integer(_ value: some BinaryInteger) {
        separate()
        text.append(String(value))
    }

    public mutating func bool(_ value: Bool) {
        separate()
        text.append(value ? "true" : "false")
    }

    public mutating func null() {
        separate()
        text.append("null")
    }

    public mutating func raw(_ value: RawJSON) {
        separate()
        text.append(value.text)
    }

    public mutating func member(_ name: String, _ value: String) {
        key(name)
        string(value)
    }

    public mutating func member(_ name: String, _ value: some BinaryInteger) {
        key(name)
        integer(value)
    }

    public mutating func member(_ name: String, _ value: Bool) {
        key(name)
        bool(value)
    }

    public mutating func member(_ name: String, _ value: RawJSON) {
        key(name)
        raw(value)
    }

    private mutating func separate() {
        let last = needsComma.count - 1
        if needsComma[last] { text.append(",") }
        needsComma[last] = true
    }

    /// A JSON string literal, escaped as JSONEncoder does with `.withoutEscapingSlashes`.
    public static func quoted(_ value: String) -> String {
        var text = ""
        text.reserveCapacity(value.utf8.count + 2)
        appendQuoted(value, to: &text)
        return text
    }

    static func appendQuoted(_ value: String, to text: inout String) {
        text.append("\"")
        var plainStart = value.utf8.startIndex
        var index = plainStart
        let utf8 = value.utf8
        while index != utf8.endIndex {
            let byte = utf8[index]
            let escape: String?
            switch byte {
            case UInt8(ascii: "\""): escape = "\\\""
            case UInt8(ascii: "\\"): escape = "\\\\"
            case 0x0A: escape = "\\n"
            case 0x0D: escape = "\\r"
            case 0x09: escape = "\\t"
            case 0x08: escape = "\\b"
            case 0x0C: escape = "\\f"
            case 0x00..<0x20:
                let hex = String(byte, radix: 16)
                escape = "\\u00" + (hex.count == 1 ? "0" + hex : hex)
            default: escape = nil
            }
            if let escape {
                text.append(contentsOf: value[plainStart..<index])
                text.append(escape)
                plainStart = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        text.append(contentsOf: value[plainStart..<utf8.endIndex])
        text.append("\"")
    }
}

extension JSONValue {
    /// This value as JSON text (for values Herald builds itself, like a replay line's payload).
    public func write(to writer: inout JSONWriter) {
        switch self {
        case .null: writer.null()
        case .bool(let value): writer.bool(value)
        case .integer(let value): writer.integer(value)
        case .double(let value):
            if value.isFinite { writer.raw(RawJSON(trusted: "\(value)")) } else { writer.null() }
        case .string(let value): writer.string(value)
        case .array(let values):
            writer.beginArray()
            for value in values { value.write(to: &writer) }
            writer.endArray()
        case .object(let members):
            writer.beginObject()
            for (key, value) in members.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
                writer.key(key)
                value.write(to: &writer)
            }
            writer.endObject()
        }
    }

    public var rawJSON: RawJSON {
        var writer = JSONWriter()
        write(to: &writer)
        return RawJSON(trusted: writer.text)
    }
}
