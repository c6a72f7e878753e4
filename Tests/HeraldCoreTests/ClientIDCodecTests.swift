import Foundation
import Testing

@testable import HeraldCore

@Suite("ClientIDCodec")
struct ClientIDCodecTests {
    static let address40 = "abcdefghij.klmnopqrst.uvwxyz0123.456:789"
    let codec = try! ClientIDCodec(base64Keys: testKey(1))

    func sample(address: String = ClientIDCodecTests.address40, serial: UInt64 = 42) -> ClientID {
        ClientID(address: address, slot: 7, epoch: 1_700_000_000_123, serial: serial, systemId: "shop")
    }

    func expectBadClientID(_ text: String, using codec: ClientIDCodec? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        let codec = codec ?? self.codec
        let error = #expect(throws: HeraldError.self, "opening \(text.debugDescription)", sourceLocation: sourceLocation) {
            try codec.open(text)
        }
        #expect(error?.code == 4001, sourceLocation: sourceLocation)
        #expect(error?.status == 400, sourceLocation: sourceLocation)
    }

    @Test func roundTripKeepsEveryField() throws {
        #expect(Self.address40.utf8.count == ClientIDCodec.maxAddressBytes)
        let id = ClientID(
            address: Self.address40, slot: .max, epoch: .max, serial: .max - 1, systemId: "system-with-long-name")
        let opened = try codec.open(codec.seal(id))
        #expect(opened == id)
        #expect(opened.address == Self.address40)
        #expect(opened.slot == .max)
        #expect(opened.epoch == .max)
        #expect(opened.serial == UInt64.max - 1)
        #expect(opened.systemTag == id.systemTag)
        #expect(opened.belongs(to: "system-with-long-name"))

        let small = ClientID(address: "", slot: 0, epoch: 0, serial: 0, systemId: "")
        #expect(try codec.open(codec.seal(small)) == small)

        let unicode = sample(address: "nœud-é.local:1")
        #expect(try codec.open(codec.seal(unicode)) == unicode)
    }

    @Test(arguments: [0, 1, 9, 10, 17, 23, 31, 39, 40])
    func encodedFormIsShortURLSafeBase64WithoutPadding(addressLength: Int) throws {
        let id = sample(address: String(repeating: "a", count: addressLength))
        let text = codec.seal(id)
        #expect(text.count <= ClientIDCodec.maxEncodedLength)
        #expect(!text.isEmpty)
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        #expect(text.allSatisfy { allowed.contains($0) }, "\(text)")
        #expect(!text.contains("="))
        #expect(try codec.open(text) == id)
    }

    @Test func flippingAnyOfSeveralCharactersIsRejected() throws {
        let text = codec.seal(sample())
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        let chars = Array(text)
        let positions = [0, 1, 2, 3, 8, 16, 20, 30, 40, chars.count / 2, chars.count - 10, chars.count - 2]
        for position in positions {
            var tampered = chars
            let value = try #require(alphabet.firstIndex(of: chars[position]))
            // Flipping the high bit of the 6-bit digit always changes the decoded bytes.
            tampered[position] = alphabet[value ^ 0b10_0000]
            expectBadClientID(String(tampered))
        }
    }

    /// The last character of an unpadded base64 text may carry unused low bits. Changing it must
    /// still be refused: API.md says a tampered ID is answered 4001 (and IDs are URL-safe base64
    /// without padding, so other spellings of the same bytes were not issued by the cluster).
    @Test func changingTheLastCharacterIsRejected() throws {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for addressLength in [38, 39, 40] {
            let text = codec.seal(sample(address: String(repeating: "x", count: addressLength)))
            var chars = Array(text)
            let value = try #require(alphabet.firstIndex(of: chars[chars.count - 1]))
            chars[chars.count - 1] = alphabet[value ^ 1]
            expectBadClientID(String(chars))
        }
        // Other spellings of the same bytes are not the ID that was issued either.
        let text = codec.seal(sample())
        expectBadClientID(text + "=")
        expectBadClientID("=" + text)
        let standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        if standard != text { expectBadClientID(standard) }
    }

    @Test func truncatedEmptyGarbageAndOverlongAreRejected() {
        let text = codec.seal(sample())
        expectBadClientID(String(text.dropLast()))
        expectBadClientID(String(text.dropLast(2)))
        expectBadClientID(String(text.dropLast(4)))
        expectBadClientID(String(text.dropFirst()))
        expectBadClientID(String(text.prefix(20)))
        expectBadClientID(String(text.prefix(40)))
        expectBadClientID("")
        expectBadClientID("A")
        expectBadClientID("hello world")
        expectBadClientID("!!!!!!!!")
        expectBadClientID("====")
        expectBadClientID("../../etc/passwd")
        expectBadClientID("{\"clientId\":1}")
        expectBadClientID(String(repeating: "A", count: 128))
        expectBadClientID(String(repeating: "A", count: 129))
        expectBadClientID(String(repeating: "A", count: 10_000))
        expectBadClientID(text + "AAAA")
        expectBadClientID(text + text)
        expectBadClientID(String(repeating: "é", count: 100))
    }

    @Test func idsOfAnotherKeyAreRejected() {
        let foreign = try! ClientIDCodec(base64Keys: testKey(2))
        expectBadClientID(foreign.seal(sample()))
        #expect(throws: Never.self) { try foreign.open(foreign.seal(sample())) }
    }

    @Test func keyRotation() throws {
        let old = try ClientIDCodec(base64Keys: testKey(10))
        let rotated = try ClientIDCodec(base64Keys: "\(testKey(11)), \(testKey(10))")
        let newOnly = try ClientIDCodec(base64Keys: testKey(11))
        let id = sample()

        // IDs sealed before the rotation still open.
        #expect(try rotated.open(old.seal(id)) == id)
        // New IDs are sealed with the first key: the new-only codec opens them, the old one cannot.
        let fresh = rotated.seal(id)
        #expect(try rotated.open(fresh) == id)
        #expect(try newOnly.open(fresh) == id)
        expectBadClientID(fresh, using: old)
    }

    @Test func sealingTwiceGivesDifferentTexts() throws {
        let id = sample()
        var texts = Set<String>()
        for _ in 0..<50 { texts.insert(codec.seal(id)) }
        #expect(texts.count == 50)
        for text in texts { #expect(try codec.open(text) == id) }
    }

    @Test func badKeysAreRefused() {
        #expect(throws: ClientIDCodecError.noKeys) { try ClientIDCodec(base64Keys: "") }
        #expect(throws: ClientIDCodecError.noKeys) { try ClientIDCodec(base64Keys: " , ,") }
        #expect(throws: ClientIDCodecError.noKeys) { try ClientIDCodec(keys: []) }

        for size in [1, 16, 24, 31, 33, 64] {
            let error = #expect(throws: ClientIDCodecError.self, "key of \(size) bytes") {
                try ClientIDCodec(base64Keys: testKey(3, count: size))
            }
            guard case .badKey(let why)? = error else {
                Issue.record("expected badKey for \(size) bytes, got \(String(describing: error))")
                continue
            }
            #expect(why.contains("32"))
        }
        // One bad key in a list spoils it.
        #expect(throws: ClientIDCodecError.self) { try ClientIDCodec(base64Keys: "\(testKey(3)),\(testKey(4, count: 16))") }

        for text in ["not base64!", "%%%%", "abc*def", "A", "12345"] {
            let error = #expect(throws: ClientIDCodecError.self, "key \(text)") { try ClientIDCodec(base64Keys: text) }
            guard case .badKey? = error else {
                Issue.record("expected badKey for \(text), got \(String(describing: error))")
                continue
            }
        }
        #expect(ClientIDCodecError.noKeys.description.contains("client-id-key"))
        #expect(ClientIDCodecError.badKey("x").description.contains("x"))
    }

    @Test func keysInEitherBase64Alphabet() throws {
        // 0xfb bytes encode to "+" and "/" in standard base64, "-" and "_" in the URL-safe one.
        let bytes = Data(repeating: 0xfb, count: 32)
        let standard = bytes.base64EncodedString()
        #expect(standard.contains("+") || standard.contains("/"))
        let urlSafe = standard.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        let a = try ClientIDCodec(base64Keys: standard)
        let b = try ClientIDCodec(base64Keys: urlSafe)
        #expect(try b.open(a.seal(sample())) == sample())
        #expect(try a.open(b.seal(sample())) == sample())
    }

    @Test func generatedKeysAreUsableAndDistinct() throws {
        let key = ClientIDCodec.generateKey()
        let raw = try #require(Data(base64Encoded: key))
        #expect(raw.count == 32)
        #expect(ClientIDCodec.generateKey() != key)
        let codec = try ClientIDCodec(base64Keys: key)
        #expect(try codec.open(codec.seal(sample())) == sample())
        expectBadClientID(codec.seal(sample()), using: try ClientIDCodec(base64Keys: ClientIDCodec.generateKey()))
    }

    @Test func belongsToTheSystemItWasIssuedFor() throws {
        let id = ClientID(address: "a", slot: 0, epoch: 1, serial: 1, systemId: "alpha")
        #expect(id.belongs(to: "alpha"))
        #expect(!id.belongs(to: "beta"))
        #expect(!id.belongs(to: "Alpha"))
        #expect(!id.belongs(to: ""))
        #expect(id.systemTag == ClientID.tag(for: "alpha"))
        #expect(ClientID.tag(for: "alpha") != ClientID.tag(for: "beta"))
        // The tag survives sealing.
        let opened = try codec.open(codec.seal(id))
        #expect(opened.belongs(to: "alpha"))
        #expect(!opened.belongs(to: "beta"))
    }

    @Test func sealBytesRoundTrip() throws {
        for plain in [Data("s3cret".utf8), Data([0]), Data(repeating: 0xab, count: 1000)] {
            let sealed = codec.sealBytes(plain)
            #expect(sealed != plain)
            #expect(sealed.count == plain.count + 2 + 12 + 16)
            #expect(codec.openBytes(sealed) == plain)
            #expect(codec.sealBytes(plain) != sealed)
        }
        let sealed = codec.sealBytes(Data("s3cret".utf8))
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        #expect(codec.openBytes(tampered) == nil)
        var badVersion = sealed
        badVersion[0] = 2
        #expect(codec.openBytes(badVersion) == nil)
        var badKeyID = sealed
        badKeyID[1] ^= 0xff
        #expect(codec.openBytes(badKeyID) == nil)
        #expect(codec.openBytes(Data()) == nil)
        #expect(codec.openBytes(sealed.prefix(20)) == nil)
        #expect(codec.openBytes(sealed.dropLast()) == nil)
        // A slice with a non-zero start index opens too.
        let padded = Data([9, 9, 9]) + sealed
        #expect(codec.openBytes(padded.dropFirst(3)) == Data("s3cret".utf8))

        let other = try ClientIDCodec(base64Keys: testKey(99))
        #expect(other.openBytes(sealed) == nil)
        let rotated = try ClientIDCodec(base64Keys: "\(testKey(99)),\(testKey(1))")
        #expect(rotated.openBytes(sealed) == Data("s3cret".utf8))
    }

    /// openBytes must undo sealBytes for every input, the empty one included.
    @Test func sealBytesOfEmptyDataOpens() {
        let sealed = codec.sealBytes(Data())
        #expect(codec.openBytes(sealed) == Data())
    }
}

@Suite("Base64URL")
struct Base64URLTests {
    /// Foundation's base64 with the URL alphabet and no padding: the reference.
    private func reference(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    @Test("encode matches Foundation's spelling and decode inverts it, for every length up to 70")
    func roundTrip() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Base64URL.encode(bytes)
            #expect(text == reference(bytes), "length \(length)")
            #expect(Base64URL.decode(text) == bytes, "length \(length)")
        }
    }

    @Test("decode refuses every other spelling: padding, the other alphabet, stray bits, bad lengths")
    func strict() {
        let canonical = Base64URL.encode([0xFB, 0xFF, 0x01])  // "-_8B"
        #expect(Base64URL.decode(canonical) == [0xFB, 0xFF, 0x01])
        #expect(Base64URL.decode("+/8B") == nil, "standard alphabet")
        #expect(Base64URL.decode("AQ==") == nil, "padding")
        #expect(Base64URL.decode("AQ") == [0x01])
        #expect(Base64URL.decode("AR") == nil, "stray low bits")
        #expect(Base64URL.decode("A") == nil, "length 1 mod 4")
        #expect(Base64URL.decode("AQ.") == nil)
        #expect(Base64URL.decode("") == [])
    }
}
