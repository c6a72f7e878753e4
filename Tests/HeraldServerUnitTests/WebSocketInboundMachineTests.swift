import NIOCore
import NIOWebSocket
import Testing

@testable import HeraldServer

/// RFC 6455 sections 5 and 7, one rule a test, on the state machine the session follows.
@Suite("WebSocketInboundMachine")
struct WebSocketInboundMachineTests {
    static let mask = WebSocketMaskingKey([1, 2, 3, 4] as [UInt8])!

    func frame(
        _ opcode: WebSocketOpcode, _ bytes: [UInt8] = [], fin: Bool = true, masked: Bool = true, rsv1: Bool = false,
        rsv2: Bool = false, rsv3: Bool = false
    ) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        let key: WebSocketMaskingKey? = masked ? Self.mask : nil
        // The decoder hands frames over still masked; `unmaskedData` undoes it.
        if let key { data.webSocketMask(key) }
        return WebSocketFrame(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode, maskKey: key, data: data)
    }

    func machine(max: Int = 1024, rate: Double = 0) -> WebSocketInboundMachine {
        WebSocketInboundMachine(maxMessageBytes: max, frameRate: rate)
    }

    func closeFrame(code: UInt16, reason: [UInt8] = []) -> WebSocketFrame {
        var bytes = [UInt8(code >> 8), UInt8(code & 0xFF)]
        bytes += reason
        return frame(.connectionClose, bytes)
    }

    func failure(_ action: WebSocketInboundMachine.Action) -> UInt16? {
        guard case .fail(let code, _) = action else { return nil }
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: code)
        return buffer.readInteger(as: UInt16.self)
    }

    @Test func textIsDelivered() {
        var m = machine()
        #expect(m.receive(frame(.text, Array("ping".utf8))) == .text(ByteBuffer(string: "ping")))
    }

    @Test("invalid UTF-8 in a text message closes 1007, in one frame or across fragments")
    func invalidUTF8() {
        var m = machine()
        #expect(failure(m.receive(frame(.text, [0x61, 0xC0, 0xAF]))) == 1007)
        var fragmented = machine()
        #expect(fragmented.receive(frame(.text, [0xE2, 0x82], fin: false)) == .none)
        #expect(fragmented.receive(frame(.continuation, [0xAC])) == .text(ByteBuffer(bytes: [0xE2, 0x82, 0xAC])))
        #expect(failure(fragmented.receive(frame(.text, [0xE2], fin: false))) == nil)
        #expect(failure(fragmented.receive(frame(.continuation, [0x28]))) == 1007)
    }

    @Test("an unmasked client frame closes 1002")
    func unmasked() {
        var m = machine()
        #expect(failure(m.receive(frame(.text, Array("hi".utf8), masked: false))) == 1002)
    }

    @Test("reserved bits without an extension close 1002", arguments: [(true, false, false), (false, true, false), (false, false, true)])
    func reservedBits(_ bits: (Bool, Bool, Bool)) {
        var m = machine()
        #expect(failure(m.receive(frame(.text, [0x61], rsv1: bits.0, rsv2: bits.1, rsv3: bits.2))) == 1002)
    }

    @Test("a continuation with nothing to continue closes 1002")
    func orphanContinuation() {
        var m = machine()
        #expect(failure(m.receive(frame(.continuation, [0x61]))) == 1002)
    }

    @Test("a new data frame inside a fragmented message closes 1002")
    func interleavedMessage() {
        var m = machine()
        #expect(m.receive(frame(.text, [0x61], fin: false)) == .none)
        #expect(m.receive(frame(.ping, [1])) == .pong(ByteBuffer(bytes: [1])), "control frames may come between fragments")
        #expect(failure(m.receive(frame(.binary, [0x62]))) == 1002)
    }

    @Test("a whole message over the limit closes 1009, whether in one frame or in fragments")
    func tooLarge() {
        var one = machine(max: 8)
        #expect(failure(one.receive(frame(.text, Array(repeating: 0x61, count: 9)))) == 1009)
        var fragments = machine(max: 8)
        #expect(fragments.receive(frame(.text, Array(repeating: 0x61, count: 5), fin: false)) == .none)
        #expect(failure(fragments.receive(frame(.continuation, Array(repeating: 0x61, count: 5)))) == 1009)
    }

    @Test("a close with one byte of payload closes 1002")
    func oneByteClose() {
        var m = machine()
        #expect(failure(m.receive(frame(.connectionClose, [3]))) == 1002)
    }

    @Test("a close code that may not be sent is answered 1002, never echoed", arguments: [UInt16(0), 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
    func forbiddenCloseCode(_ code: UInt16) {
        var m = machine()
        #expect(failure(m.receive(closeFrame(code: code))) == 1002)
    }

    @Test("sendable close codes are echoed", arguments: [UInt16(1000), 1001, 1003, 1007, 1011, 1013, 3000, 4999])
    func closeEchoed(_ code: UInt16) {
        var m = machine()
        #expect(m.receive(closeFrame(code: code, reason: Array("bye".utf8))) == .closed(echo: code, handshakeDone: false))
    }

    @Test("a close reason that is not UTF-8 closes 1007")
    func closeReasonNotUTF8() {
        var m = machine()
        #expect(failure(m.receive(closeFrame(code: 1000, reason: [0xFF, 0xFE]))) == 1007)
    }

    @Test("after our close, the client's close completes the handshake and pings get no pong")
    func afterOurClose() {
        var m = machine()
        m.sentClose()
        #expect(m.receive(frame(.ping, [])) == .none)
        #expect(m.receive(closeFrame(code: 1000)) == .closed(echo: 1000, handshakeDone: true))
    }

    @Test("frames past the rate (after the burst) close 1008; the bucket refills with time")
    func frameRate() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var m = WebSocketInboundMachine(maxMessageBytes: 1024, frameRate: 10, now: start)
        for _ in 0..<20 { #expect(failure(m.receive(frame(.text, [0x61]), now: start)) == nil) }
        #expect(failure(m.receive(frame(.text, [0x61]), now: start)) == 1008)
        var refilled = WebSocketInboundMachine(maxMessageBytes: 1024, frameRate: 10, now: start)
        for step in 0..<200 {
            // 10 a second, spread out: never over.
            #expect(failure(refilled.receive(frame(.text, [0x61]), now: start + .milliseconds(Int64(step) * 100))) == nil)
        }
    }
}
