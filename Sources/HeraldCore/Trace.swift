import Synchronization

/// One step of a message's path: accepted, produced, delivered, acked or dropped.
public struct TraceStep: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable {
        case accepted, produced, delivered, acked, dropped, redelivered
    }

    public var step: Kind
    public var node: String
    public var at: Int64
    public var topic: String?
    public var partition: Int32?
    public var offset: Int64?
    public var clientId: String?
    public var count: Int?
    public var reason: String?

    public init(
        _ step: Kind, node: String, at: Int64 = Clock.nowMillis(), placement: Placement? = nil,
        clientId: String? = nil, count: Int? = nil, reason: String? = nil
    ) {
        self.step = step
        self.node = node
        self.at = at
        self.topic = placement?.topic
        self.partition = placement?.partition
        self.offset = placement?.offset
        self.clientId = clientId.map(Self.bounded)
        self.count = count
        self.reason = reason
    }
}

extension TraceStep {
    /// A raw client ID as a trace keeps it: ours fit; a longer one is cut to a prefix.
    static func bounded(_ raw: String) -> String {
        let utf8 = raw.utf8
        guard utf8.count > FieldLimits.recordedClientIdBytes else { return raw }
        return String(decoding: utf8.prefix(FieldLimits.recordedClientIdBytes), as: UTF8.self) + "…"
    }

    /// Roughly what the step holds in memory, for byte bounds.
    var approximateBytes: Int {
        96 + node.utf8.count + (topic?.utf8.count ?? 0) + (clientId?.utf8.count ?? 0) + (reason?.utf8.count ?? 0)
    }

    /// Steps sorted by time; steps of the same millisecond in the order of a message's path.
    public static func inPathOrder(_ steps: [TraceStep]) -> [TraceStep] {
        let rank: [Kind: Int] = [.accepted: 0, .produced: 1, .redelivered: 2, .delivered: 3, .dropped: 4, .acked: 5]
        return steps.enumerated().sorted {
            ($0.element.at, rank[$0.element.step] ?? 9, $0.offset) < ($1.element.at, rank[$1.element.step] ?? 9, $1.offset)
        }.map(\.element)
    }
}

/// A message's path as /admin/trace and `herald trace` print it, steps in path order.
public struct MessageTrace: Sendable, Encodable {
    public var messageId: String
    public var steps: [TraceStep]

    public init(messageId: String, steps: [TraceStep]) {
        self.messageId = messageId
        self.steps = TraceStep.inPathOrder(steps)
    }
}

/// Records the steps of messages for /admin/trace.
public protocol TraceRecorder: Sendable {
    func record(_ messageId: String, _ step: TraceStep)
    /// nil when nothing is known of the message; throws when the store cannot be read.
    func steps(for messageId: String) async throws -> [TraceStep]?
}

/// Keeps the traces of the most recent messages in memory, oldest evicted first.
public final class InMemoryTrace: TraceRecorder {
    struct State {
        var steps: [String: [TraceStep]] = [:]
        var bytesOf: [String: Int] = [:]
        var order: [String] = []
        var head = 0
        var bytes = 0
    }

    private let capacity: Int
    private let capacityBytes: Int
    private let maxStepsPerMessage: Int
    private let state = Mutex(State())

    /// At most `capacity` messages and about `capacityBytes` of steps; the oldest go first.
    public init(capacity: Int = 100_000, capacityBytes: Int = 64 << 20, maxStepsPerMessage: Int = 256) {
        self.capacity = max(1, capacity)
        self.capacityBytes = max(1024, capacityBytes)
        self.maxStepsPerMessage = maxStepsPerMessage
    }

    public var bytes: Int { state.withLock { $0.bytes } }

    public func record(_ messageId: String, _ step: TraceStep) {
        state.withLock { state in
            if state.steps[messageId] == nil {
                state.order.append(messageId)
                state.steps[messageId] = []
                let idBytes = messageId.utf8.count + 64
                state.bytesOf[messageId] = idBytes
                state.bytes += idBytes
            }
            if state.steps[messageId, default: []].count < maxStepsPerMessage {
                state.steps[messageId, default: []].append(step)
                state.bytesOf[messageId, default: 0] += step.approximateBytes
                state.bytes += step.approximateBytes
            }
            while state.order.count - state.head > capacity || (state.bytes > capacityBytes && state.order.count - state.head > 1) {
                let oldest = state.order[state.head]
                state.steps[oldest] = nil
                state.bytes -= state.bytesOf.removeValue(forKey: oldest) ?? 0
                state.head += 1
            }
            // Compact now and then so the order list does not grow without bound.
            if state.head > capacity / 2 + 1 {
                state.order.removeFirst(state.head)
                state.head = 0
            }
        }
    }

    public func steps(for messageId: String) async -> [TraceStep]? {
        state.withLock { $0.steps[messageId] }
    }
}
