import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

@testable import HeraldEtcd

@Suite("EtcdClient key-value")
struct EtcdKVTests {
    let etcd = makeClient()

    @Test func putGetDelete() async throws {
        let prefix = uniquePrefix()
        let key = prefix + "a"
        #expect(try await etcd.get(key) == nil)

        let firstRevision = try await etcd.put(key, string: "one")
        #expect(firstRevision > 0)
        let first = try #require(try await etcd.get(key))
        #expect(first.key == key)
        #expect(first.valueString == "one")
        #expect(first.createRevision == firstRevision)
        #expect(first.modRevision == firstRevision)
        #expect(first.version == 1)
        #expect(first.lease == 0)

        let secondRevision = try await etcd.put(key, string: "two")
        #expect(secondRevision > firstRevision)
        let second = try #require(try await etcd.get(key))
        #expect(second.valueString == "two")
        #expect(second.createRevision == firstRevision)
        #expect(second.modRevision == secondRevision)
        #expect(second.version == 2)

        #expect(try await etcd.delete(key) == 1)
        #expect(try await etcd.get(key) == nil)
        #expect(try await etcd.delete(key) == 0)
    }

    @Test func binaryAndEmptyValuesAndUnicodeKeys() async throws {
        let prefix = uniquePrefix()
        let bytes: [UInt8] = [0, 1, 2, 0xfe, 0xff, 10, 13, 0x22, 0x5c]
        try await etcd.put(prefix + "bin", value: bytes)
        #expect(try await etcd.get(prefix + "bin")?.value == bytes)

        try await etcd.put(prefix + "empty", value: [])
        let empty = try #require(try await etcd.get(prefix + "empty"))
        #expect(empty.value == [])
        #expect(empty.valueString == "")

        let unicodeKey = prefix + "clé/ñ/😀"
        try await etcd.put(unicodeKey, string: "ü")
        let unicode = try #require(try await etcd.get(unicodeKey))
        #expect(unicode.key == unicodeKey)
        #expect(unicode.valueString == "ü")
    }

    @Test func getPrefixReturnsOnlyKeysUnderThePrefixInOrder() async throws {
        let prefix = uniquePrefix()
        let outsider = String(prefix.dropLast()) + "0"  // '0' sorts right after '/', outside the prefix
        try await etcd.put(outsider, string: "outside")
        defer { Task { try? await etcd.delete(outsider) } }

        let empty = try await etcd.getPrefix(prefix)
        #expect(empty.kvs.isEmpty)
        #expect(empty.revision > 0)

        try await etcd.put(prefix + "b", string: "2")
        try await etcd.put(prefix + "a", string: "1")
        let lastRevision = try await etcd.put(prefix + "c/d", string: "3")

        let listed = try await etcd.getPrefix(prefix)
        #expect(listed.kvs.map(\.key) == [prefix + "a", prefix + "b", prefix + "c/d"])
        #expect(listed.kvs.map(\.valueString) == ["1", "2", "3"])
        #expect(listed.revision >= lastRevision)

        #expect(try await etcd.deletePrefix(prefix) == 3)
        #expect(try await etcd.getPrefix(prefix).kvs.isEmpty)
        #expect(try await etcd.get(outsider)?.valueString == "outside")
    }

    @Test func createIfAbsentLetsOnlyTheFirstCallerWin() async throws {
        let prefix = uniquePrefix()
        let key = prefix + "slot/0"

        let first = try await etcd.createIfAbsent(key, value: Array("node-a".utf8), lease: nil)
        #expect(first.created)
        let firstKV = try #require(first.kv)
        #expect(firstKV.valueString == "node-a")
        #expect(firstKV.createRevision > 0)

        let second = try await etcd.createIfAbsent(key, value: Array("node-b".utf8), lease: nil)
        #expect(!second.created)
        let holder = try #require(second.kv)
        #expect(holder.valueString == "node-a")
        #expect(holder.createRevision == firstKV.createRevision)

        #expect(try await etcd.get(key)?.valueString == "node-a")
        try await etcd.deletePrefix(prefix)
    }

