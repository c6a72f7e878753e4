import HeraldCore
import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import HeraldServer

/// The session handler and its outbox on an EmbeddedChannel, with a standalone node's services.
@Suite("WebSocketSession and LoopOutbox")
struct WebSocketSessionTests {
    static func services(_ adjust: (inout HeraldConfiguration) -> Void = { _ in }) throws -> HeraldNodeServices {
        var configuration = HeraldConfiguration()
        configuration.dev = true
        adjust(&configuration)
        let codec = try configuration.validated()
        return try HeraldNodeServices(configuration: configuration, codec: codec, logger: Logger(label: "test"))
    }

    static let mask = WebSocketMaskingKey([9, 8, 7, 6] as [UInt8])!

    static func clientFrame(_ opcode: WebSocketOpcode, _ text: String) -> WebSocketFrame {
        var data = ByteBuffer(string: text)
        data.webSocketMask(mask)
        return WebSocketFrame(fin: true, opcode: opcode, maskKey: mask, data: data)
    }

    func session(_ node: HeraldNodeServices, _ channel: EmbeddedChannel, serial: UInt64 = 1) -> WebSocketSession {
        WebSocketSession(
            serial: serial, clientId: "client-\(serial)", admission: .admitted(systemId: "s", userId: "u"), node: node,
            channel: channel)
    }

    /// The next frame the session wrote, read back from the bytes of a framed push.
    static func nextFrame(_ channel: EmbeddedChannel) throws -> WebSocketFrame? {
        switch try channel.readOutbound(as: OutboundWebSocket.self) {
        case nil: return nil
        case .frame(let frame): return frame
        case .framed(var bytes):
            guard let first: UInt8 = bytes.readInteger(), let second: UInt8 = bytes.readInteger() else { return nil }
            var length = Int(second & 0x7F)
            if length == 126 { length = Int(bytes.readInteger(as: UInt16.self) ?? 0) }
            if length == 127 { length = Int(bytes.readInteger(as: UInt64.self) ?? 0) }
            #expect(second & 0x80 == 0, "server frames are never masked")
            #expect(bytes.readableBytes == length, "the header's length is the payload's")
            return WebSocketFrame(
                fin: first & 0x80 != 0, opcode: WebSocketOpcode(encodedWebSocketOpcode: first & 0x0F) ?? .text, data: bytes)
        }
    }

    func texts(_ channel: EmbeddedChannel) throws -> [String] {
        var result: [String] = []
        while let frame = try Self.nextFrame(channel) {
            if frame.opcode == .text { result.append(String(buffer: frame.data)) }
        }
        return result
    }

    @Test("an admitted session registers, sends the welcome, and is gone from the registry when its channel closes")
    func registersAndLeaves() throws {
        let node = try Self.services()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(session(node, channel))
        #expect(node.registry.count == 1)
        #expect(try texts(channel).first?.contains("\"clientId\":\"client-1\"") == true)
        _ = try channel.finish()
        #expect(node.registry.count == 0, "no session outlives its channel")
    }

    @Test("a client that left during the upgrade is never registered (no ghost)")
    func noGhost() throws {
        let node = try Self.services()
        let channel = EmbeddedChannel()  // never connected: inactive, as after a FIN during the upgrade
        try channel.pipeline.syncOperations.addHandler(session(node, channel))
        #expect(node.registry.count == 0)
        _ = try? channel.finish()
        #expect(node.registry.count == 0)
    }

    @Test("pings are answered only while the socket is writable, coalesced into one pong")
    func pongsWaitForWritability() throws {
        let node = try Self.services()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(session(node, channel))
        _ = try texts(channel)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        for index in 0..<50 { try channel.writeInbound(Self.clientFrame(.ping, "p\(index)")) }
        try channel.writeInbound(Self.clientFrame(.text, "ping"))
        #expect(try Self.nextFrame(channel) == nil, "nothing is written to a backed-up socket")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        var pongs: [String] = []
        var textPongs = 0
        while let frame = try Self.nextFrame(channel) {
            if frame.opcode == .pong { pongs.append(String(buffer: frame.data)) }
            if frame.opcode == .text, String(buffer: frame.data) == "pong" { textPongs += 1 }
        }
        #expect(pongs == ["p49"], "one pong, for the latest ping")
        #expect(textPongs == 1)
        _ = try channel.finish()
    }

    @Test("the outbox writes pushes in order; past the byte bound the client is closed 1013")
    func outboxOrderAndBytes() throws {
        let node = try Self.services { $0.outboundQueueBytes = 10_000 }
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let session = session(node, channel)
        try channel.pipeline.syncOperations.addHandler(session)
        _ = try texts(channel)
        for index in 0..<5 { #expect(session.push(OutboundFrame("m\(index)", messageId: "id\(index)"))) }
        channel.embeddedEventLoop.run()
        #expect(try texts(channel) == ["m0", "m1", "m2", "m3", "m4"])
        // 3 frames of 4 KB queued before the loop runs: the third is over 10,000 bytes.
        let big = String(repeating: "x", count: 4_000)
        #expect(session.push(OutboundFrame(big)))
        #expect(session.push(OutboundFrame(big)))
        #expect(!session.push(OutboundFrame(big)), "over the byte bound")
        channel.embeddedEventLoop.run()
        var closeCode: UInt16?
        while let frame = try Self.nextFrame(channel) {
            if frame.opcode == .connectionClose { closeCode = frame.data.getInteger(at: frame.data.readerIndex, as: UInt16.self) }
        }
        #expect(closeCode == 1013)
        _ = try? channel.finish()
    }

    @Test("an ack counts only for a message pushed to this connection")
    func acksOnlyForOwnPushes() async throws {
        let node = try Self.services()
        let channel = EmbeddedChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        let session = session(node, channel)
        try channel.pipeline.syncOperations.addHandler(session)
        _ = session.push(OutboundFrame("m", messageId: "pushed"))
        channel.embeddedEventLoop.run()
        try channel.writeInbound(Self.clientFrame(.text, #"{"ack":"pushed"}"#))
        try channel.writeInbound(Self.clientFrame(.text, #"{"ack":"forged"}"#))
        #expect(try await node.fabric.trace.steps(for: "pushed")?.contains { $0.step == .acked } == true)
        #expect(try await node.fabric.trace.steps(for: "forged") == nil)
        _ = try? channel.finish()
    }
}
