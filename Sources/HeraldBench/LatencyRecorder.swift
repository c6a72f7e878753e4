import Synchronization

/// What one worker's clients received, per phase: stamped messages, their latency from the
/// publisher's send to this process's receive, and how many came out of order.
final class LatencyRecorder: Sendable {
    private struct Phase {
        var latency = LatencyHistogram()
        var received: UInt64 = 0
        var outOfOrder: UInt64 = 0
        var firstAt: UInt64 = 0
        var lastAt: UInt64 = 0
        /// Deliveries of each message, by its number in the phase (the stamp's low 32 bits, from 1).
        var perMessage: [UInt32] = []

        mutating func record(_ stamp: BenchStamp, at now: UInt64, inOrder: Bool) {
            latency.record(nanos: now >= stamp.sentAt ? now - stamp.sentAt : 0)
            received += 1
            let k = Int(stamp.seq & 0xFFFF_FFFF) - 1
            if k >= 0, k < LatencyRecorder.maxMessagesPerPhase {
                if k >= perMessage.count { perMessage += [UInt32](repeating: 0, count: k + 1 - perMessage.count) }
                perMessage[k] += 1
            }
            if !inOrder { outOfOrder += 1 }
            if firstAt == 0 { firstAt = now }
            lastAt = now
        }
    }

    private let phases = Mutex<[UInt32: Phase]>([:])
    static let maxMessagesPerPhase = 10_000_000

    func record(_ stamp: BenchStamp, receivedAt now: UInt64, inOrder: Bool) {
        phases.withLock { phases in
            phases[stamp.phase, default: Phase()].record(stamp, at: now, inOrder: inOrder)
        }
    }

    func report(phase id: UInt32) -> PhaseReport {
        let phase = phases.withLock { $0[id] } ?? Phase()
        return PhaseReport(
            phase: id, received: phase.received, outOfOrder: phase.outOfOrder, firstReceiveNanos: phase.firstAt,
            lastReceiveNanos: phase.lastAt, latencyMicros: phase.latency.sparse,
            perMessage: phase.perMessage)
    }

    /// Received counts of every phase, cheap enough to poll while draining.
    func receivedCounts() -> [UInt32: UInt64] {
        phases.withLock { $0.mapValues(\.received) }
    }
}
