import Foundation
import Synchronization
import Testing

@testable import HeraldCore

/// An in-process client: remembers every frame pushed to it and every close.
final class FakeSink: ClientSink {
    struct State {
        var frames: [String] = []
        var closes: [UInt16] = []
        var reasons: [String] = []
    }

    private let state = Mutex(State())
    private let accepting: Bool

    init(accepting: Bool = true) {
        self.accepting = accepting
    }

    @discardableResult
    func push(_ frame: OutboundFrame) -> Bool {
        guard accepting else { return false }
        state.withLock { $0.frames.append(frame.text) }
        return true
    }

    func close(code: UInt16, reason: String) {
        state.withLock {
            $0.closes.append(code)
            $0.reasons.append(reason)
        }
    }

    var frames: [String] { state.withLock { $0.frames } }
    var closeCodes: [UInt16] { state.withLock { $0.closes } }

    /// Every frame, decoded as a JSON object.
    func objects() throws -> [[String: JSONValue]] {
        try frames.map { try decodeObject($0) }
    }
}

func decodeObject(_ frame: String) throws -> [String: JSONValue] {
    let value = try JSONDecoder().decode(JSONValue.self, from: Data(frame.utf8))
    guard case .object(let object) = value else {
        Issue.record("frame is not a JSON object: \(frame)")
        return [:]
    }
    return object
}

func contains(_ sinks: [any ClientSink], _ sink: FakeSink) -> Bool {
    sinks.contains { $0 === sink }
}

/// A standalone node: router, local bus, journal, trace and delivery over one registry.
final class Harness: Sendable {
    static let defaultKey = testKey(7)

    let codec: ClientIDCodec
    let membership: StandaloneMembership
    let registry = ConnectionRegistry()
    let journal: MessageJournal
    let trace = InMemoryTrace()
    let delivery: Delivery
    let bus: LocalBus
    let router: MessageRouter
    private let serials = Atomic<UInt64>(0)

    init(
        startedAt: Int64 = 1_700_000_000_000, codec: ClientIDCodec? = nil, journalCapacity: Int = 1000,
        nodeId: String = "node-a", address: String = "10.0.0.1:8080", announceThroughBus: Bool = false
    ) {
        self.codec = codec ?? (try! ClientIDCodec(base64Keys: Harness.defaultKey))
        membership = StandaloneMembership(nodeId: nodeId, address: address, startedAt: startedAt)
        journal = MessageJournal(capacity: journalCapacity)
        delivery = Delivery(registry: registry, identity: membership.local, trace: trace)
        bus = LocalBus(journal: journal, delivery: delivery, slot: membership.local.slot)
        router = MessageRouter(codec: self.codec, membership: membership, bus: bus, registry: registry, trace: trace)
        if announceThroughBus { delivery.announce(through: bus) }
    }

    struct Client {
        let raw: String
        let serial: UInt64
        let sink: FakeSink
    }

    /// Issues a client ID the way the server does and registers the connection.
    @discardableResult
    func connect(system: String, user: String = "", sink: FakeSink = FakeSink()) -> Client {
        let serial = serials.wrappingAdd(1, ordering: .relaxed).newValue
        let id = ClientID(
            address: membership.local.address, slot: membership.local.slot, epoch: membership.local.epoch,
            serial: serial, systemId: system)
        let raw = codec.seal(id)
        registry.add(registry.makeConnection(serial: serial, clientId: raw, systemId: system, userId: user, sink: sink))
        return Client(raw: raw, serial: serial, sink: sink)
    }

    func steps(_ messageId: String) async -> [TraceStep] {
        await trace.steps(for: messageId) ?? []
    }
}

/// A 32-byte key of one repeated byte, in standard base64.
func testKey(_ byte: UInt8, count: Int = 32) -> String {
    Data(repeating: byte, count: count).base64EncodedString()
}

/// Waits (up to about two seconds) for something that happens on another task.
func eventually(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<200 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