    @Test func createIfAbsentUnderALeaseBindsTheKey() async throws {
        let prefix = uniquePrefix()
        let lease = try await etcd.grantLease(ttl: 30)
        let claim = try await etcd.createIfAbsent(prefix + "slot", value: Array("x".utf8), lease: lease.id)
        #expect(claim.created)
        #expect(claim.kv?.lease == lease.id)
        try await etcd.revokeLease(lease.id)
        #expect(try await etcd.get(prefix + "slot") == nil)
    }

    @Test func deleteIfCreateRevisionNeverDeletesSomeoneElsesClaim() async throws {
        let prefix = uniquePrefix()
        let key = prefix + "slot/1"
        let old = try await etcd.createIfAbsent(key, value: Array("old".utf8), lease: nil)
        let oldRevision = try #require(old.kv?.createRevision)
        #expect(try await etcd.delete(key) == 1)
        let new = try await etcd.createIfAbsent(key, value: Array("new".utf8), lease: nil)
        let newRevision = try #require(new.kv?.createRevision)
        #expect(new.created)
        #expect(newRevision > oldRevision)

        // The old holder tries to release its (stale) claim: refused, the new claim stays.
        #expect(try await etcd.deleteIfCreateRevision(key, equals: oldRevision) == false)
        #expect(try await etcd.get(key)?.valueString == "new")

        #expect(try await etcd.deleteIfCreateRevision(key, equals: newRevision) == true)
        #expect(try await etcd.get(key) == nil)
        // Nothing there any more.
        #expect(try await etcd.deleteIfCreateRevision(key, equals: newRevision) == false)
    }

    @Test func serverErrorsAreReportedAsServer() async throws {
        let prefix = uniquePrefix()
        do {
            try await etcd.put(prefix + "k", string: "v", lease: 0x7fff_0000_1234_5678)
            Issue.record("put under a missing lease succeeded")
        } catch let error as EtcdError {
            guard case .server(let status, let message) = error else {
                Issue.record("expected .server, got \(error)")
                return
            }
            #expect(status >= 400)
            #expect(message.contains("lease not found"))
        }
    }

    @Test func statusAnswersTrue() async throws {
        #expect(try await etcd.status() == true)
    }
}

@Suite("EtcdClient leases")
struct EtcdLeaseTests {
    let etcd = makeClient()

    @Test func grantKeepAliveAndExpiry() async throws {
        let prefix = uniquePrefix()
        // TTLs of a few seconds: a loaded CI machine can stall etcd's fsync for a second or two.
        let lease = try await etcd.grantLease(ttl: 4)
        #expect(lease.id != 0)
        #expect(lease.ttl == 4)

        try await etcd.put(prefix + "alive", string: "yes", lease: lease.id)
        #expect(try await etcd.get(prefix + "alive")?.lease == lease.id)

        let remaining = try #require(try await etcd.keepAliveOnce(lease: lease.id))
        #expect(remaining > 0 && remaining <= 4)

        // No more keepalives: the key vanishes once the TTL has passed.
        let gone = try await eventually(20) { try await etcd.get(prefix + "alive") == nil }
        #expect(gone)
        #expect(try await etcd.keepAliveOnce(lease: lease.id) == nil)
    }

    @Test func keepAliveOfAnUnknownLeaseAnswersNil() async throws {
        #expect(try await etcd.keepAliveOnce(lease: 0x7fff_0000_0000_4321) == nil)
    }

    @Test func revokeDeletesTheLeasesKeys() async throws {
        let prefix = uniquePrefix()
        let lease = try await etcd.grantLease(ttl: 60)
        try await etcd.put(prefix + "a", string: "1", lease: lease.id)
        try await etcd.put(prefix + "b", string: "2", lease: lease.id)
        try await etcd.put(prefix + "keep", string: "3")
        #expect(try await etcd.getPrefix(prefix).kvs.count == 3)

        try await etcd.revokeLease(lease.id)
        #expect(try await etcd.getPrefix(prefix).kvs.map(\.key) == [prefix + "keep"])
        #expect(try await etcd.keepAliveOnce(lease: lease.id) == nil)
        // Revoking again is harmless.
        try await etcd.revokeLease(lease.id)
        try await etcd.deletePrefix(prefix)
    }

