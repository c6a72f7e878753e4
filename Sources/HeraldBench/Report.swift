import Foundation

/// Every scenario run of one bench run, checked against the issue's targets and compared
/// Herald to Nchan; written as results.json and results.md.
struct Report: Codable, Sendable {
    var meta: [String: String]
    var quick: Bool
    var runs: [ScenarioRun]
    var targets: [TargetCheck] = []
    var ratios: [Ratio] = []
    /// Why the run fails (harness errors; in quick mode also errors and lost messages).
    var failures: [String] = []

    struct TargetCheck: Codable, Sendable {
        var target: String
        var figure: String
        var limit: String
        var met: Bool
    }

    struct Ratio: Codable, Sendable {
        var scenario: String
        var figure: String
        var herald: String
        var heraldValue: Double
        var nchanValue: Double
        /// Herald / Nchan.
        var ratio: Double
        var better: String
    }

    static let standalone = "herald-standalone"
    static let cluster = "herald-cluster"
    static let crossNode = "herald-cross-node"
    static let nchan = "nchan"
    /// The bench's own producer and consumer through the cluster's broker (`herald-bench kafka-path`).
    static let kafkaPath = "kafka-path"
    static let targetRate = 5000.0

    init(meta: [String: String], quick: Bool, runs: [ScenarioRun]) {
        self.meta = meta
        self.quick = quick
        self.runs = runs
        checkTargets()
        compare()
        findFailures()
    }

    func run(_ scenario: String, _ target: String) -> ScenarioRun? {
        runs.first { $0.scenario == scenario && $0.target == target }
    }

    // MARK: targets

