import Foundation
import Synchronization
import Testing

@testable import HeraldCore

@Suite("RateLimiter")
struct RateLimiterTests {
    @Test func burstThenRefill() {
        let limiter = RateLimiter(perSecond: 3)
        #expect(limiter.allow("s", now: 10_000))
        #expect(limiter.allow("s", now: 10_000))
        #expect(limiter.allow("s", now: 10_000))
        #expect(!limiter.allow("s", now: 10_000))
        #expect(!limiter.allow("s", now: 10_100))
        // One token every 1000/3 ms.
        #expect(!limiter.allow("s", now: 10_300))
        #expect(limiter.allow("s", now: 10_340))
        #expect(!limiter.allow("s", now: 10_340))
        #expect(limiter.allow("s", now: 11_340))
        #expect(limiter.allow("s", now: 11_340))
        #expect(limiter.allow("s", now: 11_340))
        #expect(!limiter.allow("s", now: 11_340))
    }

    @Test func burstNeverExceedsTheRate() {
        let limiter = RateLimiter(perSecond: 2)
        #expect(limiter.allow("s", now: 0))
        // After a long idle only `rate` requests pass at once.
        let allowed = (0..<10).filter { _ in limiter.allow("s", now: 3_600_000) }.count
        #expect(allowed == 2)
        #expect(limiter.allow("s", now: 3_600_500))
        #expect(!limiter.allow("s", now: 3_600_500))
    }

    @Test func keysAreIndependent() {
        let limiter = RateLimiter(perSecond: 1)
        #expect(limiter.allow("a", now: 0))
        #expect(!limiter.allow("a", now: 0))
        #expect(limiter.allow("b", now: 0))
        #expect(!limiter.allow("b", now: 999))
        #expect(limiter.allow("b", now: 1000))
    }

    @Test func zeroRateTurnsLimitingOff() {
        let limiter = RateLimiter(perSecond: 0)
        #expect((0..<1000).allSatisfy { _ in limiter.allow("s", now: 0) })
        let one = RateLimiter(perSecond: 1)
        #expect((0..<1000).filter { _ in one.allow("s", now: 0) }.count == 1)
    }
}

