import HeraldCore
import HeraldKafka
import Logging
import Synchronization

/// Recovers, from Kafka, what resuming clients missed (docs/architecture.md, "Resume"). For
/// each client it reads the old slot's unicast partition from its position to the end, and
/// the broadcast partitions of its groups and system from its position up to the cut at which
/// it joined this node's live stream: before that cut is recovered, after it is live, so
/// nothing is missed or repeated. Resumes that arrive together (a node died and its clients
/// all come back) share one scan: each partition is read once, from the oldest position asked.
public final class ClusterRecovery: Sendable {
    /// One resume waiting for a scan.
    struct Request: Sendable {
        var token: SessionToken
        var groups: Set<String>
        var since: LogCut
        /// The cut at which the connection joined this node's live stream.
        var upto: LogCut
        /// The broadcast partitions of its groups and system.
        var partitions: Set<Int32>
        var limits: ResumeLimits
        var answer: CheckedContinuation<ResumeRecovery, Never>
    }

    /// What one request found so far.
    struct Found {
        var records: [(message: BusMessage, partition: String, offset: Int64, timestamp: Int64)] = []
        var bytes = 0
        var tooMany = false
        /// A record in its range is older than the window: the position was older than it said.
        var tooOld = false
        /// Its messages did not fit in the scan's budget.
        var overBudget = false
    }

    struct Queue {
        var waiting: [Request] = []
        var scans = 0
    }

    private let scanner: KafkaScanner
    private let admin: KafkaAdmin
    private let codec: ClientIDCodec
    private let unicastTopic: String
    private let broadcastTopic: String
    private let logger: Logger
    private let queue = Mutex(Queue())
    /// Resumes that may wait for a scan; more are told to retry (1013).
    static let maxWaiting = 10_000
    /// Resumes one scan serves, and scans at once. A node's clients come back together when it
    /// dies: one scan for many of them reads each partition once instead of once per batch.
    static let maxPerScan = 1024
    static let maxScans = 2
    /// What one scan may hold for its resumes in all (each is also bounded by its own limit):
    /// the resumes whose messages would go past it are told to retry (1013).
    static let scanBudgetBytes = 64 << 20
    /// How long a scan may take before its resumes are told to retry.
    static let scanDeadline: Duration = .seconds(10)
    /// How long a scan waits for more resumes to share it.
    static let gatherDelay: Duration = .milliseconds(20)

    init(
        scanner: KafkaScanner, admin: KafkaAdmin, codec: ClientIDCodec, unicastTopic: String, broadcastTopic: String,
        logger: Logger
    ) {
        self.scanner = scanner
        self.admin = admin
        self.codec = codec
        self.unicastTopic = unicastTopic
        self.broadcastTopic = broadcastTopic
        self.logger = logger
    }

    /// The broadcast partitions a client's messages travel on: its system's and its groups'.
    static func partitions(of token: SessionToken, count: Int) -> Set<Int32> {
        var partitions: Set<Int32> = [KafkaBus.partition(for: token.systemId, count: Int32(count))]
        for binding in token.groups {
            partitions.insert(KafkaBus.partition(for: "\(token.systemId)/\(binding.group)", count: Int32(count)))
        }
        return partitions
    }

    /// The messages after `since` for the token's old client ID, groups or system, up to
    /// `upto` on the broadcast partitions and to the end of the old slot's partition, oldest
    /// first; each with the cut just past it in the new connection's terms.
    /// `partitions`: the token's broadcast partitions (`partitions(of:count:)`).
    func recover(
        _ token: SessionToken, since: LogCut, upto: LogCut, partitions: Set<Int32>, limits: ResumeLimits
    ) async -> ResumeRecovery {
        let lead = await withCheckedContinuation { (answer: CheckedContinuation<ResumeRecovery, Never>) in
            let request = Request(
                token: token, groups: Set(token.groups.map(\.group)), since: since, upto: upto, partitions: partitions,
                limits: limits, answer: answer)
            // A scan starts when fewer than `maxScans` run and a batch's worth waits beyond
            // what the running ones will take (or none runs).
            let outcome = queue.withLock { queue -> Bool? in
                guard queue.waiting.count < Self.maxWaiting else { return nil }
                queue.waiting.append(request)
                guard queue.scans == 0 || (queue.scans < Self.maxScans && queue.waiting.count > queue.scans * Self.maxPerScan)
                else { return false }
                queue.scans += 1
                return true
            }
            switch outcome {
            case nil: answer.resume(returning: .unavailable("too many resumes waiting; retry"))
            case true?: Task { await self.scanWhileWaiting() }
            case false?: break
            }
        }
        return lead
    }

