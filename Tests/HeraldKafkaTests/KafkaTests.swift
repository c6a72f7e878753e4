import Foundation
import HeraldKafka
import Logging
import Testing

/// Against the real broker (Tansu through scripts/kafka-adapter.py in CI and dev).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct KafkaBrokerTests {
    let admin: KafkaAdmin

    init() throws {
        admin = try KafkaAdmin(config: adminConfig(), logger: testLogger())
    }

    @Test func createTopicIsIdempotentAndPartitionCountDoesNotAutoCreate() async throws {
        let topic = uniqueTopic("create")
        #expect(try await admin.partitionCount(topic) == nil)
        // Asking must not have created it (Tansu auto-creates on a metadata request naming it).
        #expect(try await admin.partitionCount(topic) == nil)

        try await admin.createTopic(topic, partitions: 3)
        #expect(try await admin.partitionCount(topic) == 3)

        // Again: TOPIC_ALREADY_EXISTS is success, and the topic is unchanged.
        try await admin.createTopic(topic, partitions: 3)
        try await admin.createTopic(topic, partitions: 5)
        #expect(try await admin.partitionCount(topic) == 3)
    }

    @Test func produceToPartitionAndConsumeFromBeginningKeepsEverything() async throws {
        let topic = uniqueTopic("roundtrip")
        try await admin.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())

        let before = nowMs()
        let headers = [
            KafkaHeader("message-id", "m-1"),
            KafkaHeader("binary", [0, 1, 2, 255]),
            KafkaHeader("empty", [UInt8]()),
        ]
        let first = try await producer.send(
            topic: topic, partition: 1, key: bytes("client-42"), value: bytes("hello"), headers: headers)
        let second = try await producer.send(
            topic: topic, partition: 1, key: nil, value: [], headers: [])
        let after = nowMs()
        #expect(first.partition == 1)
        #expect(first.offset >= 0)
        #expect(second.partition == 1)
        #expect(second.offset == first.offset + 1)

        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 1, .beginning)], logger: testLogger())
        let records = await collect(consumer, count: 2)
        consumer.close()
        await producer.shutdown()

        try #require(records.count == 2)
        let r = records[0]
        #expect(r.topic == topic)
        #expect(r.partition == 1)
        #expect(r.offset == first.offset)
        #expect(text(r.key) == "client-42")
        #expect(text(r.value) == "hello")
        #expect(r.headers == headers)
        #expect(text(r.header("message-id")) == "m-1")
        #expect(r.header("binary") == [0, 1, 2, 255])
        #expect(r.header("missing") == nil)
        #expect(r.timestamp >= before - 1000 && r.timestamp <= after + 1000, "timestamp \(r.timestamp) not in [\(before), \(after)]")

        let empty = records[1]
        #expect(empty.offset == second.offset)
        #expect(empty.key == nil)
        #expect(empty.value.isEmpty)
        #expect(empty.headers.isEmpty)
    }

    @Test func partitionMinusOneChoosesByKey() async throws {
        let topic = uniqueTopic("keyed")
        try await admin.createTopic(topic, partitions: 4)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())
        var byKey: [String: Set<Int32>] = [:]
        for round in 0..<3 {
            for k in 0..<8 {
                let ack = try await producer.send(
                    topic: topic, partition: -1, key: bytes("group-\(k)"), value: bytes("\(round)"), headers: [])
                #expect((0..<4).contains(ack.partition))
                byKey["group-\(k)", default: []].insert(ack.partition)
            }
        }
        await producer.shutdown()
        // The same key always lands on the same partition.
        #expect(byKey.values.allSatisfy { $0.count == 1 })
        #expect(byKey.count == 8)
    }

    @Test func thousandRecordsArriveInOffsetOrderPerPartitionThroughABackpressuredBuffer() async throws {
        let topic = uniqueTopic("thousand")
        try await admin.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())

        // 1,000 concurrent sends; remember where each landed.
        let acks = try await withThrowingTaskGroup(of: (String, Int32, Int64).self) { group in
            for i in 0..<1000 {
                group.addTask {
                    let v = "v-\(i)"
                    let ack = try await producer.send(
                        topic: topic, partition: Int32(i % 2), key: bytes("k-\(i)"), value: bytes(v),
                        headers: [KafkaHeader("i", "\(i)")])
                    return (v, ack.partition, ack.offset)
                }
            }
            var acks: [String: (partition: Int32, offset: Int64)] = [:]
            for try await (v, p, o) in group { acks[v] = (p, o) }
            return acks
        }
        await producer.shutdown()
        #expect(acks.count == 1000)
        for p in [Int32(0), 1] {
            let offsets = acks.values.filter { $0.partition == p }.map(\.offset).sorted()
            #expect(offsets == Array(0..<500).map(Int64.init), "partition \(p) offsets")
        }

        // A tiny buffer and a slow start: the poll thread has to wait for us.
        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .beginning), (topic, 1, .beginning)],
            logger: testLogger(), bufferCapacity: 8)
        try await Task.sleep(for: .milliseconds(300))
        let records = await collect(consumer, count: 1000, timeout: .seconds(40))
        consumer.close()

        #expect(records.count == 1000)
        var lastOffset: [Int32: Int64] = [:]
        var seen = Set<String>()
        for r in records {
            let v = text(r.value) ?? ""
            #expect(seen.insert(v).inserted, "duplicate \(v)")
            if let prev = lastOffset[r.partition] {
                #expect(r.offset == prev + 1, "partition \(r.partition): \(r.offset) after \(prev)")
            } else {
                #expect(r.offset == 0)
            }
            lastOffset[r.partition] = r.offset
            let ack = acks[v]
            #expect(ack?.partition == r.partition && ack?.offset == r.offset, "\(v) acked at \(String(describing: ack))")
            #expect(text(r.header("i")).map { "v-\($0)" } == v)
        }
        #expect(lastOffset[0] == 499)
        #expect(lastOffset[1] == 499)
    }

    @Test func consumerFromEndSeesOnlyNewRecords() async throws {
        let topic = uniqueTopic("end")
        try await admin.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())
        for i in 0..<3 {
            _ = try await producer.send(topic: topic, partition: 0, key: nil, value: bytes("old-\(i)"), headers: [])
        }
        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .end)], logger: testLogger())
        // Once a fetch answered, the consumer's position is resolved to the end.
        #expect(await waitForFetch(consumer, topic: topic, partition: 0))
        var newOffsets: [Int64] = []
        for i in 0..<2 {
            newOffsets.append(try await producer.send(
                topic: topic, partition: 0, key: nil, value: bytes("new-\(i)"), headers: []).offset)
        }
        let records = await collect(consumer, count: 2)
        consumer.close()
        await producer.shutdown()
        #expect(records.map { text($0.value) } == ["new-0", "new-1"])
        #expect(records.map(\.offset) == newOffsets)
        #expect(newOffsets == [3, 4])
    }

    @Test func watermarksFromTheBrokerAndFromFetches() async throws {
        let topic = uniqueTopic("marks")
        try await admin.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())
        for i in 0..<5 {
            _ = try await producer.send(topic: topic, partition: 0, key: nil, value: bytes("\(i)"), headers: [])
        }
        await producer.shutdown()

        let empty = try await admin.watermarks(topic, partition: 1)
        #expect(empty.low == 0 && empty.high == 0)
        let marks = try await admin.watermarks(topic, partition: 0)
        #expect(marks.low == 0)
        // Tansu's ListOffsets "latest" may lag the end: a hint, never beyond it.
        #expect(marks.high >= 1 && marks.high <= 5, "high \(marks.high)")

        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .beginning)], logger: testLogger())
        #expect(consumer.cachedWatermarks(topic: topic, partition: 1) == nil)  // not assigned
        let records = await collect(consumer, count: 5)
        #expect(records.count == 5)
        // The high-water mark from fetch responses is the true end.
        #expect(consumer.cachedWatermarks(topic: topic, partition: 0)?.high == 5)
        await consumer.closeAndWait()
        #expect(consumer.cachedWatermarks(topic: topic, partition: 0) == nil)

        await #expect(throws: KafkaError.self) {
            _ = try await admin.watermarks(topic, partition: 7, timeout: .seconds(2))
        }
    }

    @Test func offsetsForTimesGivesAUsableHint() async throws {
        let topic = uniqueTopic("times")
        try await admin.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(config: producerConfig(), logger: testLogger())
        for i in 0..<3 {
            _ = try await producer.send(topic: topic, partition: 0, key: nil, value: bytes("early-\(i)"), headers: [])
        }
        try await Task.sleep(for: .milliseconds(100))
        let cut = nowMs()
        try await Task.sleep(for: .milliseconds(100))
        for i in 0..<3 {
            _ = try await producer.send(topic: topic, partition: 0, key: nil, value: bytes("late-\(i)"), headers: [])
        }
        await producer.shutdown()

        let hint = try await admin.offsetsForTimes(topic, partitions: [0, 1], timestamp: cut)
        let start = try #require(hint[0])
        // Usable: it does not skip any record at or after the cut (late-* start at 3).
        #expect(start >= 0 && start <= 3, "offset for times: \(start)")
        #expect(hint[1] != nil)

        // Reading from the hint and filtering by record timestamp finds exactly the late records.
        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .at(start))], logger: testLogger())
        let late = await collect(consumer, count: 3) { $0.timestamp >= cut }
        consumer.close()
        #expect(late.map { text($0.value) } == ["late-0", "late-1", "late-2"])
    }

    @Test func createPartitionsIsRefusedByTansuWithAKafkaError() async throws {
        let topic = uniqueTopic("grow")
        try await admin.createTopic(topic, partitions: 2)
        do {
            try await admin.createPartitions(topic, total: 4)
            // Apache Kafka implements CreatePartitions: then the topic must have grown.
            #expect(try await admin.partitionCount(topic) == 4)
        } catch let error as KafkaError {
            // Tansu 0.6: librdkafka answers -165 _UNSUPPORTED_FEATURE.
            #expect(error.code == KafkaError.unsupportedFeature, "\(error)")
            #expect(error.isUnsupported)
            #expect(try await admin.partitionCount(topic) == 2)
        }
        // Shrinking is refused by every broker.
        await #expect(throws: KafkaError.self) {
            try await admin.createPartitions(topic, total: 1)
        }
    }

    @Test func consumerCloseEndsTheRecordsStream() async throws {
        let topic = uniqueTopic("close")
        try await admin.createTopic(topic, partitions: 1)
        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .beginning)], logger: testLogger())
        let reader = Task { () -> Int in
            var n = 0
            for await _ in consumer.records { n += 1 }
            return n  // reached only when the stream finishes
        }
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        consumer.close()
        consumer.close()  // idempotent
        let n = await reader.value
        #expect(n == 0)
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(consumer.isClosed)
        // A fresh iterator on the finished stream ends at once too.
        var again = consumer.records.makeAsyncIterator()
        #expect(await again.next() == nil)
        await consumer.closeAndWait()
        #expect(consumer.cachedWatermarks(topic: topic, partition: 0) == nil)
    }

    @Test func produceToConsumeLatency() async throws {
        let topic = uniqueTopic("latency")
        try await admin.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(config: producerConfig(["linger.ms": "0"]), logger: testLogger())
        let consumer = try KafkaConsumer(
            config: consumerConfig(), assignments: [(topic, 0, .end)], logger: testLogger())
        #expect(await waitForFetch(consumer, topic: topic, partition: 0))

        var iterator = consumer.records.makeAsyncIterator()
        var samples: [Duration] = []
        for i in 0..<50 {
            let start = ContinuousClock.now
            _ = try await producer.send(topic: topic, partition: 0, key: nil, value: bytes("\(i)"), headers: [])
            let record = await iterator.next()
            samples.append(ContinuousClock.now - start)
            #expect(text(record?.value) == "\(i)")
        }
        consumer.close()
        await producer.shutdown()
        samples.sort()
        let median = samples[samples.count / 2]
        let p90 = samples[samples.count * 9 / 10]
        print("HeraldKafka produce->consume latency over \(samples.count): median \(median), p90 \(p90), max \(samples.last!)")
        #expect(median < .milliseconds(500))
    }
}