@Suite("IdempotencyCache")
struct IdempotencyCacheTests {
    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
        var count: Int { value.withLock { $0 } }
    }

    @Test func repeatedKeyRunsOnce() async {
        let cache = IdempotencyCache<String>()
        let counter = Counter()
        let first = await cache.answer(for: "k", now: 0) { "answer-\(counter.next())" }
        let second = await cache.answer(for: "k", now: 10) { "answer-\(counter.next())" }
        #expect(first == "answer-1")
        #expect(second == "answer-1")
        #expect(counter.count == 1)
        let other = await cache.answer(for: "other", now: 10) { "answer-\(counter.next())" }
        #expect(other == "answer-2")
        #expect(counter.count == 2)
    }

    @Test func concurrentRepeatsWaitForTheFirst() async {
        let cache = IdempotencyCache<Int>()
        let counter = Counter()
        let answers = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    await cache.answer(for: "same", now: 1) {
                        try? await Task.sleep(for: .milliseconds(50))
                        return counter.next()
                    }
                }
            }
            var answers: [Int] = []
            for await answer in group { answers.append(answer) }
            return answers
        }
        #expect(answers.count == 50)
        #expect(Set(answers) == [1])
        #expect(counter.count == 1)
    }

    @Test("an answer `keep` refuses (worth retrying) is not remembered; a kept one is")
    func refusedAnswersRunAgain() async {
        let cache = IdempotencyCache<Int>()
        let counter = Counter()
        let keepEven: @Sendable (Int) -> Bool = { $0 % 2 == 0 }
        #expect(await cache.answer(for: "k", now: 0, keep: keepEven) { counter.next() } == 1)
        // 1 was refused, so the retry runs again; 2 is kept from then on.
        #expect(await cache.answer(for: "k", now: 1, keep: keepEven) { counter.next() } == 2)
        #expect(await cache.answer(for: "k", now: 2, keep: keepEven) { counter.next() } == 2)
        #expect(counter.count == 2)
    }

    @Test func runsAgainAfterTheTTL() async {
        let cache = IdempotencyCache<Int>(ttlMillis: 1000)
        let counter = Counter()
        #expect(await cache.answer(for: "k", now: 0) { counter.next() } == 1)
        #expect(await cache.answer(for: "k", now: 999) { counter.next() } == 1)
        #expect(await cache.answer(for: "k", now: 1000) { counter.next() } == 2)
        #expect(await cache.answer(for: "k", now: 1999) { counter.next() } == 2)
        #expect(await cache.answer(for: "k", now: 2000) { counter.next() } == 3)
        #expect(counter.count == 3)
    }

    @Test func capacityEvictsTheOldest() async {
        let cache = IdempotencyCache<Int>(ttlMillis: 1_000_000, capacity: 2)
        let counter = Counter()
        #expect(await cache.answer(for: "a", now: 0) { counter.next() } == 1)
        #expect(await cache.answer(for: "b", now: 1) { counter.next() } == 2)
        #expect(await cache.answer(for: "c", now: 2) { counter.next() } == 3)
        // "a" was the oldest and is gone; "b" and "c" are remembered.
        #expect(await cache.answer(for: "c", now: 3) { counter.next() } == 3)
        #expect(await cache.answer(for: "b", now: 3) { counter.next() } == 2)
        #expect(await cache.answer(for: "a", now: 4) { counter.next() } == 4)
    }

    /// A key that ran again after its TTL is the freshest entry: making room must evict an
    /// older (here even expired) entry, not it, or a repeat within the TTL sends twice.
    @Test func aRefreshedKeyIsNotEvictedBeforeOlderOnes() async {
        let cache = IdempotencyCache<Int>(ttlMillis: 100, capacity: 2)
        let counter = Counter()
        #expect(await cache.answer(for: "A", now: 0) { counter.next() } == 1)
        #expect(await cache.answer(for: "B", now: 50) { counter.next() } == 2)
        #expect(await cache.answer(for: "A", now: 150) { counter.next() } == 3)  // expired: runs again
        #expect(await cache.answer(for: "C", now: 160) { counter.next() } == 4)
        // A was stored at 150, well within its TTL at 170.
        #expect(await cache.answer(for: "A", now: 170) { counter.next() } == 3)
        #expect(counter.count == 4)
    }
}

@Suite("InMemoryTrace")
struct TraceTests {
    @Test func keepsStepsInOrder() async {
        let trace = InMemoryTrace()
        trace.record("m", TraceStep(.accepted, node: "n", at: 1))
        trace.record("m", TraceStep(.produced, node: "n", at: 2, placement: Placement(topic: "t", partition: 3, offset: 4)))
        trace.record("m", TraceStep(.delivered, node: "n", at: 3, clientId: "c"))
        let steps = await trace.steps(for: "m")
        #expect(steps?.map(\.step) == [.accepted, .produced, .delivered])
        #expect(steps?[1].topic == "t" && steps?[1].partition == 3 && steps?[1].offset == 4)
        #expect(steps?[2].clientId == "c")
        #expect(await trace.steps(for: "unknown") == nil)
    }

    @Test(arguments: [1, 2, 3, 5])
    func capacityEvictsTheOldestMessages(capacity: Int) async {
        let trace = InMemoryTrace(capacity: capacity)
        for index in 0..<30 {
            trace.record("m\(index)", TraceStep(.accepted, node: "n"))
            trace.record("m\(index)", TraceStep(.produced, node: "n"))
            for kept in max(0, index + 1 - capacity)...index {
                #expect(await trace.steps(for: "m\(kept)")?.count == 2, "m\(kept) after m\(index)")
            }
            if index >= capacity {
                #expect(await trace.steps(for: "m\(index - capacity)") == nil)
            }
        }
        for index in 0..<(30 - capacity) {
            #expect(await trace.steps(for: "m\(index)") == nil)
        }
    }

    @Test func boundsStepsPerMessage() async {
        let trace = InMemoryTrace(capacity: 10, maxStepsPerMessage: 3)
        for index in 0..<10 { trace.record("m", TraceStep(.delivered, node: "n", count: index)) }
        #expect(await trace.steps(for: "m")?.compactMap(\.count) == [0, 1, 2])
    }

