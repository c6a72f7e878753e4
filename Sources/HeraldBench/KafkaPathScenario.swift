import Foundation
import HeraldCluster
import HeraldCore
import HeraldKafka
import Logging

/// The Kafka path alone: the bench's own librdkafka producer and an assigned consumer of one
/// partition, through the broker the cluster uses, at the unicast ramp's rates. Each record is
/// the one a Herald node produces for a unicast send (the same envelope, key and headers, the
/// same payload), produced with a node's producer settings and read with its fetch wait. What
/// it measures is the floor under Herald's cross-node latency: produce to consume, no HTTP,
/// no WebSocket, no Herald.
struct KafkaPathScenario: Sendable {
    var brokers: String
    var topic: String
    var rates: [Double]
    var secondsPerStep: Double
    var warmupSeconds: Double
    var payloadBytes: Int
    var fetchWaitMillis: Int
    var p99LimitMillis = 50.0

    func run(meter: CPUMeter) async throws -> UnicastResult {
        let logger = Logger(label: "herald-bench.kafka-path")
        let admin = try KafkaAdmin(config: ["bootstrap.servers": brokers], logger: logger)
        try await admin.createTopic(topic, partitions: 1)
        let start = try await admin.watermarks(topic, partition: 0).high
        let producer = try KafkaProducer(
            config: [
                "bootstrap.servers": brokers, "acks": "all", "linger.ms": "1",
                "queue.buffering.max.messages": "100000", "enable.idempotence": "false",
                "message.timeout.ms": "5000",
            ], logger: logger)
        let consumer = try KafkaConsumer(
            config: [
                "bootstrap.servers": brokers, "fetch.wait.max.ms": String(fetchWaitMillis),
                "fetch.error.backoff.ms": "100",
            ],
            assignments: [(topic, 0, .at(start))], logger: logger, bufferCapacity: 4096)
        let received = Shared(ReceivedRecords())
        let reader = Task {
            for await record in consumer.records {
                let now = MonotonicClock.nanos()
                guard let stamp = record.value.withUnsafeBytes({ BenchStamp.find(in: $0) }) else { continue }
                received.withLock { $0.add(stamp, at: now) }
            }
        }
        let records = RecordMaker(payloadBytes: payloadBytes)
        // Warm-up: the producer's connection and the consumer's first fetches.
        let warm = await publish(
            producer, records, phase: ScenarioEnvironment.warmupPhase, rate: min(rates.first ?? 100, 200),
            seconds: warmupSeconds)
        let warmReceived = await drain(received, phase: ScenarioEnvironment.warmupPhase, expected: UInt64(warm.ok))
        let warmup = WarmupResult(
            seconds: warmupSeconds, rate: min(rates.first ?? 100, 200), published: warm.ok, publishErrors: warm.errors,
            received: warmReceived, lost: UInt64(warm.ok) - min(UInt64(warm.ok), warmReceived))

        var steps: [UnicastStep] = []
        var highest = 0.0
        var stopReason = "every step passed"
        for (i, rate) in rates.enumerated() {
            let phase = UInt32(100 + i)
            let cpuStart = try await meter.sample()
            let report = await publish(producer, records, phase: phase, rate: rate, seconds: secondsPerStep)
            let got = await drain(received, phase: phase, expected: UInt64(report.ok))
            let cpuEnd = try await meter.sample()
            let step = self.step(
                rate: rate, report: report, phase: received.withLock { $0.phase(phase) }, received: got,
                cpu: meter.figures(from: cpuStart, to: cpuEnd))
            steps.append(step)
            if step.passed {
                highest = rate
            } else {
                stopReason = "at \(Int(rate))/s: \(step.verdict)"
                break
            }
        }
        reader.cancel()
        await consumer.closeAndWait()
        await producer.shutdown()
        return UnicastResult(
            clients: 0, connected: 0, connectErrors: [], warmup: warmup, steps: steps, highestSustainedRate: highest,
            stopReason: stopReason)
    }

    private func step(
        rate: Double, report: PublishReport, phase: ReceivedRecords.Phase, received: UInt64, cpu: CPUFigures
    ) -> UnicastStep {
        var lost: UInt64 = 0
        var duplicates: UInt64 = 0
        for (k, ok) in report.accepted.enumerated() where ok {
            let n = k < phase.perMessage.count ? phase.perMessage[k] : 0
            if n == 0 { lost += 1 }
            if n > 1 { duplicates += UInt64(n - 1) }
        }
        var errors = report.errorSamples
        if lost > 0 { errors.append("\(lost) messages lost (not consumed)") }
        let latency = phase.latency.summary
        let verdict = UnicastStep.verdict(
            errors: report.errors, lost: lost, closed: false, p99: latency.p99, limit: p99LimitMillis,
            sendRate: report.sendRate, rate: rate, noun: "produce", sender: "producer")
        return UnicastStep(
            rate: rate, seconds: secondsPerStep, published: report.ok, publishErrors: report.errors, received: received,
            lost: lost, duplicates: duplicates, deliveredDespiteError: 0, outOfOrder: phase.outOfOrder,
            sendRate: report.sendRate, latency: latency, cdf: phase.latency.cdf, publishAck: report.ack.summary,
            publisherLag: report.lag.summary, serverCloses: [:], cpu: cpu,
            bottleneck: cpu.bottleneck(publisher: report, rate: rate), passed: verdict == "ok", verdict: verdict,
            errors: errors)
    }