    /// The targets of the performance issue (#12), each from this run's figures.
    private mutating func checkTargets() {
        func at(_ steps: [UnicastStep]?, _ rate: Double) -> UnicastStep? { steps?.first { $0.rate == rate } }
        let rate = Self.targetRate
        let uStandalone = run("unicast", Self.standalone)?.unicast
        let uNchan = run("unicast", Self.nchan)?.unicast
        if let h = at(uStandalone?.steps, rate), let n = at(uNchan?.steps, rate), h.sendRate > 0, n.sendRate > 0 {
            let hCost = h.cpu.serverCores / h.sendRate * 1e6
            let nCost = n.cpu.serverCores / n.sendRate * 1e6
            targets.append(
                TargetCheck(
                    target: "unicast standalone: server CPU per message at 5,000/s, over Nchan's",
                    figure: String(format: "%.0f µs vs %.0f µs (%@)", hCost, nCost, Format.ratio(hCost / nCost)),
                    limit: "at most 1.5×", met: hCost <= 1.5 * nCost))
        }
        if let h = uStandalone, let n = uNchan {
            targets.append(
                TargetCheck(
                    target: "unicast standalone: highest sustained rate",
                    figure: "\(Format.count(h.highestSustainedRate))/s vs \(Format.count(n.highestSustainedRate))/s",
                    limit: "at least Nchan's", met: h.highestSustainedRate >= n.highestSustainedRate))
        }
        if let h = run("connections", Self.standalone)?.connections, let n = run("connections", Self.nchan)?.connections,
            n.connectRate > 0
        {
            targets.append(
                TargetCheck(
                    target: "connections standalone: connect rate at \(Format.count(Double(h.clients))) clients",
                    figure: "\(Format.count(h.connectRate))/s vs \(Format.count(n.connectRate))/s (\(Format.ratio(h.connectRate / n.connectRate)))",
                    limit: "at least 0.8× Nchan's", met: h.connectRate >= 0.8 * n.connectRate && h.failed == 0))
        }
        for name in [Self.standalone, Self.cluster] {
            guard let connections = run("connections", name)?.connections else { continue }
            targets.append(
                TargetCheck(
                    target:
                        "idle RSS per connection at \(Format.count(Double(connections.clients))) connections, \(Format.label(name))",
                    figure: Format.kib(connections.rssPerConnectionBytes), limit: "at most 6.5 KiB",
                    met: connections.rssPerConnectionBytes <= 6.5 * 1024 && connections.failed == 0))
        }
        if let herald = run("fanout", Self.standalone)?.fanout, let nchan = run("fanout", Self.nchan)?.fanout {
            if let h = herald.steps.first(where: { $0.rate == 20 }), let n = nchan.steps.first(where: { $0.rate == 20 }),
                n.latency.p99 > 0
            {
                targets.append(
                    TargetCheck(
                        target: "fan-out standalone: p99 at 20 msg/s to \(Format.count(Double(herald.members))) members",
                        figure: "\(Format.ms(h.latency.p99)) vs \(Format.ms(n.latency.p99)) (\(Format.ratio(h.latency.p99 / n.latency.p99)))"
                            + (h.keptUp ? "" : " (\(h.verdict))"),
                        limit: "at most 2× Nchan's", met: h.keptUp && h.latency.p99 <= 2 * n.latency.p99))
            }
            // When both kept up with every step, the ramp reached neither limit: the peaks are the offered load.
            let bothKeptUp =
                !herald.steps.isEmpty && !nchan.steps.isEmpty && (herald.steps + nchan.steps).allSatisfy(\.keptUp)
            targets.append(
                TargetCheck(
                    target: "fan-out standalone: peak deliveries/s",
                    figure:
                        "\(Format.count(herald.peakDeliveriesPerSecond)) vs \(Format.count(nchan.peakDeliveriesPerSecond))"
                        + " (\(Format.ratio(herald.peakDeliveriesPerSecond / max(nchan.peakDeliveriesPerSecond, 1))))"
                        + (bothKeptUp ? "; both kept up with every rate offered: no limit reached" : ""),
                    limit: "at least 1.5× Nchan's",
                    met: herald.peakDeliveriesPerSecond >= 1.5 * nchan.peakDeliveriesPerSecond))
        }
        if let cross = run("unicast", Self.crossNode)?.unicast {
            let step = at(cross.steps, rate)
            targets.append(
                TargetCheck(
                    target: "cross-node unicast: 5,000 msg/s sustained, p99",
                    figure: "highest sustained \(Format.count(cross.highestSustainedRate))/s; at 5,000/s: "
                        + (step.map { Format.ms($0.latency.p99) + ($0.passed ? "" : " (\($0.verdict))") } ?? "step not reached"),
                    limit: "sustained, p99 at most 25 ms",
                    met: step.map { $0.passed && $0.latency.p99 <= 25 } ?? false))
            if let kafka = run("unicast", Self.kafkaPath)?.unicast {
                let pairs = Self.kafkaPathRatios(cross: cross, kafka: kafka)
                targets.append(
                    TargetCheck(
                        target: "cross-node p99 over the Kafka path's p99, at each rate both ran",
                        figure: pairs.isEmpty
                            ? "no common rate"
                            : pairs.map { "\(Format.count($0.rate))/s \(Format.ratio($0.ratio))" }.joined(separator: ", "),
                        limit: "at most 2× at each rate", met: !pairs.isEmpty && pairs.allSatisfy { $0.ratio <= 2 }))
            }
        }
        var clean: [String] = []
        for run in runs where run.kind == "herald" {
            let problems = Self.problems(in: run, strict: quick)
            if !problems.isEmpty {
                clean.append("\(Format.label(run.target)) \(run.scenario): \(problems.joined(separator: "; "))")
            }
        }
        targets.append(
            TargetCheck(
                target: "no errors and no lost messages in any scenario (Herald)",
                figure: clean.isEmpty ? "none" : clean.joined(separator: " · "), limit: "none", met: clean.isEmpty))
    }

    /// Herald cross-node p99 over the Kafka path's at each rate both measured (the cross-node
    /// ramp's steps, passed or not, against Kafka-path steps that consumed everything).
    static func kafkaPathRatios(cross: UnicastResult, kafka: UnicastResult) -> [(rate: Double, cross: UnicastStep, kafka: UnicastStep, ratio: Double)] {
        cross.steps.compactMap { c in
            guard let k = kafka.steps.first(where: { $0.rate == c.rate && $0.lost == 0 }), k.latency.p99 > 0 else { return nil }
            return (c.rate, c, k, c.latency.p99 / k.latency.p99)
        }
    }