    @Test func stepsEncodeAsJSON() throws {
        let step = TraceStep(.produced, node: "n", at: 5, placement: Placement(topic: "t", partition: 1, offset: 2))
        let decoded = try JSONDecoder().decode(TraceStep.self, from: JSONEncoder().encode(step))
        #expect(decoded == step)
        let object = try decodeObject(String(decoding: try JSONEncoder().encode(step), as: UTF8.self))
        #expect(object["step"] == .string("produced"))
    }
}

@Suite("MessageIDs")
struct MessageIDTests {
    @Test func uniqueWellFormedAndTimePrefixed() {
        let now: Int64 = 1_795_860_000_123
        var seen = Set<String>()
        for _ in 0..<10_000 { seen.insert(MessageIDs.make(now: now)) }
        #expect(seen.count == 10_000)
        let hex = Set("0123456789abcdef")
        for id in seen.prefix(100) {
            #expect(id.count == 28)
            #expect(id.allSatisfy { hex.contains($0) })
            #expect(id.hasPrefix(String(now, radix: 16).leftPadded(to: 12)))
        }
        #expect(MessageIDs.make(now: 0).hasPrefix("000000000000"))
        #expect(MessageIDs.make(now: 0).count == 28)
    }

    @Test func sortableByTime() {
        var times: [Int64] = [0, 1, 15, 16, 255, 256, 1_000, 1_700_000_000_000, 1_795_860_000_000, 1_795_860_000_001, 99_999_999_999_999]
        times += (0..<200).map { _ in Int64.random(in: 0..<281_474_976_710_655) }
        times.sort()
        let ids = times.map { MessageIDs.make(now: $0) }
        for (earlier, later) in zip(zip(times, ids), zip(times, ids).dropFirst()) where earlier.0 < later.0 {
            #expect(earlier.1 < later.1, "\(earlier.0) → \(earlier.1) vs \(later.0) → \(later.1)")
        }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}

@Suite("JSONValue")
struct JSONValueTests {
    @Test(arguments: [
        JSONValue.null, .bool(true), .bool(false), .integer(0), .integer(1), .integer(-1), .integer(.max), .integer(.min),
        .double(1.5), .double(-0.001), .double(1e300), .string(""), .string("é \"x\" \\ / \n ✓"),
        .array([]), .array([.null, .integer(2), .string("3"), .array([.bool(true)])]),
        .object([:]), .object(["a": .object(["b": .array([.double(2.5), .null])]), "c": .bool(false)]),
    ])
    func roundTrip(value: JSONValue) throws {
        let data = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: data) == value, "\(String(decoding: data, as: UTF8.self))")
        // Also as a member of a larger structure.
        let wrapped = JSONValue.object(["value": value, "list": .array([value, value])])
        #expect(try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(wrapped)) == wrapped)
    }

    @Test func decodesJSONText() throws {
        let text = #"{"s":"x","i":12,"d":0.25,"t":true,"n":null,"a":[1,"2",[]],"o":{"k":{}}}"#
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(
            value
                == .object([
                    "s": .string("x"), "i": .integer(12), "d": .double(0.25), "t": .bool(true), "n": .null,
                    "a": .array([.integer(1), .string("2"), .array([])]), "o": .object(["k": .object([:])]),
                ]))
        #expect(value.stringValue == nil)
        #expect(JSONValue.string("v").stringValue == "v")
        #expect(JSONValue.integer(1).stringValue == nil)
    }
}

@Suite("Frames, errors and systems")
struct MiscTests {
    @Test func welcomeAndRefusalFrames() throws {
        let welcome = try decodeObject(FrameEncoding.welcome(clientId: "abc-_"))
        #expect(welcome == ["code": .integer(0), "msg": .string("success"), "data": .object(["clientId": .string("abc-_")])])
        let refusal = try decodeObject(FrameEncoding.refusal(code: -1001, msg: "unknown system"))
        #expect(refusal == ["code": .integer(-1001), "msg": .string("unknown system"), "data": .null])
        let presence = try decodeObject(
            FrameEncoding.presence(.joined, group: "g/1", info: PresenceInfo(clientId: "c", userId: "u", extend: "e"), at: 9))
        #expect(presence["code"] == .integer(1001))
        #expect(presence["msg"] == .string("client joined the group"))
        #expect(presence["groupName"] == .string("g/1"))
        #expect(presence["ts"] == .integer(9))
        #expect(FrameEncoding.presence(.left, group: "g/1", info: PresenceInfo(clientId: "c", userId: "u", extend: "e"), at: 9).contains("\"g/1\""))
    }