    @Test func leaseKeeperKeepsAShortLeaseAlive() async throws {
        let prefix = uniquePrefix()
        // 8 s: under CI's full load (every suite at once on 2 cores) a 4 s lease once lapsed
        // between two renewals.
        let lease = try await etcd.grantLease(ttl: 8)
        try await etcd.put(prefix + "member", string: "me", lease: lease.id)
        let lost = Counter()
        let keeper = EtcdLeaseKeeper(client: etcd, lease: lease.id, ttl: lease.ttl)
        let task = Task { await keeper.run { lost.increment() } }

        // Over twice the TTL: renewals, not the grant, keep it.
        try await Task.sleep(for: .seconds(17))
        #expect(try await etcd.get(prefix + "member")?.valueString == "me")
        #expect(lost.count == 0)

        task.cancel()
        await task.value
        #expect(lost.count == 0)  // cancellation is not loss
        try await etcd.revokeLease(lease.id)
    }

    @Test func leaseKeeperReportsLossAfterRevoke() async throws {
        let prefix = uniquePrefix()
        // 5 s, not 2: under load a renewal came late once and the loss was reported before the revoke.
        let lease = try await etcd.grantLease(ttl: 5)
        try await etcd.put(prefix + "member", string: "me", lease: lease.id)
        let lost = Counter()
        let keeper = EtcdLeaseKeeper(client: etcd, lease: lease.id, ttl: lease.ttl)
        let task = Task { await keeper.run { lost.increment() } }

        try await Task.sleep(for: .milliseconds(800))
        #expect(lost.count == 0)
        try await etcd.revokeLease(lease.id)
        // run() returns by itself once it has reported the loss.
        try await within(5, "keeper to notice the revoke") { await task.value }
        #expect(lost.count == 1)
        #expect(try await etcd.get(prefix + "member") == nil)
    }

    @Test func leaseKeeperRetriesUntilTheTTLHasPassed() async throws {
        // etcd unreachable: transient failures are retried, loss is reported only once the TTL has passed.
        let unreachable = EtcdClient(endpoints: ["http://127.0.0.1:1"], requestTimeout: .milliseconds(500))
        let lost = Counter()
        let keeper = EtcdLeaseKeeper(client: unreachable, lease: 42, ttl: 2)
        let started = ContinuousClock.now
        let task = Task { await keeper.run { lost.increment() } }

        try await Task.sleep(for: .milliseconds(1500))
        #expect(lost.count == 0)
        try await within(6, "keeper to give up") { await task.value }
        let elapsed = ContinuousClock.now - started
        #expect(lost.count == 1)
        #expect(elapsed >= .seconds(2))
        #expect(elapsed < .seconds(5))
    }
}

@Suite("EtcdClient watch")
struct EtcdWatchTests {
    let etcd = makeClient()

    @Test func watchSeesPutsAndDeletesInOrderFromAStartRevision() async throws {
        let prefix = uniquePrefix()
        let r1 = try await etcd.put(prefix + "a", string: "1")
        let r2 = try await etcd.put(prefix + "b", string: "2")
        #expect(try await etcd.delete(prefix + "a") == 1)
        let outside = "/herald-etcd-tests/outside-\(UUID().uuidString)"
        try await etcd.put(outside, string: "not watched")

        // From r2: the put of a (r1) is not replayed.
        let stream = etcd.watchPrefix(prefix, startRevision: r2)
        let collector = Task { try await firstEvents(stream, count: 3) }
        try await Task.sleep(for: .milliseconds(300))
        let r4 = try await etcd.put(prefix + "c", string: "3")

        let events = try await collector.value
        #expect(events.map(\.kind) == [.put, .delete, .put])
        #expect(events.map(\.kv.key) == [prefix + "b", prefix + "a", prefix + "c"])
        #expect(events[0].kv.valueString == "2")
        #expect(events[0].kv.modRevision == r2)
        #expect(events[1].kv.modRevision > r2 && events[1].kv.modRevision < r4)
        #expect(events[2].kv.valueString == "3")
        #expect(events[2].kv.modRevision == r4)
        #expect(events[2].kv.createRevision == r4)
        #expect(events[2].revision >= r4)
        #expect(events.allSatisfy { $0.revision >= $0.kv.modRevision })
        #expect(r1 < r2)
        try await etcd.deletePrefix(prefix)
        try await etcd.delete(outside)
    }