    /// Errors and lost messages of one run. A ramp ends at the first step the server cannot
    /// take, so that step's errors and losses find the limit and are not counted, except at
    /// unicast rates up to the 5,000 msg/s the targets name. `strict` counts every step.
    static func problems(in run: ScenarioRun, strict: Bool) -> [String] {
        var problems = run.harnessErrors.map { "harness: \($0)" }
        if let c = run.connections {
            if c.failed > 0 { problems.append("\(c.failed) connects failed") }
            let closes = c.serverCloses.values.reduce(0, +)
            if closes > 0 { problems.append("\(closes) idle clients closed by the server") }
        }
        if let f = run.fanout {
            problems += f.warmup.problems
            let last = f.steps.last.map { $0.keptUp ? nil : $0.rate } ?? nil
            for step in f.steps where strict || step.rate != last {
                let at = "at \(Int(step.rate)) msg/s"
                if step.publishErrors > 0 { problems.append("\(step.publishErrors) publish errors \(at)") }
                if step.lost > 0 { problems.append("\(step.lost) deliveries lost \(at)") }
                if step.duplicates > 0 { problems.append("\(step.duplicates) duplicate deliveries \(at)") }
                let closes = step.serverCloses.values.reduce(0, +)
                if closes > 0 { problems.append("\(closes) members closed by the server \(at)") }
            }
            if f.connected < f.members { problems.append("\(f.members - f.connected) members failed to connect") }
            if f.membersOpenAtStart < f.connected {
                problems.append("\(f.connected - f.membersOpenAtStart) members closed while the group filled")
            }
        }
        if let r = run.reconnect {
            if r.resumed < r.ready { problems.append("\(r.ready - r.resumed) of \(r.ready) clients did not resume (\(r.refusedReasons))") }
            if r.mismatched > 0 { problems.append("\(r.mismatched) clients recovered another count than was sent to them") }
            if r.incomplete > 0 { problems.append("\(r.incomplete) resumed clients did not get all their recovered frames") }
        }
        if let u = run.unicast {
            if u.connected < u.clients { problems.append("\(u.clients - u.connected) clients failed to connect") }
            problems += u.warmup.problems
            let last = u.steps.last.map { $0.passed ? nil : $0.rate } ?? nil
            for step in u.steps where strict || step.rate != last || step.rate <= targetRate {
                if step.publishErrors > 0 {
                    problems.append("\(step.publishErrors) publish errors at \(Int(step.rate))/s")
                }
                if step.lost > 0 { problems.append("\(step.lost) lost at \(Int(step.rate))/s") }
                if step.duplicates > 0 { problems.append("\(step.duplicates) duplicates at \(Int(step.rate))/s") }
                let closes = step.serverCloses.values.reduce(0, +)
                if closes > 0 { problems.append("\(closes) clients closed at \(Int(step.rate))/s") }
            }
        }
        return problems
    }

    // MARK: Herald / Nchan

    private mutating func compare() {
        let heralds = [Self.standalone, Self.cluster, Self.crossNode]
        if let nchan = run("connections", Self.nchan)?.connections {
            for name in heralds {
                guard let herald = run("connections", name)?.connections else { continue }
                add(
                    "connections", "connect rate (/s)", name, herald.connectRate, nchan.connectRate,
                    higherIsBetter: true)
                add(
                    "connections", "RSS per connection (bytes)", name, herald.rssPerConnectionBytes,
                    nchan.rssPerConnectionBytes, higherIsBetter: false)
            }
        }
        if let nchan = run("fanout", Self.nchan)?.fanout {
            for name in heralds {
                guard let herald = run("fanout", name)?.fanout else { continue }
                add(
                    "fanout", "peak deliveries/s", name, herald.peakDeliveriesPerSecond, nchan.peakDeliveriesPerSecond,
                    higherIsBetter: true)
                // Latency at the highest rate both kept up with.
                let common = Set(herald.steps.filter(\.keptUp).map(\.rate)).intersection(
                    nchan.steps.filter(\.keptUp).map(\.rate)
                ).max()
                if let rate = common, let h = herald.steps.first(where: { $0.rate == rate }),
                    let n = nchan.steps.first(where: { $0.rate == rate })
                {
                    let at = "at \(Int(rate)) msg/s"
                    add("fanout", "p50 \(at) (ms)", name, h.latency.p50, n.latency.p50, higherIsBetter: false)
                    add("fanout", "p99 \(at) (ms)", name, h.latency.p99, n.latency.p99, higherIsBetter: false)
                    add("fanout", "p999 \(at) (ms)", name, h.latency.p999, n.latency.p999, higherIsBetter: false)
                }
            }
        }
        if let nchan = run("unicast", Self.nchan)?.unicast {
            for name in heralds {
                guard let herald = run("unicast", name)?.unicast else { continue }
                add(
                    "unicast", "highest sustained rate (msg/s)", name, herald.highestSustainedRate,
                    nchan.highestSustainedRate, higherIsBetter: true)
                // p99 at the highest rate both sustained.
                let common = Set(herald.steps.filter(\.passed).map(\.rate)).intersection(
                    nchan.steps.filter(\.passed).map(\.rate)
                ).max()
                if let rate = common, let h = herald.steps.first(where: { $0.rate == rate }),
                    let n = nchan.steps.first(where: { $0.rate == rate })
                {
                    add(
                        "unicast", "p99 at \(Int(rate))/s (ms)", name, h.latency.p99, n.latency.p99,
                        higherIsBetter: false)
                }
            }
        }
    }