    /// Scans for the waiting resumes, a batch at a time, until none waits (beside up to
    /// `maxScans - 1` others doing the same).
    private func scanWhileWaiting() async {
        while true {
            try? await Task.sleep(for: Self.gatherDelay)
            let batch = queue.withLock { queue -> [Request] in
                let batch = Array(queue.waiting.prefix(Self.maxPerScan))
                queue.waiting.removeFirst(batch.count)
                if batch.isEmpty { queue.scans -= 1 }
                return batch
            }
            guard !batch.isEmpty else { return }
            let answers = await scan(for: batch)
            for (request, answer) in zip(batch, answers) { request.answer.resume(returning: answer) }
        }
    }

    /// One scan over the union of the batch's ranges; each request's answer, in order.
    private func scan(for batch: [Request]) async -> [ResumeRecovery] {
        let started = ContinuousClock.now
        let read = Atomic<Int>(0)
        defer {
            logger.debug(
                "resume scan", metadata: ["resumes": "\(batch.count)", "records": "\(read.load(ordering: .relaxed))", "took": "\(ContinuousClock.now - started)"])
        }
        var ranges: [String: KafkaScanner.Range] = [:]
        func widen(_ topic: String, _ partition: Int32, from: Int64, to: Int64?) {
            let key = "\(topic)/\(partition)"
            if var range = ranges[key] {
                range.from = min(range.from, from)
                if let old = range.to, let to { range.to = max(old, to) }
                ranges[key] = range
            } else {
                ranges[key] = KafkaScanner.Range(topic: topic, partition: partition, from: from, to: to)
            }
        }
        for request in batch {
            widen(unicastTopic, Int32(bitPattern: request.since.slot), from: request.since.unicast, to: nil)
            for partition in request.partitions {
                widen(broadcastTopic, partition, from: request.since.broadcast[Int(partition)], to: request.upto.broadcast[Int(partition)])
            }
        }
        // What the broker no longer keeps cannot be recovered: such a resume is refused, never
        // answered with part of what it missed.
        var lows: [String: Int64] = [:]
        do {
            for (key, range) in ranges {
                lows[key] = try await admin.watermarks(range.topic, partition: range.partition).low
            }
        } catch {
            return batch.map { _ in .unavailable("cannot read Kafka; retry") }
        }
        let found = Mutex([Found](repeating: Found(), count: batch.count))
        let budget = Mutex(0)
        let codec = self.codec
        let unicastTopic = self.unicastTopic
        let broadcastTopic = self.broadcastTopic
        let oldest = batch.map { Clock.nowMillis() - $0.limits.windowMillis }
        let lookup = BatchIndex(batch)
        let complete: Bool
        do {
            complete = try await scanner.scan(Array(ranges.values), admin: admin, deadline: Self.scanDeadline) { record in
                read.add(1, ordering: .relaxed)
                // Only the resumes this record could be for, by its target (not every resume
                // of the batch per record: a dead node's clients come back a thousand at once).
                guard let message = WireFormat.decode(record.value, codec: codec) else { return }
                let wanted = lookup.candidates(for: message).filter {
                    Self.covers(batch[$0], record, unicastTopic: unicastTopic, broadcastTopic: broadcastTopic)
                }
                guard !wanted.isEmpty else { return }
                let key = "\(record.topic)/\(record.partition)"
                let size = ResumeRecovery.size(of: message)
                budget.withLock { held in found.withLock { found in
                    for index in wanted where record.timestamp < oldest[index] { found[index].tooOld = true }
                    for index in wanted where ResumeRecovery.isFor(batch[index].token, groups: batch[index].groups, message) {
                        guard !found[index].tooMany, !found[index].overBudget else { continue }
                        if found[index].records.count >= batch[index].limits.maxMessages
                            || found[index].bytes + size > batch[index].limits.maxBytes
                        {
                            found[index].tooMany = true
                        } else if held + size > Self.scanBudgetBytes {
                            found[index].overBudget = true
                        } else {
                            held += size
                            found[index].bytes += size
                            found[index].records.append((message, key, record.offset, record.timestamp))
                            continue
                        }
                        held -= found[index].bytes
                        found[index].bytes = 0
                        found[index].records = []
                    }
                } }
            }
        } catch {
            logger.warning("a resume scan failed", metadata: ["error": "\(error)"])
            return batch.map { _ in .unavailable("cannot read Kafka; retry") }
        }
        guard complete else {
            logger.warning("a resume scan did not finish in time", metadata: ["resumes": "\(batch.count)"])
            return batch.map { _ in .unavailable("recovery took too long; retry") }
        }
        let results = found.withLock { $0 }
        return batch.indices.map { index in
            let request = batch[index]
            let unicastKey = "\(unicastTopic)/\(request.since.slot)"
            guard lows[unicastKey, default: 0] <= request.since.unicast,
                request.partitions.allSatisfy({ lows["\(broadcastTopic)/\($0)", default: 0] <= request.since.broadcast[Int($0)] })
            else { return .refused("messages no longer kept") }
            if results[index].tooOld { return .refused("window exceeded") }
            if results[index].tooMany { return .refused("too many messages") }
            if results[index].overBudget { return .unavailable("recovery is busy; retry") }
            return .recovered(
                Self.ordered(results[index].records, since: request.since, upto: request.upto, broadcastTopic: broadcastTopic),
                from: Self.start(since: request.since, upto: request.upto))
        }
    }

