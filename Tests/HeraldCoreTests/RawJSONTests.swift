import Foundation
import Testing

@testable import HeraldCore

@Suite("RawJSON: a business system's data checked once and carried as it came")
struct RawJSONTests {
    let codec = try! ClientIDCodec(base64Keys: testKey(22))

    @Test(
        "the scanner accepts JSON values and keeps their text",
        arguments: [
            "null", "true", "false", "0", "-0", "18446744073709551615", "1.50", "-1e400", "1E+2", "\"\"", "\"a\\u00e9\\ud83d\\ude00/\\n\"",
            "\"é日本\"", "[]", "{}", "[1,[2,[3]]]", "{\"b\":1,\"a\":[true,null]}", " { \"x\" : \"y\" } ",
        ])
    func accepts(_ text: String) throws {
        let raw = try RawJSON(validating: text)
        #expect(raw.text == text.trimmingCharacters(in: .whitespaces))
    }

    @Test(
        "the scanner refuses what is not JSON",
        arguments: [
            "", "nul", "01", "1.", ".5", "1e", "+1", "[1,]", "{\"a\"}", "{\"a\":1,}", "{a:1}", "\"unterminated", "\"\\x\"", "\"\\ud83d\"",
            "\"\\ude00\"", "\"tab\there\"", "[1] 2", "NaN", "Infinity", "'single'", "[", "{\"a\":[}",
        ])
    func refuses(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try RawJSON(validating: text) }
    }

    @Test("invalid UTF-8 inside a string is refused: overlongs, surrogates, truncated sequences, bytes past U+10FFFF")
    func refusesInvalidUTF8() {
        for bytes: [UInt8] in [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0x80]] {
            let text: [UInt8] = [0x22] + bytes + [0x22]
            #expect(throws: JSONSyntaxError.self, "\(bytes)") { try RawJSON(validating: text) }
        }
        #expect(throws: Never.self) { try RawJSON(validating: [0x22, 0xF0, 0x9F, 0x98, 0x80, 0x22]) }
    }

    @Test("nesting: 64 levels pass, 65 are refused as too deep, and 100,000 levels cannot exhaust the stack")
    func depth() throws {
        let deep64 = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(throws: Never.self) { try RawJSON(validating: deep64) }
        let deep65 = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONSyntaxError(reason: .tooDeep(64), offset: 64)) { try RawJSON(validating: deep65) }
        let objects = String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)
        #expect(throws: JSONSyntaxError.self) { try RawJSON(validating: objects) }
    }

    @Test("members of an object: keys decoded, values as byte ranges, errors name the member")
    func members() throws {
        let bytes = Array(#"{"clientId":"x\"y","data":{"n":18446744073709551615},"code":7}"#.utf8)
        let members = try JSONScanner.members(of: bytes)
        #expect(members.map(\.key) == ["clientId", "data", "code"])
        #expect(String(decoding: bytes[members[1].value], as: UTF8.self) == #"{"n":18446744073709551615}"#)
        #expect(JSONScanner.string(in: bytes, members[0].value) == "x\"y")
        let deep = Array(("{\"ok\":1,\"data\":" + String(repeating: "[", count: 65) + String(repeating: "]", count: 65) + "}").utf8)
        #expect(throws: JSONScanner.ObjectError(key: "data", error: JSONSyntaxError(reason: .tooDeep(64), offset: 79))) {
            try JSONScanner.members(of: deep)
        }
        #expect(throws: JSONScanner.ObjectError.self) { try JSONScanner.members(of: Array("[1]".utf8)) }
    }

    @Test("data travels verbatim: through the Kafka envelope and into the push frame, 2^64-1 and key order intact")
    func fidelity() throws {
        let data = try RawJSON(validating: #"{"big": 18446744073709551615, "f": 1.50, "s": "é\u00e9", "z": 1, "a": 2}"#)
        let id = ClientID(address: "10.0.0.2:8080", slot: 3, epoch: 9, serial: 1, systemId: "shop")
        let message = BusMessage(
            messageId: "m", systemId: "shop", target: .client(id, raw: codec.seal(id)),
            body: .push(PushPayload(sendUserId: "u", code: 1, msg: "hi \"there\"", data: data)), acceptedAt: 5, acceptedBy: "n")
        let decoded = try #require(WireFormat.decode(WireFormat.encode(message), codec: codec))
        #expect(decoded == message)
        let frame = try #require(decoded.pushFrame())
        #expect(frame.contains(#""data":{"big": 18446744073709551615, "f": 1.50, "s": "é\u00e9", "z": 1, "a": 2}"#))
        // The rest of the frame is the JSON go-websocket clients parse.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(frame.utf8)) as? [String: Any])
        #expect(object["msg"] as? String == "hi \"there\"")
        #expect(object["messageId"] as? String == "m")
        let inspected = try #require(WireFormat.inspect(WireFormat.encode(message)))
        #expect(inspected.payload.text.contains("18446744073709551615"))
    }

    @Test("JSONWriter quotes any string so that JSON decoders read it back unchanged")
    func quoting() throws {
        var samples = ["", "plain", "quote\" backslash\\ slash/", "\u{0}\u{1}\u{1f}\n\r\t\u{8}\u{c}", "é日本😀", "\u{7f}"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let scalars = (0..<Int.random(in: 0..<20, using: &generator)).compactMap { _ in
                Unicode.Scalar(UInt32.random(in: 0..<0x2FF, using: &generator))
            }
            samples.append(String(String.UnicodeScalarView(scalars)))
        }
        for sample in samples {
            let ours = JSONWriter.quoted(sample)
            #expect(try JSONDecoder().decode(String.self, from: Data(ours.utf8)) == sample)
            #expect(try RawJSON(validating: ours).text == ours)
        }
    }
}

