import Testing

@testable import HeraldKafka

@Suite("OffsetGapGuard: a record past the expected offset is fetched again, not stepped over")
struct OffsetGapGuardTests {
    let key = OffsetGapGuard.Key(topic: "t", partition: 0)

    @Test("in order: delivered; a gap: seek to the expected offset, then drops while the seek is in flight, then a new seek")
    func gapThenSeek() {
        var guardian = OffsetGapGuard(maxSeeks: 3, seekGraceNanos: 100)
        guardian.expect(key, at: 5)
        #expect(guardian.check(key, offset: 5, now: 0) == .deliver)
        #expect(guardian.check(key, offset: 6, now: 0) == .deliver)
        #expect(guardian.check(key, offset: 9, now: 1000) == .seek(7))
        #expect(guardian.check(key, offset: 10, now: 1050) == .drop, "on its way before the seek")
        #expect(guardian.check(key, offset: 9, now: 1200) == .seek(7), "past the grace: another try")
        #expect(guardian.check(key, offset: 7, now: 1300) == .deliver)
        #expect(guardian.check(key, offset: 8, now: 1300) == .deliver)
        #expect(guardian.check(key, offset: 9, now: 1300) == .deliver)
    }

    @Test("a gap the broker never fills is given up after maxSeeks, and reported")
    func givesUp() {
        var guardian = OffsetGapGuard(maxSeeks: 2, seekGraceNanos: 0)
        guardian.expect(key, at: 0)
        #expect(guardian.check(key, offset: 3, now: 1) == .seek(0))
        #expect(guardian.check(key, offset: 3, now: 2) == .seek(0))
        #expect(guardian.check(key, offset: 3, now: 3) == .deliverAfterGap(missing: 0..<3))
        #expect(guardian.check(key, offset: 4, now: 4) == .deliver)
    }

    @Test("a consumer repositioned below what it read (a rebalance, an offset reset) reads on from there")
    func backwards() {
        var guardian = OffsetGapGuard()
        #expect(guardian.check(key, offset: 100, now: 0) == .deliver, "the first record sets the start when none was given")
        #expect(guardian.check(key, offset: 101, now: 0) == .deliver)
        #expect(guardian.check(key, offset: 0, now: 0) == .deliver)
        #expect(guardian.check(key, offset: 1, now: 0) == .deliver)
        #expect(guardian.check(OffsetGapGuard.Key(topic: "t", partition: 1), offset: 50, now: 0) == .deliver, "partitions apart")
    }
}
