import Foundation
import Testing

@testable import HeraldCore

@Suite("ReplayFilter and MessageJournal")
struct ReplayTests {
    static let now: Int64 = 1_795_860_000_000  // 2026-11-28T10:00:00Z

    func parse(_ options: [String: String]) throws(HeraldError) -> ReplayFilter {
        try ReplayFilter.parse(options, now: Self.now)
    }

    func expectInvalid(_ options: [String: String], naming option: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = #expect(throws: HeraldError.self, "\(options)", sourceLocation: sourceLocation) {
            try ReplayFilter.parse(options, now: Self.now)
        }
        #expect(error?.code == 4000, sourceLocation: sourceLocation)
        #expect(error?.status == 400, sourceLocation: sourceLocation)
        #expect(error?.message.hasPrefix(option) == true, "\(String(describing: error?.message))", sourceLocation: sourceLocation)
    }

    @Test func rfc3339Times() throws {
        #expect(try parse(["since": "2026-11-28T10:00:00Z"]).since == Self.now)
        #expect(try parse(["since": "2026-11-28T10:00:00.250Z"]).since == Self.now + 250)
        #expect(try parse(["until": "2026-11-28T10:00:00.5Z"]).until == Self.now + 500)
        #expect(try parse(["since": "2026-11-28T12:00:00+02:00"]).since == Self.now)
        #expect(try parse(["since": "2026-11-28T09:30:00.125-00:30"]).since == Self.now + 125)
        #expect(try parse(["since": "1970-01-01T00:00:00Z"]).since == 0)
        // RFC 3339 allows any number of fraction digits (Go's RFC3339Nano writes nine).
        #expect(try parse(["since": "2026-11-28T10:00:00.123456Z"]).since == Self.now + 123)
        #expect(try parse(["since": "2026-11-28T10:00:00.123456789Z"]).since == Self.now + 123)
        #expect(try parse(["since": " 2026-11-28T10:00:00Z "]).since == Self.now)
        let both = try parse(["since": "2026-11-28T09:00:00Z", "until": "2026-11-28T10:00:00Z"])
        #expect(both.since == Self.now - 3_600_000)
        #expect(both.until == Self.now)
        #expect(TimeExpression.format(Self.now + 250) == "2026-11-28T10:00:00.250Z")
        #expect(TimeExpression.parse(TimeExpression.format(Self.now + 7), now: 0) == Self.now + 7)
    }

    @Test(arguments: [
        ("-15m", -900_000), ("-2h", -7_200_000), ("-30s", -30_000), ("-1d", -86_400_000), ("-500ms", -500),
        ("+1h", 3_600_000), ("-0s", 0), ("now", 0),
    ] as [(String, Int64)])
    func relativeTimes(text: String, offset: Int64) throws {
        #expect(try parse(["since": text]).since == Self.now + offset)
        #expect(try parse(["until": text]).until == Self.now + offset)
        #expect(TimeExpression.parse(text, now: Self.now) == Self.now + offset)
    }

    @Test func otherOptionsAndDefaults() throws {
        let empty = try parse([:])
        #expect(empty == ReplayFilter())
        let blanks = try parse(["since": "", "until": "  ", "limit": "", "clientId": " "])
        #expect(blanks == ReplayFilter())
        let filter = try parse([
            "clientId": "c1", "groupName": "g", "systemId": "s", "messageId": "m", "limit": "25", "unknown": "x",
        ])
        #expect(filter == ReplayFilter(clientId: "c1", groupName: "g", systemId: "s", messageId: "m", limit: 25))
        #expect(try parse(["since": "-1h", "until": "now"]) == ReplayFilter(since: Self.now - 3_600_000, until: Self.now))
        #expect(try parse(["since": "now", "until": "now"]).until == Self.now)
    }

    @Test(arguments: [
        "yesterday", "2026-11-28", "2026-13-01T00:00:00Z", "2026-11-28 10:00:00", "10:00", "-15", "-m", "15m", "-15x",
        "--15m", "-1.5h", "-15M", "NOW", "12345",
    ])
    func garbageTimesNameTheOption(text: String) {
        expectInvalid(["since": text], naming: "since")
        expectInvalid(["until": text], naming: "until")
    }

    @Test func untilBeforeSince() {
        expectInvalid(["since": "now", "until": "-1m"], naming: "until")
        expectInvalid(["since": "2026-11-28T10:00:00.001Z", "until": "2026-11-28T10:00:00Z"], naming: "until")
    }

    @Test(arguments: ["0", "-1", "abc", "1.5", "10x", "99999999999999999999999"])
    func badLimits(text: String) {
        expectInvalid(["limit": text], naming: "limit")
    }

    /// Relative times whose value does not fit must be refused, not crash the node.
    @Test func hugeRelativeTimesAreRefusedWithoutCrashing() async {
        await #expect(processExitsWith: .success) {
            let texts = ["-99999999999999999d", "+9223372036854775807ms", "-9223372036854775807h"]
            for text in texts {
                do throws(HeraldError) {
                    _ = try ReplayFilter.parse(["since": text], now: 1_795_860_000_000)
                    exit(1)
                } catch {
                    if error.code != 4000 || !error.message.hasPrefix("since") { exit(2) }
                }
            }
            exit(0)
        }
    }

    // MARK: matches

    func record(
        _ messageId: String, at timestamp: Int64, system: String = "s", target: MessageTarget = .system,
        body: MessageBody = .push(PushPayload())
    ) -> JournalRecord {
        JournalRecord(
            placement: Placement(topic: Topics.broadcast, partition: 0, offset: 0), timestamp: timestamp,
            message: BusMessage(messageId: messageId, systemId: system, target: target, body: body, acceptedAt: timestamp, acceptedBy: "n"))
    }

    @Test func matchesEachField() {
        let id = ClientID(address: "a", slot: 0, epoch: 1, serial: 1, systemId: "s")
        let unicast = record("m1", at: 1000, target: .client(id, raw: "raw-1"))
        let group = record("m2", at: 2000, target: .group("g"))
        let bind = record("m3", at: 3000, target: .client(id, raw: "raw-1"), body: .bind(group: "g", userId: "", extend: ""))
        let system = record("m4", at: 4000, system: "t")

        #expect(ReplayFilter().matches(unicast))
        #expect(ReplayFilter(since: 1000).matches(unicast))
        #expect(!ReplayFilter(since: 1001).matches(unicast))
        #expect(ReplayFilter(until: 1000).matches(unicast))
        #expect(!ReplayFilter(until: 999).matches(unicast))
        #expect(ReplayFilter(since: 1500, until: 2500).matches(group))
        #expect(!ReplayFilter(since: 1500, until: 2500).matches(bind))

        #expect(ReplayFilter(clientId: "raw-1").matches(unicast))
        #expect(ReplayFilter(clientId: "raw-1").matches(bind))
        #expect(!ReplayFilter(clientId: "raw-2").matches(unicast))
        #expect(!ReplayFilter(clientId: "raw-1").matches(group))
        #expect(!ReplayFilter(clientId: "*").matches(system))

        #expect(ReplayFilter(groupName: "g").matches(group))
        #expect(ReplayFilter(groupName: "g").matches(bind))
        #expect(!ReplayFilter(groupName: "g").matches(unicast))
        #expect(!ReplayFilter(groupName: "h").matches(group))

        #expect(ReplayFilter(systemId: "t").matches(system))
        #expect(!ReplayFilter(systemId: "t").matches(unicast))
        #expect(ReplayFilter(messageId: "m2").matches(group))
        #expect(!ReplayFilter(messageId: "m2").matches(unicast))

        #expect(ReplayFilter(since: 0, until: 5000, clientId: "raw-1", systemId: "s", messageId: "m1").matches(unicast))
        #expect(!ReplayFilter(since: 0, until: 5000, clientId: "raw-1", systemId: "t", messageId: "m1").matches(unicast))
        // The limit does not affect a single match.
        #expect(ReplayFilter(limit: 1).matches(unicast))
    }

    // MARK: journal

    @Test func journalRecordsInOrderWithLimit() {
        let journal = MessageJournal()
        for index in 0..<10 {
            let message = BusMessage(
                messageId: "m\(index)", systemId: index.isMultiple(of: 2) ? "even" : "odd", target: .system,
                body: .push(PushPayload()), acceptedAt: Int64(index), acceptedBy: "n")
            let placement = journal.append(message, topic: Topics.broadcast, partition: 0, at: Int64(index * 100))
            #expect(placement == Placement(topic: Topics.broadcast, partition: 0, offset: Int64(index)))
        }
        #expect(journal.count == 10)
        #expect(journal.records(matching: ReplayFilter()).map(\.message.messageId) == (0..<10).map { "m\($0)" })
        #expect(journal.records(matching: ReplayFilter(limit: 3)).map(\.message.messageId) == ["m0", "m1", "m2"])
        #expect(journal.records(matching: ReplayFilter(systemId: "odd", limit: 2)).map(\.message.messageId) == ["m1", "m3"])
        #expect(journal.records(matching: ReplayFilter(since: 250, until: 600)).map(\.message.messageId) == ["m3", "m4", "m5", "m6"])
        #expect(journal.records(matching: ReplayFilter(limit: 100)).count == 10)
        #expect(journal.records(matching: ReplayFilter(messageId: "none")).isEmpty)
        #expect(journal.records(matching: ReplayFilter()).map(\.timestamp) == (0..<10).map { Int64($0 * 100) })
    }

    @Test func offsetsArePerTopicAndPartition() {
        let journal = MessageJournal()
        let message = BusMessage(
            messageId: "m", systemId: "s", target: .system, body: .push(PushPayload()), acceptedAt: 0, acceptedBy: "n")
        #expect(journal.append(message, topic: "a", partition: 0, at: 0).offset == 0)
        #expect(journal.append(message, topic: "a", partition: 1, at: 0).offset == 0)
        #expect(journal.append(message, topic: "b", partition: 0, at: 0).offset == 0)
        #expect(journal.append(message, topic: "a", partition: 0, at: 0).offset == 1)
        #expect(journal.append(message, topic: "a", partition: 1, at: 0).offset == 1)
        #expect(journal.append(message, topic: "a", partition: 0, at: 0).offset == 2)
    }

    @Test(arguments: [1, 2, 3, 7])
    func capacityEvictsTheOldest(capacity: Int) {
        let journal = MessageJournal(capacity: capacity)
        for index in 0..<25 {
            let message = BusMessage(
                messageId: "m\(index)", systemId: "s", target: .system, body: .push(PushPayload()), acceptedAt: 0,
                acceptedBy: "n")
            let placement = journal.append(message, topic: Topics.broadcast, partition: 0, at: Int64(index))
            // Offsets keep counting although old records are gone.
            #expect(placement.offset == Int64(index))
            #expect(journal.count == min(index + 1, capacity))
            let kept = journal.records(matching: ReplayFilter()).map(\.message.messageId)
            #expect(kept == (max(0, index + 1 - capacity)...index).map { "m\($0)" })
        }
        #expect(journal.records(matching: ReplayFilter(messageId: "m0")).isEmpty)
    }
}