    @Test func watchFromNowSeesOnlyLaterEvents() async throws {
        let prefix = uniquePrefix()
        try await etcd.put(prefix + "old", string: "before")
        let stream = etcd.watchPrefix(prefix, startRevision: 0)
        let collector = Task { try await firstEvents(stream, count: 1) }
        try await Task.sleep(for: .milliseconds(300))
        let revision = try await etcd.put(prefix + "new", string: "after")
        let events = try await collector.value
        #expect(events.map(\.kv.key) == [prefix + "new"])
        #expect(events.first?.kv.modRevision == revision)
        #expect((events.first?.revision ?? 0) >= revision)
        try await etcd.deletePrefix(prefix)
    }

    @Test func cancellingTheConsumerEndsTheWatchPromptly() async throws {
        let prefix = uniquePrefix()
        let consumer = Task {
            var seen = 0
            for try await _ in etcd.watchPrefix(prefix, startRevision: 0) { seen += 1 }
            return seen
        }
        try await Task.sleep(for: .milliseconds(300))
        let cancelledAt = ContinuousClock.now
        consumer.cancel()
        let seen = try await within(3, "watch consumer to end") { try await consumer.value }
        #expect(seen == 0)
        #expect(ContinuousClock.now - cancelledAt < .seconds(2))
    }

    @Test func cancellingTheConsumerReleasesTheHTTPConnection() async throws {
        // One connection per host: while the watch holds it, other calls queue; once the consumer is
        // cancelled, the watch's request must end so that the connection (or a new one) serves them.
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 1)
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let client = EtcdClient(endpoints: [testEndpoint], httpClient: httpClient, requestTimeout: .milliseconds(700))
            let prefix = uniquePrefix()
            let consumer = Task {
                for try await _ in client.watchPrefix(prefix, startRevision: 0) {}
            }
            try await Task.sleep(for: .milliseconds(500))
            var queuedBehindWatch = false
            do {
                _ = try await client.get(prefix + "k")
            } catch EtcdError.unavailable {
                queuedBehindWatch = true
            }
            #expect(queuedBehindWatch)

            consumer.cancel()
            _ = try? await within(3, "watch consumer to end") { try await consumer.value }
            let answered = try await eventually(3) { (try? await client.status()) == true }
            #expect(answered)
        } catch {
            try await httpClient.shutdown()
            throw error
        }
        try await httpClient.shutdown()
    }

    @Test func idleWatchSurvivesTheHTTPReadTimeout() async throws {
        let httpClient = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(timeout: .init(connect: .seconds(2), read: .seconds(1))))
        do {
            let client = EtcdClient(endpoints: [testEndpoint], httpClient: httpClient)
            let prefix = uniquePrefix()
            let stream = client.watchPrefix(prefix, startRevision: 0)
            let collector = Task { try await firstEvents(stream, count: 2, seconds: 15) }
            try await Task.sleep(for: .milliseconds(2500))  // idle longer than the read timeout
            let r1 = try await client.put(prefix + "x", string: "1")
            try await Task.sleep(for: .milliseconds(2500))
            let r2 = try await client.put(prefix + "y", string: "2")
            let events = try await collector.value
            #expect(events.map(\.kv.key) == [prefix + "x", prefix + "y"])
            #expect(events.map(\.kv.modRevision) == [r1, r2])
            try await client.deletePrefix(prefix)
        } catch {
            try await httpClient.shutdown()
            throw error
        }
        try await httpClient.shutdown()
    }

    @Test func compactedAnswerEndsTheWatchWithCompacted() throws {
        // The exact line etcd 3.4 sends when the start revision was compacted.
        let line = #"{"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"17"}}"#
        let (_, continuation) = AsyncThrowingStream.makeStream(of: EtcdWatchEvent.self, throwing: (any Error).self)
        var next: Int64 = 5
        var created = false
        #expect(throws: EtcdError.self) {
            try EtcdClient.handleWatchLine(
                ByteBuffer(string: line), next: &next, created: &created, continuation: continuation)
        }
        do {
            _ = try EtcdClient.handleWatchLine(
                ByteBuffer(string: line), next: &next, created: &created, continuation: continuation)
        } catch EtcdError.compacted(let revision) {
            #expect(revision == 17)
        } catch {
            Issue.record("expected .compacted, got \(error)")
        }
    }

    @Test func watchLinesAreParsedLikeTheGatewayWritesThem() async throws {
        let lines = [
            #"{"result":{"header":{"revision":"3"},"created":true}}"#,
            #"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"L2Ev","create_revision":"4","mod_revision":"4","version":"1"}},{"type":"DELETE","kv":{"key":"L2Iv","mod_revision":"4"}}]}}"#,
        ]
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: EtcdWatchEvent.self, throwing: (any Error).self, bufferingPolicy: .unbounded)
        var next: Int64 = 0
        var created = false
        for line in lines {
            #expect(
                try EtcdClient.handleWatchLine(
                    ByteBuffer(string: line), next: &next, created: &created, continuation: continuation))
        }
        continuation.finish()
        #expect(created)
        #expect(next == 5)
        var events: [EtcdWatchEvent] = []
        for try await event in stream { events.append(event) }
        #expect(events.map(\.kind) == [.put, .delete])
        #expect(events.map(\.kv.key) == ["/a/", "/b/"])
        #expect(events[0].kv.value == [])
        #expect(events.allSatisfy { $0.revision == 4 })
    }
}