/// Failure paths that need no broker.
@Suite(.timeLimit(.minutes(1)))
struct KafkaFailureTests {
    @Test func sendToUnreachableBrokerThrowsAndShutdownDoesNotHang() async throws {
        let producer = try KafkaProducer(
            config: ["bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": "1000"], logger: testLogger())
        let start = ContinuousClock.now
        do {
            _ = try await producer.send(topic: "nowhere", partition: 0, key: nil, value: bytes("x"), headers: [])
            Issue.record("send to an unreachable broker succeeded")
        } catch let error as KafkaError {
            #expect(error.isTimeout, "\(error)")
            #expect(error.code == KafkaError.msgTimedOut)
        }
        #expect(ContinuousClock.now - start < .seconds(3))

        let shutdownStart = ContinuousClock.now
        await producer.shutdown()
        #expect(ContinuousClock.now - shutdownStart < .seconds(3))
        await producer.shutdown()  // idempotent

        await #expect(throws: KafkaError.self) {
            _ = try await producer.send(topic: "nowhere", partition: 0, key: nil, value: [1], headers: [])
        }
    }

    @Test func shutdownResumesEveryPendingSend() async throws {
        let producer = try KafkaProducer(
            config: ["bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": "60000"], logger: testLogger())
        let sends = (0..<20).map { i in
            Task { () -> KafkaError? in
                do {
                    _ = try await producer.send(topic: "nowhere", partition: -1, key: bytes("\(i)"), value: [1], headers: [])
                    return nil
                } catch let error as KafkaError {
                    return error
                } catch {
                    return KafkaError(code: 0, message: "unexpected \(error)")
                }
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        await producer.shutdown(timeout: .milliseconds(200))
        for send in sends {
            let error = await send.value
            #expect(error?.isShutdown == true, "\(String(describing: error))")
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func consumerOfAnUnreachableBrokerClosesPromptly() async throws {
        let consumer = try KafkaConsumer(
            config: ["bootstrap.servers": "127.0.0.1:1", "fetch.wait.max.ms": "10"],
            assignments: [("nowhere", 0, .beginning)], logger: testLogger())
        let reader = Task { () -> Int in
            var n = 0
            for await _ in consumer.records { n += 1 }
            return n
        }
        try await Task.sleep(for: .milliseconds(500))  // let it fail to connect (errors are logged, not delivered)
        #expect(consumer.cachedWatermarks(topic: "nowhere", partition: 0) == nil)
        let start = ContinuousClock.now
        await consumer.closeAndWait()
        #expect(await reader.value == 0)
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test func invalidConfigurationThrows() throws {
        #expect(throws: KafkaError.self) {
            _ = try KafkaProducer(config: ["no.such.property": "1"], logger: testLogger())
        }
        #expect(throws: KafkaError.self) {
            _ = try KafkaAdmin(config: ["bootstrap.servers": bootstrap, "acks": "maybe"], logger: testLogger())
        }
        #expect(throws: KafkaError.self) {
            _ = try KafkaConsumer(
                config: ["bootstrap.servers": bootstrap, "fetch.wait.max.ms": "-5"], assignments: [], logger: testLogger())
        }
    }

    @Test func errorDescriptionsNameTheCode() {
        let e = KafkaError(code: KafkaError.unsupportedFeature, message: "nope")
        #expect(e.name == "_UNSUPPORTED_FEATURE")
        #expect(e.description.contains("-165"))
        #expect(e.isUnsupported)
        #expect(!e.isTimeout)
        #expect(KafkaError(code: KafkaError.msgTimedOut, message: "").isRetriable)
        #expect(KafkaHeader("a", "b") == KafkaHeader("a", [98]))
    }
}

/// A broker that serves a later batch before an earlier one is readable (Tansu under
/// concurrent producers to one partition) must not make a following consumer lose records.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct KafkaGapTests {
    @Test("three producers into one partition, a contiguous consumer following it: every record once, in offset order")
    func followingThroughConcurrentProducers() async throws {
        let admin = try KafkaAdmin(config: adminConfig(), logger: testLogger())
        let topic = uniqueTopic("gaps")
        try await admin.createTopic(topic, partitions: 1)
        let follower = try KafkaConsumer(
            config: consumerConfig(["enable.partition.eof": "false"]), assignments: [(topic, 0, .at(0))], logger: testLogger(),
            contiguous: true)
        let perProducer = 3000
        let producers = try (0..<3).map { _ in
            try KafkaProducer(config: producerConfig(["batch.num.messages": "2", "enable.idempotence": "false"]), logger: testLogger())
        }
        let reading = Task { await collect(follower, count: 3 * perProducer, timeout: .seconds(60)) }
        await withTaskGroup(of: Void.self) { group in
            for (p, producer) in producers.enumerated() {
                group.addTask {
                    for chunk in stride(from: 0, to: perProducer, by: 50) {
                        _ = await producer.sendInOrder(
                            (chunk..<min(chunk + 50, perProducer)).map {
                                OutgoingRecord(topic: topic, partition: 0, key: nil, value: bytes("\(p)-\($0)"))
                            })
                    }
                }
            }
        }
        let got = await reading.value
        follower.close()
        for producer in producers { await producer.shutdown() }
        #expect(got.count == 3 * perProducer, "the follower got \(got.count) of \(3 * perProducer)")
        #expect(got.map(\.offset) == (0..<Int64(got.count)).map { $0 }, "every offset once, in order")
        #expect(Set(got.compactMap { text($0.value) }).count == got.count)
    }
}
