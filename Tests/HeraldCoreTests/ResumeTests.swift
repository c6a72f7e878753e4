import Foundation
import Testing

@testable import HeraldCore

@Suite("Resume: log cuts, session tokens, recovery from the journal")
struct ResumeCoreTests {
    let codec = try! ClientIDCodec(base64Keys: testKey(3))

    @Test("a cut survives its encoding; anything else is refused")
    func cutRoundTrip() {
        let cut = LogCut(slot: 63, epoch: 1_795_860_000_123, unicast: 1 << 40, broadcast: [0, 1, 127, 128, 300], at: 1_795_860_000_999)
        #expect(LogCut(encoded: cut.encoded) == cut)
        #expect(cut.encoded.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }, "URL-safe: \(cut.encoded)")
        for bad in ["", "AAAA", "not base64!", cut.encoded + "AA", String(cut.encoded.dropLast(2))] {
            #expect(LogCut(encoded: bad) == nil, "\(bad)")
        }
    }

    @Test("a cut moves past records of its own slot and of the broadcast partitions only")
    func cutAdvances() {
        var cut = LogCut(slot: 2, epoch: 1, unicast: 5, broadcast: [0, 0], at: 0)
        cut.advance(past: Placement(topic: "u", partition: 2, offset: 9), at: 10, unicastTopic: "u", broadcastTopic: "b")
        cut.advance(past: Placement(topic: "u", partition: 3, offset: 50), at: 11, unicastTopic: "u", broadcastTopic: "b")
        cut.advance(past: Placement(topic: "b", partition: 1, offset: 4), at: 12, unicastTopic: "u", broadcastTopic: "b")
        cut.advance(past: Placement(topic: "b", partition: 7, offset: 4), at: 13, unicastTopic: "u", broadcastTopic: "b")
        #expect(cut.unicast == 10)
        #expect(cut.broadcast == [0, 5])
        #expect(cut.at == 13)
    }

    @Test("a session token opens only with the key that sealed it, whole")
    func tokenRoundTrip() throws {
        let token = SessionToken(
            clientId: "cid", systemId: "shop", userId: "ann",
            groups: [.init(group: "room-1", userId: "ann", extend: #"{"seat":3}"#), .init(group: "ünï", userId: "", extend: "")],
            issuedAt: 1_795_860_000_000)
        let sealed = try #require(token.sealed(with: codec))
        #expect(SessionToken.open(sealed, with: codec) == token)
        let other = try ClientIDCodec(base64Keys: testKey(4))
        #expect(SessionToken.open(sealed, with: other) == nil)
        var flipped = Array(sealed)
        flipped[flipped.count / 2] = flipped[flipped.count / 2] == "A" ? "B" : "A"
        #expect(SessionToken.open(String(flipped), with: codec) == nil)
        #expect(SessionToken.open("", with: codec) == nil)
    }

    @Test("a token over the bound is not issued")
    func tokenBound() {
        let groups = (0..<10).map { SessionToken.Binding(group: "g\($0)", userId: "u", extend: String(repeating: "e", count: 1000)) }
        let token = SessionToken(clientId: "c", systemId: "s", userId: "u", groups: groups, issuedAt: 0)
        #expect(token.sealed(with: codec) == nil)
    }

    func message(_ id: String, _ target: MessageTarget, system: String = "s") -> BusMessage {
        BusMessage(messageId: id, systemId: system, target: target, body: .push(PushPayload()), acceptedAt: 0, acceptedBy: "n")
    }

    @Test("recovery gives what came after the cut for the token's ID, groups and system, with the cut past each")
    func journalRecovery() throws {
        let journal = MessageJournal(capacity: 100)
        let old = ClientID(address: "a", slot: 0, epoch: 7, serial: 1, systemId: "s")
        let other = ClientID(address: "a", slot: 0, epoch: 7, serial: 2, systemId: "s")
        func append(_ m: BusMessage) {
            let (topic, partition): (String, Int32) =
                if case .client = m.target { (Topics.unicast, 0) } else { (Topics.broadcast, 0) }
            _ = journal.append(m, topic: topic, partition: partition, at: Clock.nowMillis())
        }
        append(message("before", .client(old, raw: "old")))
        let since = journal.cut(slot: 0, epoch: 7)
        append(message("to-old", .client(old, raw: "old")))
        append(message("to-other", .client(other, raw: "other")))
        append(message("to-g", .group("g")))
        append(message("to-h", .group("h")))
        append(message("to-system", .system))
        append(message("other-system", .system, system: "t"))
        let token = SessionToken(clientId: "old", systemId: "s", userId: "", groups: [.init(group: "g", userId: "", extend: "")], issuedAt: 0)
        var attached = false
        let outcome = journal.recover(
            since: since, slot: 0, epoch: 7, limits: ResumeLimits(windowMillis: 0, maxMessages: 10),
            matching: { ResumeRecovery.isFor(token, groups: ["g"], $0.message) }, attach: { attached = true })
        #expect(attached)
        guard case .records(let found) = outcome else {
            Issue.record("expected records, got \(outcome)")
            return
        }
        #expect(found.map(\.record.message.messageId) == ["to-old", "to-g", "to-system"])
        // Each cut is just past its own record: resuming from it would give the rest.
        #expect(found[0].cut.unicast == since.unicast + 1)
        #expect(found[2].cut.broadcast == [since.broadcast[0] + 3])
        let end = journal.cut(slot: 0, epoch: 7)
        guard case .records(let none) = journal.recover(since: end, slot: 0, epoch: 7, limits: ResumeLimits(windowMillis: 0, maxMessages: 10), matching: { _ in true }, attach: {}) else {
            Issue.record("expected no records")
            return
        }
        #expect(none.isEmpty)
        if case .tooMany = journal.recover(since: since, slot: 0, epoch: 7, limits: ResumeLimits(windowMillis: 0, maxMessages: 2), matching: { ResumeRecovery.isFor(token, groups: ["g"], $0.message) }, attach: {}) {
        } else {
            Issue.record("three to recover over a limit of two is too many")
        }
        // Bounded in bytes too: three frames do not fit in the bytes of two.
        let twoFrames = found.prefix(2).reduce(0) { $0 + ResumeRecovery.size(of: $1.record.message) }
        if case .tooMany = journal.recover(
            since: since, slot: 0, epoch: 7, limits: ResumeLimits(windowMillis: 0, maxMessages: 10, maxBytes: twoFrames + 1),
            matching: { ResumeRecovery.isFor(token, groups: ["g"], $0.message) }, attach: {})
        {
        } else {
            Issue.record("three frames over a byte limit of two is too many")
        }
        if case .notKept = journal.recover(since: since, slot: 0, epoch: 8, limits: ResumeLimits(windowMillis: 0, maxMessages: 10), matching: { _ in true }, attach: {}) {
        } else {
            Issue.record("a cut from another epoch cannot be recovered from")
        }
    }

    @Test("once the journal dropped records after the cut, recovery refuses")
    func journalDropped() {
        let journal = MessageJournal(capacity: 3)
        let since = journal.cut(slot: 0, epoch: 1)
        for k in 0..<5 {
            _ = journal.append(message("m\(k)", .system), topic: Topics.broadcast, partition: 0, at: 0)
        }
        if case .notKept = journal.recover(since: since, slot: 0, epoch: 1, limits: ResumeLimits(windowMillis: 0, maxMessages: 10), matching: { _ in true }, attach: {}) {
        } else {
            Issue.record("the journal kept only the last 3 of 5")
        }
    }
}
