/// Keeps a consumer from stepping over records. In a partition that is neither compacted nor
/// transactional, offsets are contiguous; a record past the next expected offset means the
/// broker answered a fetch with a later batch before an earlier one was readable. Tansu 0.6
/// (memory storage) does so under concurrent producers to one partition: a consumer that
/// follows it loses the batch (3 kcat producers, 9,000 records: a following kcat got 8,666, a
/// later read from the start all 9,000). The guard answers seek back to the expected offset;
/// records that were already on their way past it are dropped while the seek is in flight;
/// after `maxSeeks` for one gap it gives up, lets the record through and reports the gap.
struct OffsetGapGuard {
    struct Key: Hashable {
        var topic: String
        var partition: Int32
    }

    enum Verdict: Equatable {
        case deliver
        /// Past a gap a seek is fetching again: it comes again after the gap's records.
        case drop
        case seek(Int64)
        /// Given up on: the records `missing` are skipped.
        case deliverAfterGap(missing: Range<Int64>)
    }

    private struct Pending {
        var offset: Int64
        var seeks: Int
        var lastSeek: UInt64
    }

    private var next: [Key: Int64] = [:]
    private var pending: [Key: Pending] = [:]
    let maxSeeks: Int
    /// How long a seek is given to take effect before a record past it counts as a new try.
    let seekGraceNanos: UInt64

    init(maxSeeks: Int = 20, seekGraceNanos: UInt64 = 100_000_000) {
        self.maxSeeks = maxSeeks
        self.seekGraceNanos = seekGraceNanos
    }

    /// Where a partition is known to start (an assignment at an offset).
    mutating func expect(_ key: Key, at offset: Int64) {
        next[key] = offset
    }

    mutating func check(_ key: Key, offset: Int64, now: UInt64) -> Verdict {
        guard let expected = next[key] else {
            next[key] = offset + 1
            return .deliver
        }
        if offset == expected {
            next[key] = offset + 1
            pending[key] = nil
            return .deliver
        }
        // Below what was read: the consumer was repositioned (a group's partition back at its
        // committed offset, an offset reset after the broker lost its log). Read on from there.
        if offset < expected {
            next[key] = offset + 1
            pending[key] = nil
            return .deliver
        }
        var state = pending[key].flatMap { $0.offset == expected ? $0 : nil } ?? Pending(offset: expected, seeks: 0, lastSeek: 0)
        if state.seeks > 0, now &- state.lastSeek < seekGraceNanos { return .drop }
        guard state.seeks < maxSeeks else {
            next[key] = offset + 1
            pending[key] = nil
            return .deliverAfterGap(missing: expected..<offset)
        }
        state.seeks += 1
        state.lastSeek = now
        pending[key] = state
        return .seek(expected)
    }
}