    /// Produces `rate × seconds` records open-loop (record k due at start + k/rate), each
    /// stamped with its send time, and returns once every delivery report is in.
    private func publish(
        _ producer: KafkaProducer, _ records: RecordMaker, phase: UInt32, rate: Double, seconds: Double
    ) async -> PublishReport {
        let total = max(1, Int((rate * seconds).rounded()))
        let interval = 1e9 / rate
        let start = MonotonicClock.nanos()
        let state = Shared(PublishReport())
        state.withLock { $0.accepted = [Bool](repeating: false, count: total) }
        await withTaskGroup(of: Void.self) { group in
            var issued = 0
            while issued < total {
                let now = MonotonicClock.nanos()
                let due = min(total, Int(Double(now - start) / interval) + 1)
                while issued < due {
                    let k = issued
                    issued += 1
                    let scheduled = start + UInt64(Double(k) * interval)
                    group.addTask {
                        let sentAt = MonotonicClock.nanos()
                        let record = records.record(phase: phase, seq: UInt64(phase) << 32 | UInt64(k + 1), sentAt: sentAt)
                        let outcome: String?
                        do {
                            _ = try await producer.send(
                                topic: topic, partition: 0, key: record.key, value: record.value, headers: record.headers)
                            outcome = nil
                        } catch {
                            outcome = "\(error)"
                        }
                        let answeredAt = MonotonicClock.nanos()
                        state.withLock { report in
                            report.attempted += 1
                            if report.firstSentNanos == 0 || sentAt < report.firstSentNanos { report.firstSentNanos = sentAt }
                            report.lastSentNanos = max(report.lastSentNanos, sentAt)
                            report.ack.record(nanos: answeredAt - sentAt)
                            report.lag.record(nanos: sentAt > scheduled ? sentAt - scheduled : 0)
                            if let outcome {
                                report.errors += 1
                                if report.errorSamples.count < 5 { report.errorSamples.append(outcome) }
                            } else {
                                report.ok += 1
                                report.accepted[k] = true
                            }
                        }
                    }
                }
                if issued < total { try? await Task.sleep(for: .microseconds(500)) }
            }
        }
        return state.value
    }

    /// Waits until `expected` records of `phase` are in, or nothing more came for 3 s (30 s at most).
    private func drain(_ received: Shared<ReceivedRecords>, phase: UInt32, expected: UInt64) async -> UInt64 {
        let deadline = ContinuousClock.now + .seconds(30)
        var last: UInt64 = 0
        var lastChange = ContinuousClock.now
        while true {
            let got = received.withLock { $0.phase(phase).received }
            if got >= expected { return got }
            if got != last {
                last = got
                lastChange = .now
            } else if ContinuousClock.now - lastChange > .seconds(3) || ContinuousClock.now > deadline {
                return got
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Herald's unicast record for a bench message: `WireFormat.encode` of the message a node
/// would build, keyed by the client ID, with `KafkaBus.headers(of:)`.
struct RecordMaker: Sendable {
    let payloadBytes: Int
    let clientId: ClientID
    let rawClientId: String

    init(payloadBytes: Int) {
        self.payloadBytes = payloadBytes
        let id = ClientID(address: "127.0.0.1:7801", slot: 0, epoch: 1, serial: 1, systemId: "bench")
        clientId = id
        // A sealed ID is what the key holds on a real node: its length, not its secrecy, matters here.
        rawClientId = (try? ClientIDCodec(base64Keys: Data(repeating: 7, count: 32).base64EncodedString()))
            .map { $0.seal(id) } ?? String(repeating: "c", count: 60)
    }

    func record(phase: UInt32, seq: UInt64, sentAt: UInt64) -> (key: [UInt8], value: [UInt8], headers: [KafkaHeader]) {
        let data = BenchStamp(phase: phase, seq: seq, sentAt: sentAt).text(size: payloadBytes)
        let message = BusMessage(
            messageId: "kp-\(phase)-\(seq)", systemId: "bench", target: .client(clientId, raw: rawClientId),
            body: .push(PushPayload(data: JSONValue.string(data))), acceptedAt: Int64(Date().timeIntervalSince1970 * 1000),
            acceptedBy: "node2")
        return (Array(rawClientId.utf8), WireFormat.encode(message), KafkaBus.headers(of: message))
    }
}

/// Records consumed, by phase: latency from the stamp's send time, count per message.
struct ReceivedRecords: Sendable {
    struct Phase: Sendable {
        var received: UInt64 = 0
        var outOfOrder: UInt64 = 0
        var lastSeq: UInt64 = 0
        var latency = LatencyHistogram()
        var perMessage: [UInt32] = []
    }

    private var phases: [UInt32: Phase] = [:]

    mutating func add(_ stamp: BenchStamp, at now: UInt64) {
        var phase = phases[stamp.phase] ?? Phase()
        phase.received += 1
        if stamp.seq < phase.lastSeq { phase.outOfOrder += 1 }
        phase.lastSeq = max(phase.lastSeq, stamp.seq)
        phase.latency.record(nanos: now > stamp.sentAt ? now - stamp.sentAt : 0)
        let k = Int(stamp.seq & 0xFFFF_FFFF) - 1
        if k >= 0, k < 10_000_000 {
            if k >= phase.perMessage.count {
                phase.perMessage += [UInt32](repeating: 0, count: k + 1 - phase.perMessage.count)
            }
            phase.perMessage[k] += 1
        }
        phases[stamp.phase] = phase
    }

    func phase(_ id: UInt32) -> Phase { phases[id] ?? Phase() }
}