    /// The resumes of a batch by what they recover: their old client ID, each of their groups,
    /// their system.
    struct BatchIndex: Sendable {
        var byClient: [String: [Int]] = [:]
        var byGroup: [String: [Int]] = [:]
        var bySystem: [String: [Int]] = [:]

        init(_ batch: [Request]) {
            for (index, request) in batch.enumerated() {
                byClient[request.token.clientId, default: []].append(index)
                bySystem[request.token.systemId, default: []].append(index)
                for group in request.groups { byGroup["\(request.token.systemId)/\(group)", default: []].append(index) }
            }
        }

        /// The resumes `message` may be for (`ResumeRecovery.isFor` has the last word).
        func candidates(for message: BusMessage) -> [Int] {
            switch message.target {
            case .client(_, let raw): byClient[raw] ?? []
            case .group(let name): byGroup["\(message.systemId)/\(name)"] ?? []
            case .system: bySystem[message.systemId] ?? []
            }
        }
    }

    /// Whether `record` lies in what `request` must read.
    static func covers(_ request: Request, _ record: KafkaRecord, unicastTopic: String, broadcastTopic: String) -> Bool {
        if record.topic == unicastTopic {
            return record.partition == Int32(bitPattern: request.since.slot) && record.offset >= request.since.unicast
        }
        guard record.topic == broadcastTopic, request.partitions.contains(record.partition) else { return false }
        let index = Int(record.partition)
        return record.offset >= request.since.broadcast[index] && record.offset < request.upto.broadcast[index]
    }

    /// The cut before the first recovered message, in the new connection's terms.
    static func start(since: LogCut, upto: LogCut) -> LogCut {
        LogCut(slot: upto.slot, epoch: upto.epoch, unicast: upto.unicast, broadcast: since.broadcast, at: since.at)
    }

    /// Oldest first across partitions (by record time), each partition in its own order; each
    /// message with the cut just past it: the new node's slot and unicast position (the new
    /// client ID has no earlier messages), and the broadcast positions recovered so far.
    static func ordered(
        _ records: [(message: BusMessage, partition: String, offset: Int64, timestamp: Int64)], since: LogCut, upto: LogCut,
        broadcastTopic: String
    ) -> [(message: BusMessage, cut: LogCut)] {
        var lanes: [String: ArraySlice<(message: BusMessage, partition: String, offset: Int64, timestamp: Int64)>] = [:]
        for record in records { lanes[record.partition, default: []].append(record) }
        var cut = start(since: since, upto: upto)
        var out: [(message: BusMessage, cut: LogCut)] = []
        out.reserveCapacity(records.count)
        while true {
            var oldest: (key: String, timestamp: Int64)?
            for (key, lane) in lanes {
                guard let head = lane.first else { continue }
                if let best = oldest, (best.timestamp, best.key) <= (head.timestamp, key) { continue }
                oldest = (key, head.timestamp)
            }
            guard let key = oldest?.key, let next = lanes[key]?.popFirst() else { break }
            cut.at = max(cut.at, next.timestamp)
            if next.partition.hasPrefix(broadcastTopic + "/"), let partition = Int(next.partition.dropFirst(broadcastTopic.count + 1)),
                partition < cut.broadcast.count
            {
                cut.broadcast[partition] = max(cut.broadcast[partition], next.offset + 1)
            }
            out.append((next.message, cut))
        }
        return out
    }
}