@Suite("Bounds in bytes: trace, journal, idempotency cache")
struct ByteBoundTests {
    @Test("a huge raw client ID is kept as a short prefix in a trace step")
    func traceStepPrefix() {
        let step = TraceStep(.dropped, node: "n", clientId: String(repeating: "x", count: 900_000))
        #expect((step.clientId?.utf8.count ?? 0) <= FieldLimits.recordedClientIdBytes + 3)
        let ours = TraceStep(.delivered, node: "n", clientId: "short")
        #expect(ours.clientId == "short")
    }

    @Test("the in-memory trace stays within its byte bound, oldest messages first out")
    func traceBytes() async {
        let trace = InMemoryTrace(capacity: 1_000_000, capacityBytes: 200_000)
        for index in 0..<10_000 {
            trace.record("m\(index)", TraceStep(.dropped, node: "n", clientId: String(repeating: "c", count: 100), reason: "x"))
        }
        #expect(trace.bytes <= 200_000)
        #expect(await trace.steps(for: "m9999") != nil)
        #expect(await trace.steps(for: "m0") == nil)
    }

    @Test("the journal stays within its byte bound")
    func journalBytes() {
        let journal = MessageJournal(capacity: 1_000_000, capacityBytes: 1_000_000)
        let data = try! RawJSON(validating: "\"" + String(repeating: "d", count: 50_000) + "\"")
        for index in 0..<200 {
            _ = journal.append(
                BusMessage(
                    messageId: "m\(index)", systemId: "s", target: .system, body: .push(PushPayload(data: data)), acceptedAt: 0,
                    acceptedBy: "n"), topic: "t", partition: 0, at: 0)
        }
        #expect(journal.bytes <= 1_000_000)
        #expect(journal.count >= 10 && journal.count < 200)
    }

    @Test("an Idempotency-Key reused with another request is a conflict; the cache is bounded in bytes")
    func idempotency() async {
        let cache = IdempotencyCache<String>(capacityBytes: 10_000, weight: { $0.utf8.count })
        let first = await cache.answer(for: "k", fingerprint: [1]) { "one" }
        guard case .answered("one") = first else {
            Issue.record("first call answers its work: \(first)")
            return
        }
        let again = await cache.answer(for: "k", fingerprint: [1]) { "two" }
        guard case .answered("one") = again else {
            Issue.record("a repeat gets the first answer: \(again)")
            return
        }
        guard case .conflict = await cache.answer(for: "k", fingerprint: [2], work: { "three" }) else {
            Issue.record("another body with the same key is a conflict")
            return
        }
        for index in 0..<100 {
            _ = await cache.answer(for: "big\(index)", fingerprint: []) { String(repeating: "a", count: 1_000) }
        }
        #expect(await cache.bytes <= 10_000)
        #expect(await cache.count < 100)
    }
}