    private mutating func add(
        _ scenario: String, _ figure: String, _ herald: String, _ h: Double, _ n: Double, higherIsBetter: Bool
    ) {
        let ratio = n != 0 ? h / n : 0
        let better = h == n ? "even" : ((h > n) == higherIsBetter ? "Herald" : "Nchan")
        ratios.append(
            Ratio(
                scenario: scenario, figure: figure, herald: herald, heraldValue: h, nchanValue: n, ratio: ratio,
                better: better))
    }

    private mutating func findFailures() {
        for run in runs where !run.harnessErrors.isEmpty {
            failures.append("\(run.target) \(run.scenario): harness: \(run.harnessErrors.joined(separator: "; "))")
        }
        for scenario in ["connections", "fanout", "unicast"] where !runs.contains(where: { $0.scenario == scenario }) {
            failures.append("no \(scenario) run")
        }
        if quick {
            for run in runs {
                let problems = Self.problems(in: run, strict: true).filter { !$0.hasPrefix("harness:") }
                if !problems.isEmpty {
                    failures.append("\(run.target) \(run.scenario): \(problems.joined(separator: "; "))")
                }
            }
        }
    }
}

/// Number formats for the Markdown report.
enum Format {
    static func label(_ target: String) -> String {
        switch target {
        case Report.standalone: "Herald standalone"
        case Report.cluster: "Herald cluster (3 nodes)"
        case Report.crossNode: "Herald cross-node (Kafka)"
        case Report.nchan: "Nchan"
        case Report.kafkaPath: "Kafka path (bench producer → broker → consumer)"
        default: target
        }
    }

    static func count(_ value: Double) -> String {
        let rounded = Int(value.rounded())
        var digits = String(abs(rounded))
        var grouped = ""
        while digits.count > 3 {
            grouped = "," + digits.suffix(3) + grouped
            digits.removeLast(3)
        }
        return (rounded < 0 ? "-" : "") + digits + grouped
    }

    static func ms(_ value: Double) -> String {
        value < 10 ? String(format: "%.2f ms", value) : String(format: "%.1f ms", value)
    }

    static func kib(_ bytes: Double) -> String { String(format: "%.1f KiB", bytes / 1024) }
    static func mib(_ bytes: UInt64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    static func cores(_ value: Double) -> String { String(format: "%.2f", value) }
    static func ratio(_ value: Double) -> String { value == 0 ? "–" : String(format: "%.2f×", value) }
}

/// One line per scenario run, for the log.
enum Summary {
    static func line(_ run: ScenarioRun) -> String {
        var text = "bench: \(run.target) \(run.scenario): "
        if let c = run.connections {
            text +=
                "\(c.connected)/\(c.clients) connected at \(Format.count(c.connectRate))/s, \(Format.kib(c.rssPerConnectionBytes))/conn"
        }
        if let f = run.fanout {
            text += "peak \(Format.count(f.peakDeliveriesPerSecond)) deliveries/s; "
            text += f.steps.map {
                "\(Int($0.rate)) msg/s: \(Format.count($0.deliveriesPerSecond))/s p99 \(Format.ms($0.latency.p99)) \($0.verdict)"
            }.joined(separator: ", ")
        }
        if let u = run.unicast {
            text += "highest sustained \(Format.count(u.highestSustainedRate))/s; "
            text += u.steps.map { "\(Int($0.rate))/s p99 \(Format.ms($0.latency.p99)) \($0.verdict)" }.joined(
                separator: ", ")
        }
        if let r = run.reconnect {
            text += "\(r.resumed)/\(r.ready) resumed (\(r.refused) refused, \(r.failed) failed, \(r.mismatched) mismatched); "
            text += "resume p50 \(Format.ms(r.resumeMs.p50)) p99 \(Format.ms(r.resumeMs.p99)); "
            text += "99% resumed \(r.secondsTo99PercentResumed.map { String(format: "%.2f s", $0) } ?? "never") after the kill; "
            text += "\(Format.count(r.recoveredFramesPerSecond)) recovered frames/s"
        }
        if !run.harnessErrors.isEmpty { text += " HARNESS ERROR: \(run.harnessErrors.joined(separator: "; "))" }
        return text
    }
}