    @Test func errorCodesAndStatuses() {
        let cases: [(HeraldError, Int, Int)] = [
            (.invalidField("groupName"), 4000, 400), (.malformedJSON("x"), 4000, 400), (.badClientID, 4001, 400),
            (.unauthorized("no"), 4010, 401), (.foreignClient, 4030, 403), (.clientOffline, 4040, 404),
            (.unknownSystem("s"), 4041, 404), (.unknownMessage, 4044, 404), (.alreadyRegistered("s"), 4090, 409),
            (.tooLarge(10), 4130, 413), (.rateLimited, 4290, 429), (.unavailable("down"), 5030, 503),
        ]
        for (error, code, status) in cases {
            #expect(error.code == code)
            #expect(error.status == status)
        }
        #expect(HeraldError.invalidField("groupName").message.hasPrefix("groupName"))
        #expect(HeraldError.badClientID.with(messageId: "m").data == .object(["messageId": .string("m")]))
        #expect(HeraldError.badClientID.with(messageId: "m").code == 4001)
    }

    @Test func systemRecordsCheckSecrets() async throws {
        let codec = try ClientIDCodec(base64Keys: testKey(5))
        let open = SystemRecord(systemId: "open", secret: nil, clientAuth: true, sealer: codec)
        #expect(!open.requiresSecret)
        #expect(!open.clientAuth)
        #expect(open.accepts(secret: nil))
        #expect(open.accepts(secret: "anything"))

        let locked = SystemRecord(systemId: "locked", secret: "s3cret", clientAuth: true, sealer: codec)
        #expect(locked.requiresSecret)
        #expect(locked.accepts(secret: "s3cret"))
        #expect(!locked.accepts(secret: "s3cret "))
        #expect(!locked.accepts(secret: ""))
        #expect(!locked.accepts(secret: nil))
        let sealed = try #require(locked.sealedSecret)
        #expect(codec.openBytes(sealed) == Data("s3cret".utf8))
        #expect(!sealed.contains(Data("s3cret".utf8)))

        let noAuth = SystemRecord(systemId: "x", secret: "s3cret", clientAuth: false, sealer: codec)
        #expect(noAuth.sealedSecret == nil)
        #expect(noAuth.accepts(secret: "s3cret"))
        #expect(noAuth.salt != locked.salt)

        let directory = InMemorySystemDirectory()
        try await directory.register(locked)
        #expect(try await directory.lookup("locked") == locked)
        #expect(try await directory.lookup("missing") == nil)
        do throws(HeraldError) {
            try await directory.register(SystemRecord(systemId: "locked", secret: nil, clientAuth: false, sealer: codec))
            Issue.record("expected 4090")
        } catch {
            #expect(error.code == 4090)
        }
        #expect(try await directory.lookup("locked")?.requiresSecret == true)
    }
}

@Suite("Error codes")
struct ErrorCodeTests {
    @Test("every code's HTTP status is its first three digits (4004, no such route, is 404), and 4xx or 5xx")
    func statusIsDerived() {
        for code in ErrorCode.allCases {
            let expected = code == .noRoute ? 404 : code.rawValue / 10
            #expect(code.status == expected, "\(code)")
            #expect((400..<600).contains(code.status), "\(code)")
            #expect(HeraldError(code, message: "x").status == code.status)
        }
        #expect(Set(ErrorCode.allCases.map(\.rawValue)).count == ErrorCode.allCases.count)
    }

    @Test("an HTTP error from beneath the routes keeps its status and gets the contract's code where there is one")
    func httpStatus() {
        #expect(HeraldError(httpStatus: 413, message: "x").code == 4130)
        #expect(HeraldError(httpStatus: 413, message: "x").status == 413)
        #expect(HeraldError(httpStatus: 500, message: "x").code == 5000)
        #expect(HeraldError(httpStatus: 302, message: "x").status == 500)
    }
}