@Suite("EtcdClient unreachable endpoints")
struct EtcdUnreachableTests {
    @Test func refusedEndpointAnswersUnavailableQuickly() async throws {
        let client = EtcdClient(endpoints: ["http://127.0.0.1:1"], requestTimeout: .seconds(1))
        let started = ContinuousClock.now
        let result = try await within(10, "get on a refused endpoint") {
            do {
                _ = try await client.get("/anything")
                return "answered"
            } catch EtcdError.unavailable {
                return "unavailable"
            } catch {
                return "other: \(error)"
            }
        }
        #expect(result == "unavailable")
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(try await client.status() == false)
    }

    @Test func silentEndpointTimesOutAsUnavailable() async throws {
        let listener = try SilentListener()
        let client = EtcdClient(endpoints: ["http://127.0.0.1:\(listener.port)"], requestTimeout: .milliseconds(700))
        let started = ContinuousClock.now
        let result = try await within(10, "put on a silent endpoint") {
            do {
                _ = try await client.put("/anything", string: "x")
                return "answered"
            } catch EtcdError.unavailable {
                return "unavailable"
            } catch {
                return "other: \(error)"
            }
        }
        let elapsed = ContinuousClock.now - started
        #expect(result == "unavailable")
        #expect(elapsed >= .milliseconds(600))
        #expect(elapsed < .seconds(3))
        withExtendedLifetime(listener) {}
    }

    @Test func watchOnARefusedEndpointThrowsUnavailable() async throws {
        let client = EtcdClient(endpoints: ["http://127.0.0.1:1"], requestTimeout: .seconds(1))
        let result = try await within(10, "watch on a refused endpoint") {
            do {
                for try await _ in client.watchPrefix("/x/", startRevision: 0) {}
                return "ended"
            } catch EtcdError.unavailable {
                return "unavailable"
            } catch {
                return "other: \(error)"
            }
        }
        #expect(result == "unavailable")
    }

    @Test func failsOverToTheNextEndpoint() async throws {
        let client = EtcdClient(endpoints: ["http://127.0.0.1:1", testEndpoint], requestTimeout: .seconds(1))
        let prefix = uniquePrefix()
        try await client.put(prefix + "k", string: "v")
        #expect(try await client.get(prefix + "k")?.valueString == "v")
        #expect(try await client.status())
        // The working endpoint is now tried first.
        #expect(client.state.preferred == 1)
        try await client.deletePrefix(prefix)
    }
}

@Suite("Prefix range end")
struct PrefixRangeEndTests {
    @Test func incrementsTheLastByte() {
        #expect(etcdPrefixRangeEnd(Array("/herald/".utf8)) == Array("/herald0".utf8))
        #expect(etcdPrefixRangeEnd([0x61, 0xff]) == [0x62])
        #expect(etcdPrefixRangeEnd([0xff, 0xff]) == [0])
        #expect(etcdPrefixRangeEnd([]) == [0])
    }
}
