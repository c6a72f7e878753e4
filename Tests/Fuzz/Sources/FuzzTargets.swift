import Foundation
import HeraldCore
import NIOCore
import NIOEmbedded
import NIOWebSocket

@testable import HeraldServer

/// The four libFuzzer targets; `HERALD_FUZZ_TARGET` picks one (scripts/fuzz runs each).
/// A target fails only by crashing (a trap, an overflow, a bad unwrap) or by breaking an
/// invariant it checks with `invariant`.
enum FuzzTarget: String, CaseIterable {
    case clientid, request, wire, frames

    static let codec: ClientIDCodec = {
        // A fixed test key: fuzzing needs no secret, only the same key every run.
        let key = Data(repeating: 7, count: 32).base64EncodedString()
        guard let codec = try? ClientIDCodec(base64Keys: key) else { fatalError("the fixed fuzz key is valid") }
        return codec
    }()

    func run(_ bytes: [UInt8]) {
        switch self {
        case .clientid: Self.clientID(bytes)
        case .request: Self.request(bytes)
        case .wire: Self.wire(bytes)
        case .frames: Self.frames(bytes)
        }
    }

    static func invariant(_ condition: Bool, _ what: @autoclosure () -> String) {
        if !condition {
            FileHandle.standardError.write(Data("invariant broken: \(what())\n".utf8))
            abort()
        }
    }

    /// Any text is opened safely; an ID we sealed opens to what we sealed.
    static func clientID(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? codec.open(text)
        guard bytes.count >= 12 else { return }
        let serial = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let slot = UInt32(bytes[8]) << 8 | UInt32(bytes[9])
        // The node's own address, which configuration keeps within maxAddressBytes of UTF-8.
        var address = String(decoding: bytes[12...].prefix(ClientIDCodec.maxAddressBytes), as: UTF8.self)
        while address.utf8.count > ClientIDCodec.maxAddressBytes { address.removeLast() }
        let system = String(decoding: bytes[10..<12], as: UTF8.self)
        let id = ClientID(address: address, slot: slot, epoch: UInt64(bytes[10]), serial: serial, systemId: system)
        let sealed = codec.seal(id)
        invariant((try? codec.open(sealed)) == id, "seal/open round trip of \(id)")
    }

    /// A request body: checked by the scanner, then read as each route reads it.
    static func request(_ bytes: [UInt8]) {
        guard let members = try? JSONScanner.members(of: bytes) else { return }
        let fields = BodyFields(checked: CheckedBody(bytes: bytes, members: members))
        if let send = try? SendRequest(fields) {
            // What was accepted is carried as valid JSON into a frame and an envelope.
            let frame = FrameEncoding.push(messageId: "m", payload: send.send.payload, groupName: send.groupName, ts: 1, redelivered: false)
            invariant((try? RawJSON(validating: frame, maxDepth: JSONScanner.maxDepth + 1)) != nil, "push frame is JSON: \(frame)")
            invariant(frame.contains(send.send.payload.data.text), "data carried verbatim")
        }
        _ = try? BindRequest(fields)
        _ = try? ClientRequest(fields)
        _ = try? RegisterRequest(fields)
        for member in members {
            invariant((try? RawJSON(validating: bytes[member.value])) != nil, "member value re-validates")
        }
    }

    /// A Kafka record value: decoded or refused; what decodes re-encodes to the same message.
    static func wire(_ bytes: [UInt8]) {
        _ = WireFormat.inspect(bytes)
        guard let message = WireFormat.decode(bytes, codec: codec) else { return }
        let again = WireFormat.decode(WireFormat.encode(message), codec: codec)
        invariant(again == message, "re-encoded envelope decodes to the same message")
    }

    /// Raw bytes after the upgrade: NIO's frame decoder, then the session's state machine.
    static func frames(_ bytes: [UInt8]) {
        let channel = EmbeddedChannel()
        let machine = MachineHandler()
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 16)))
            try channel.pipeline.syncOperations.addHandler(machine)
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            // A protocol error from the decoder: the server answers it with a close.
        }
        _ = try? channel.finish()
    }

    final class MachineHandler: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        var machine = WebSocketInboundMachine(maxMessageBytes: 4096, frameRate: 50)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch machine.receive(unwrapInboundIn(data)) {
            case .text(let text):
                invariant(WebSocketInboundMachine.isValidUTF8(text.readableBytesView), "text actions carry UTF-8")
                _ = WebSocketSession.ack(in: text)
            case .closed(let code, _):
                invariant(WebSocketInboundMachine.isSendableCloseCode(code), "never echo close code \(code)")
            default:
                break
            }
        }
    }
}

#if HERALD_FUZZ
// SwiftPM links an executable's entry point as `<Target>_main`, so libFuzzer's own `main`
// is not used: this one hands control to libFuzzer's driver with the target's callback.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// libFuzzer's own `main` (if the linker takes it from the runtime) calls this.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

@main
struct FuzzMain {
    static func main() {
        _ = selectedTarget
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
            selectedTarget.run(bytes)
            return 0
        }
        exit(status)
    }
}

let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["HERALD_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("set HERALD_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue))\n".utf8))
        exit(2)
    }
    return target
}()
#else
/// Without libFuzzer (a normal build): runs every seed of the corpus through its target once,
/// so the seeds are a regression suite: `herald-fuzz Tests/Fuzz/corpus`.
@main
struct CorpusReplay {
    static func main() {
        let root = CommandLine.arguments.dropFirst().first ?? "Tests/Fuzz/corpus"
        var count = 0
        for target in FuzzTarget.allCases {
            let folder = URL(fileURLWithPath: root).appendingPathComponent(target.rawValue)
            let files = (try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? []
            for file in files.sorted(by: { $0.path < $1.path }) {
                guard let data = try? Data(contentsOf: file) else { continue }
                target.run(Array(data))
                count += 1
            }
        }
        print("herald-fuzz: ran \(count) seeds without a crash")
    }
}
#endif
