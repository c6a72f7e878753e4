import NIOCore
import NIOWebSocket

/// What a client may send, by RFC 6455 (sections 5 and 7), as a state machine with no I/O:
/// `WebSocketSession` feeds it every frame and carries out the action it answers. It reassembles
/// fragmented messages (bounded by `maxMessageBytes`), checks masking, reserved bits, fragment
/// order, UTF-8 of text and close reasons, and close codes, and limits the frame rate.
struct WebSocketInboundMachine {
    enum Action: Equatable {
        /// Nothing to do (a pong, a fragment, a binary message: Herald reads only text).
        case none
        /// A whole text message.
        case text(ByteBuffer)
        /// Answer a ping with this payload.
        case pong(ByteBuffer)
        /// The client closed: answer with this code (our own close was already sent if
        /// `handshakeDone`) and end the connection.
        case closed(echo: UInt16, handshakeDone: Bool)
        /// The client broke the protocol: close with this code and reason.
        case fail(WebSocketErrorCode, String)
    }

    let maxMessageBytes: Int
    /// Frames a second a client may send on average, and the burst above it; 0 turns it off.
    let frameRate: Double
    let frameBurst: Double

    private var fragments: ByteBuffer?
    private var fragmentsAreText = false
    private var tokens: Double
    private var refilledAt: NIODeadline
    /// Set once a close was sent or received: frames after it are ignored.
    private(set) var closeSent = false

    init(maxMessageBytes: Int, frameRate: Double, now: NIODeadline = .now()) {
        self.maxMessageBytes = maxMessageBytes
        self.frameRate = frameRate
        self.frameBurst = max(1, frameRate * 2)
        self.tokens = frameBurst
        self.refilledAt = now
    }

    /// Our own close was sent; the client's close that follows completes the handshake.
    mutating func sentClose() {
        closeSent = true
    }

    mutating func receive(_ frame: WebSocketFrame, now: NIODeadline = .now()) -> Action {
        guard frame.maskKey != nil else { return .fail(.protocolError, "client frames must be masked") }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return .fail(.protocolError, "reserved bits set without a negotiated extension")
        }
        if frameRate > 0 {
            let elapsed = Double((now - refilledAt).nanoseconds) / 1e9
            tokens = min(frameBurst, tokens + elapsed * frameRate)
            refilledAt = now
            guard tokens >= 1 else { return .fail(.policyViolation, "too many frames") }
            tokens -= 1
        }
        switch frame.opcode {
        case .text, .binary:
            guard fragments == nil else { return .fail(.protocolError, "a new message began inside a fragmented one") }
            let data = frame.unmaskedData
            guard data.readableBytes <= maxMessageBytes else { return .fail(.messageTooLarge, "message too large") }
            if frame.fin {
                return frame.opcode == .text ? complete(text: data) : .none
            }
            fragments = data
            fragmentsAreText = frame.opcode == .text
            return .none
        case .continuation:
            guard var collected = fragments else { return .fail(.protocolError, "continuation frame with nothing to continue") }
            var more = frame.unmaskedData
            guard collected.readableBytes + more.readableBytes <= maxMessageBytes else {
                fragments = nil
                return .fail(.messageTooLarge, "message too large")
            }
            fragments = nil  // keeps `collected` uniquely referenced while it grows
            collected.writeBuffer(&more)
            guard frame.fin else {
                fragments = collected
                return .none
            }
            return fragmentsAreText ? complete(text: collected) : .none
        case .ping:
            return closeSent ? .none : .pong(frame.unmaskedData)
        case .pong:
            return .none
        case .connectionClose:
            return receivedClose(frame.unmaskedData)
        default:
            return .fail(.protocolError, "unknown opcode")
        }
    }

    private func complete(text: ByteBuffer) -> Action {
        guard Self.isValidUTF8(text.readableBytesView) else { return .fail(.dataInconsistentWithMessage, "text is not UTF-8") }
        return .text(text)
    }

    private mutating func receivedClose(_ payload: ByteBuffer) -> Action {
        let handshakeDone = closeSent
        closeSent = true
        var data = payload
        switch data.readableBytes {
        case 0:
            return .closed(echo: 1000, handshakeDone: handshakeDone)
        case 1:
            return .fail(.protocolError, "close payload of one byte")
        default:
            let code = data.readInteger(as: UInt16.self) ?? 1000
            guard Self.isSendableCloseCode(code) else { return .fail(.protocolError, "close code \(code) may not be sent") }
            guard Self.isValidUTF8(data.readableBytesView) else {
                return .fail(.dataInconsistentWithMessage, "close reason is not UTF-8")
            }
            return .closed(echo: code, handshakeDone: handshakeDone)
        }
    }

    /// Codes an endpoint may put in a close frame (RFC 6455 7.4, IANA registry): 1000-1003,
    /// 1007-1014 and 3000-4999. 1004-1006 and 1015 are reserved or for reporting only.
    static func isSendableCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    static func isValidUTF8(_ bytes: ByteBufferView) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}
