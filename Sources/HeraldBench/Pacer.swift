import NIOCore

/// What one paced publishing run did.
struct PublishReport: Sendable {
    var attempted = 0
    var ok = 0
    var errors = 0
    var errorSamples: [String] = []
    var firstSentNanos: UInt64 = 0
    var lastSentNanos: UInt64 = 0
    /// Time from writing a request to its complete answer.
    var ack = LatencyHistogram()
    /// How late each request was written against its schedule (the publisher's own lag).
    var lag = LatencyHistogram()
    /// Requests that found every publisher connection busy and waited for one.
    var waitedForConnection = 0
    /// Whether request k was accepted, by k.
    var accepted: [Bool] = []

    /// Requests written per second over the run.
    var sendRate: Double {
        guard attempted > 1, lastSentNanos > firstSentNanos else { return 0 }
        return Double(attempted - 1) / (Double(lastSentNanos - firstSentNanos) / 1e9)
    }
}

/// Publishes open-loop at a fixed rate: request k is due at start + k/rate whether or not
/// earlier answers are in, so a slow server shows up as latency and errors, not as a lower
/// offered rate. Runs on the pool's event loop.
final class Pacer: @unchecked Sendable {
    private let pool: HTTPClientPool
    private let accepts: @Sendable (HTTPAnswer) -> Bool
    private var report = PublishReport()
    private var issued = 0
    private var completed = 0

    init(pool: HTTPClientPool, accepts: @escaping @Sendable (HTTPAnswer) -> Bool) {
        self.pool = pool
        self.accepts = accepts
    }

    /// Sends `rate × seconds` requests, `make(k)` building the k-th, and returns once every
    /// answer (or error) is in.
    func run(rate: Double, seconds: Double, make: @escaping @Sendable (Int) -> PublishRequest) async -> PublishReport {
        let total = max(1, Int((rate * seconds).rounded()))
        let loop = pool.eventLoop
        let done = loop.makePromise(of: PublishReport.self)
        loop.execute {
            self.report.accepted = [Bool](repeating: false, count: total)
            let start = MonotonicClock.nanos()
            let interval = 1e9 / rate
            loop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(500)) { task in
                let now = MonotonicClock.nanos()
                let due = min(total, Int(Double(now - start) / interval) + 1)
                while self.issued < due {
                    let k = self.issued
                    self.issued += 1
                    let scheduled = start + UInt64(Double(k) * interval)
                    if self.pool.allBusy { self.report.waitedForConnection += 1 }
                    self.pool.send(make(k)).whenComplete { result in
                        self.record(result, k: k, scheduled: scheduled)
                        if self.completed == total { done.succeed(self.report) }
                    }
                }
                if self.issued == total { task.cancel() }
            }
        }
        return (try? await done.futureResult.get()) ?? report
    }

    private func record(_ result: Result<HTTPAnswer, any Error>, k: Int, scheduled: UInt64) {
        completed += 1
        report.attempted += 1
        switch result {
        case .success(let answer):
            if report.firstSentNanos == 0 || answer.sentAt < report.firstSentNanos {
                report.firstSentNanos = answer.sentAt
            }
            report.lastSentNanos = max(report.lastSentNanos, answer.sentAt)
            report.ack.record(nanos: answer.answeredAt - answer.sentAt)
            report.lag.record(nanos: answer.sentAt > scheduled ? answer.sentAt - scheduled : 0)
            if accepts(answer) {
                report.ok += 1
                report.accepted[k] = true
            } else {
                report.errors += 1
                if report.errorSamples.count < 5 {
                    report.errorSamples.append("HTTP \(answer.status): \(answer.body.prefix(200))")
                }
            }
        case .failure(let error):
            report.errors += 1
            if report.errorSamples.count < 5 { report.errorSamples.append("\(error)") }
        }
    }
}
