/// results.md: the targets, one table per scenario with the load generator's CPU beside
/// each figure and who the bottleneck was, the Herald/Nchan ratios, and the settings.
struct MarkdownReport {
    let report: Report

    private static let order = [Report.standalone, Report.cluster, Report.crossNode, Report.kafkaPath, Report.nchan]

    private func runs(_ scenario: String) -> [ScenarioRun] {
        report.runs.filter { $0.scenario == scenario }.sorted {
            (Self.order.firstIndex(of: $0.target) ?? 9) < (Self.order.firstIndex(of: $1.target) ?? 9)
        }
    }

    func render() -> String {
        var md = "# Herald benchmark\n\n"
        md += "Mode: **\(report.quick ? "quick (CI: small N, harness check; figures are not comparable)" : "full")**"
        for key in ["started", "build", "gitCommit"] { if let v = report.meta[key] { md += " · \(key): \(v)" } }
        md += "\n\n"
        md +=
            "Machine: "
            + ["machine", "kernel", "swift", "nginx", "nchan"].compactMap { key in
                report.meta[key].map { "\(key) \($0)" }
            }
            .joined(separator: " · ") + "\n\n"
        md +=
            "CPU figures are in cores (CPU seconds per second over the measured window; the machine has \(report.meta["cores"] ?? "?")). "
        md +=
            "\"load-gen\" is all load-generator processes (workers and publisher), \"server\" the server's processes, "
        md += "\"infra\" Kafka (Tansu + adapter), etcd and nginx of the cluster.\n\n"
        if !report.failures.isEmpty {
            md += "**Harness failures:**\n\n" + report.failures.map { "- \($0)\n" }.joined() + "\n"
        }
        md += targets() + connections() + fanout() + unicast() + kafkaPath() + reconnect() + lifecycle() + cpuPerMessage() + ratios() + settings()
        return md
    }

    private func targets() -> String {
        var md = "## Targets\n\n| target | result | limit | met |\n|---|---|---|---|\n"
        for t in report.targets {
            md += "| \(t.target) | \(t.figure) | \(t.limit) | \(t.met ? "yes" : "**no**") |\n"
        }
        return md + "\n"
    }

    private func connections() -> String {
        let runs = runs("connections")
        guard !runs.isEmpty else { return "" }
        var md = "## 1. Connections (idle WebSocket clients)\n\n"
        md +=
            "| server | connected | connect rate | connect p50 / p99 | server RSS before → after | RSS per connection | PSS per connection | server CPU | infra CPU | load-gen CPU | bottleneck |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|\n"
        for run in runs {
            guard let c = run.connections else {
                md += failedRow(run, columns: 10)
                continue
            }
            md += "| \(Format.label(run.target)) | \(c.connected) / \(c.clients) | \(Format.count(c.connectRate))/s "
            md += "| \(Format.ms(c.connectLatency.p50)) / \(Format.ms(c.connectLatency.p99)) "
            md +=
                "| \(Format.mib(c.serverRSSBeforeBytes)) → \(Format.mib(c.serverRSSAfterBytes)) | \(Format.kib(c.rssPerConnectionBytes)) | \(Format.kib(c.pssPerConnectionBytes)) "
            md +=
                "| \(Format.cores(c.cpu.serverCores)) | \(Format.cores(c.cpu.infraCores)) | \(Format.cores(c.cpu.loadgenCores)) | \(c.bottleneck) |\n"
        }
        return md + notes(runs) + "\n"
    }

    private func fanout() -> String {
        let runs = runs("fanout")
        guard !runs.isEmpty else { return "" }
        var md = "## 2. Fan-out (one group / one channel)\n\n"
        md += "| server | members | peak deliveries/s | ramp ended |\n|---|---|---|---|\n"
        for run in runs {
            guard let f = run.fanout else {
                md += failedRow(run, columns: 3)
                continue
            }
            md +=
                "| \(Format.label(run.target)) | \(f.membersOpenAtStart) | \(Format.count(f.peakDeliveriesPerSecond)) | \(f.stopReason) |\n"
        }
        md +=
            "\n| server | publish rate | deliveries/s (offered) | p50 | p99 | p999 | max | publish ack p99 | lost | errors | server CPU | infra CPU | load-gen CPU | bottleneck | step |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for run in runs {
            for s in run.fanout?.steps ?? [] {
                md += "| \(Format.label(run.target)) | \(Format.count(s.rate)) msg/s "
                md += "| \(Format.count(s.deliveriesPerSecond)) (\(Format.count(s.offeredDeliveriesPerSecond))) "
                md += measuredCells(s) + "| \(s.keptUp ? "kept up" : s.verdict) |\n"
            }
        }
        md += "\nFilling the group: "
        md +=
            runs.compactMap { run in
                run.fanout.map { f in
                    run.kind == "nchan"
                        ? "\(Format.label(run.target)) members subscribe to the channel as they connect"
                        : "\(Format.label(run.target)) bound \(f.joined) members in \(String(format: "%.1f", f.joinSeconds)) s, "
                            + "then \(Format.count(Double(f.presenceFrames))) presence frames had arrived after another "
                            + "\(String(format: "%.1f", f.presenceSettleSeconds)) s"
                }
            }.joined(separator: "; ") + ".\n"
        md += warmups(runs.compactMap { run in run.fanout.map { (run.target, $0.warmup) } })
        return md + notes(runs) + "\n"
    }

    private func unicast() -> String {
        let runs = runs("unicast")
        guard !runs.isEmpty else { return "" }
        var md = "## 3. Unicast (random client per message, rising rates)\n\n"
        md += "| server | clients | highest sustained rate | ramp ended |\n|---|---|---|---|\n"
        for run in runs {
            guard let u = run.unicast else {
                md += failedRow(run, columns: 3)
                continue
            }
            md +=
                "| \(Format.label(run.target)) | \(u.connected) | \(Format.count(u.highestSustainedRate))/s | \(u.stopReason) |\n"
        }
        md += "\n" + warmups(runs.compactMap { run in run.unicast.map { (run.target, $0.warmup) } })
        md +=
            "\n| server | rate | sent/s | p50 | p99 | p999 | max | publish ack p99 | lost | errors | server CPU | infra CPU | load-gen CPU | bottleneck | step |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for run in runs {
            for s in run.unicast?.steps ?? [] {
                md += "| \(Format.label(run.target)) | \(Format.count(s.rate))/s | \(Format.count(s.sendRate)) "
                md += measuredCells(s) + "| \(s.passed ? "pass" : s.verdict) |\n"
            }
        }
        return md + notes(runs) + "\n"
    }

    /// Herald's cross-node latency beside the Kafka path's at the same rates: what Herald adds
    /// to the produce-to-consume floor of the same broker.
    private func kafkaPath() -> String {
        guard let cross = report.run("unicast", Report.crossNode)?.unicast,
            let kafka = report.run("unicast", Report.kafkaPath)?.unicast
        else { return "" }
        var md = "## Cross-node over the Kafka path\n\n"
        md += "The same records (Herald's unicast envelope, key and headers, the same payload) produced and consumed by the bench "
        md += "itself through the same broker, with a node's producer settings and fetch wait: the floor under Herald's cross-node latency.\n\n"
        md += "| rate | cross-node p50 | cross-node p99 | Kafka path p50 | Kafka path p99 | p99 ratio | broker CPU (cross-node / Kafka path) |\n"
        md += "|---|---|---|---|---|---|---|\n"
        for pair in Report.kafkaPathRatios(cross: cross, kafka: kafka) {
            let c = pair.cross, k = pair.kafka
            md += "| \(Format.count(pair.rate))/s | \(Format.ms(c.latency.p50)) | \(Format.ms(c.latency.p99))\(c.passed ? "" : " (\(c.verdict))") "
            md += "| \(Format.ms(k.latency.p50)) | \(Format.ms(k.latency.p99)) | \(Format.ratio(pair.ratio)) "
            md += "| \(Format.cores(c.cpu.infraCores)) / \(Format.cores(k.cpu.infraCores)) |\n"
        }
        md += "\nKafka path ramp: highest sustained \(Format.count(kafka.highestSustainedRate))/s (\(kafka.stopReason)).\n\n"
        return md
    }

    /// CPU per unit of work, split by side: per connect, per fan-out delivery, per unicast
    /// message; Herald's server cost over Nchan's at the same offered rate where both ran it.
    private func reconnect() -> String {
        guard let run = runs("reconnect").first else { return "" }
        var md = "## Reconnect: a node killed under its clients, every client resumed on the others\n\n"
        guard let r = run.reconnect else { return md + failedRow(run, columns: 2) + "\n" }
        md += "\(r.ready) clients on node1, each in one of \(r.groups) groups, with a position; node1 killed (SIGKILL); "
        md += "during the gap \(r.gapSystemMessages) system messages, one per group and one per old client ID "
        md += "(\(r.gapUnicastTaken) taken; the rest answered 4040 once the lease was gone); then every client "
        md += "resumes on node2 or node3 (\(run.settings["concurrency"] ?? "?") connects in flight).\n\n"
        md += "| figure | value |\n|---|---|\n"
        md += "| resumed / refused / failed / mismatched | \(r.resumed) / \(r.refused) / \(r.failed) / \(r.mismatched) |\n"
        if !r.refusedReasons.isEmpty { md += "| refusals | \(r.refusedReasons.map { "\($0.key): \($0.value)" }.sorted().joined(separator: ", ")) |\n" }
        md += "| kill to every client seeing the drop | \(Format.ms(r.killToDroppedMs)) |\n"
        md += "| gap sends | \(Format.ms(r.gapSendMs)) |\n"
        md += "| reconnect to welcome, p50 / p90 / p99 / max | \(Format.ms(r.resumeMs.p50)) / \(Format.ms(r.resumeMs.p90)) / \(Format.ms(r.resumeMs.p99)) / \(Format.ms(r.resumeMs.max)) |\n"
        md += "| reconnect to last recovered frame, p50 / p99 | \(Format.ms(r.recoveredMs.p50)) / \(Format.ms(r.recoveredMs.p99)) |\n"
        md += "| kill to 99% resumed (last recovered frame) | \(r.secondsTo99PercentResumed.map { String(format: "%.2f s", $0) } ?? "never") |\n"
        md += "| recovered frames | \(r.recoveredFrames) in \(String(format: "%.2f s", r.reconnectSpanSeconds)): \(Format.count(r.recoveredFramesPerSecond))/s |\n"
        if !r.errors.isEmpty { md += "\nErrors: " + r.errors.joined(separator: "; ") + "\n" }
        return md + "\n"
    }

    private func lifecycle() -> String {
        guard let run = runs("lifecycle").first else { return "" }
        var md = "## Lifecycle events: latency, cost, node_lost\n\n"
        guard let r = run.lifecycle else { return md + failedRow(run, columns: 2) + "\n" }
        md += "\(r.cycles) clients connect (welcome) and disconnect at \(Format.count(r.rate))/s, round-robin on the nodes, for a "
        md += "system with a webhook; the bench reads herald.lifecycle itself and runs the receiver. Then \(r.lostClients) clients "
        md += "on one node, the node killed (SIGKILL; lease TTL \(Format.count(r.leaseTTL)) s).\n\n"
        md += "| figure | value |\n|---|---|\n"
        md += "| cycles done / failed | \(r.cycles - r.failedCycles) / \(r.failedCycles) in \(String(format: "%.1f s", r.churnSeconds)) |\n"
        md += "| events in Kafka / by webhook | \(r.eventsInKafka) / \(r.eventsByWebhook) |\n"
        md += "| cause to Kafka consumer, p50 / p99 / max | \(Format.ms(r.kafkaMs.p50)) / \(Format.ms(r.kafkaMs.p99)) / \(Format.ms(r.kafkaMs.max)) |\n"
        md += "| cause to webhook, p50 / p99 / max | \(Format.ms(r.webhookMs.p50)) / \(Format.ms(r.webhookMs.p99)) / \(Format.ms(r.webhookMs.max)) |\n"
        md += "| nodes' CPU per connect and disconnect (over idle) | \(String(format: "%.0f µs (%.0f µs)", r.nodeCPUMicrosPerCycle, r.nodeCPUOverIdleMicrosPerCycle)); idle \(String(format: "%.2f", r.nodesIdleCores)) cores, machine \(String(format: "%.2f", r.machineCores)) cores busy |\n"
        md += "| node_lost reported / reporters | \(r.lostReported) of \(r.lostClients) / \(r.lostReporters) |\n"
        md += "| kill to the last node_lost in Kafka / by webhook | \(Format.ms(r.killToLostInKafkaMs)) / \(Format.ms(r.killToLostByWebhookMs)) |\n"
        return md + "\n"
    }

    private func cpuPerMessage() -> String {
        var md = "## CPU per message\n\n"
        md += "CPU time per unit of work at each step (cores divided by the rate actually achieved).\n\n"
        md += "| scenario | server | step | unit | server | infra | load-gen | server / Nchan's |\n|---|---|---|---|---|---|---|---|\n"
        for run in runs("connections") {
            guard let c = run.connections, c.connectRate > 0 else { continue }
            let ratio = serverRatio("connections", run.target) { r in r.connections.map { $0.cpu.serverCores / max($0.connectRate, 1) } }
            md += costRow("connections", run.target, "\(c.connected) clients", "connect", c.cpu, per: c.connectRate, ratio: ratio)
        }
        for run in runs("fanout") {
            for s in run.fanout?.steps ?? [] where s.deliveriesPerSecond > 0 {
                let ratio = serverRatio("fanout", run.target) { r in
                    r.fanout?.steps.first { $0.rate == s.rate }.map { $0.cpu.serverCores / max($0.deliveriesPerSecond, 1) }
                }
                md += costRow("fan-out", run.target, "\(Format.count(s.rate)) msg/s", "delivery", s.cpu, per: s.deliveriesPerSecond, ratio: ratio)
            }
        }
        for run in runs("unicast") {
            for s in run.unicast?.steps ?? [] where s.sendRate > 0 {
                let ratio = serverRatio("unicast", run.target) { r in
                    r.unicast?.steps.first { $0.rate == s.rate }.map { $0.cpu.serverCores / max($0.sendRate, 1) }
                }
                md += costRow("unicast", run.target, "\(Format.count(s.rate))/s", "message", s.cpu, per: s.sendRate, ratio: ratio)
            }
        }
        return md + "\n"
    }

    /// One row of the CPU-per-message table: each side's cores over `rate`, in µs.
    private func costRow(
        _ scenario: String, _ target: String, _ step: String, _ unit: String, _ cpu: CPUFigures, per rate: Double, ratio: String
    ) -> String {
        func micros(_ cores: Double) -> String { String(format: "%.1f µs", cores / rate * 1_000_000) }
        return "| \(scenario) | \(Format.label(target)) | \(step) | \(unit) | \(micros(cpu.serverCores)) | \(micros(cpu.infraCores)) "
            + "| \(micros(cpu.loadgenCores)) | \(ratio) |\n"
    }

    /// This run's server CPU per unit over Nchan's, from `cost` of each run; "–" for Nchan itself
    /// or where Nchan has no such step.
    private func serverRatio(_ scenario: String, _ target: String, _ cost: (ScenarioRun) -> Double?) -> String {
        guard target != Report.nchan, let mine = runs(scenario).first(where: { $0.target == target }).flatMap(cost),
            let nchan = runs(scenario).first(where: { $0.target == Report.nchan }).flatMap(cost), nchan > 0
        else { return "–" }
        return Format.ratio(mine / nchan)
    }

    /// The cells a fan-out step and a unicast step share: latency, answers, losses, CPU, bottleneck.
    private func measuredCells(_ s: some MeasuredStep) -> String {
        "| \(Format.ms(s.latency.p50)) | \(Format.ms(s.latency.p99)) | \(Format.ms(s.latency.p999)) | \(Format.ms(s.latency.max)) "
            + "| \(Format.ms(s.publishAck.p99)) | \(s.lost) | \(s.publishErrors) | \(Format.cores(s.cpu.serverCores)) "
            + "| \(Format.cores(s.cpu.infraCores)) | \(Format.cores(s.cpu.loadgenCores)) | \(s.bottleneck) "
    }

    private func warmups(_ warmups: [(String, WarmupResult)]) -> String {
        "Warm-up before measuring (not in the figures, still accounted for): "
            + warmups.map { target, w in
                "\(Format.label(target)) \(w.published) messages at \(Format.count(w.rate))/s, \(w.received) received, \(w.lost) lost, \(w.publishErrors) errors"
            }.joined(separator: "; ") + ".\n"
    }

    private func ratios() -> String {
        guard !report.ratios.isEmpty else { return "" }
        var md =
            "## Herald / Nchan\n\n| scenario | figure | Herald | Herald | Nchan | Herald/Nchan | better |\n|---|---|---|---|---|---|---|\n"
        for r in report.ratios {
            md +=
                "| \(r.scenario) | \(r.figure) | \(Format.label(r.herald)) | \(Self.number(r.heraldValue)) | \(Self.number(r.nchanValue)) "
            md += "| \(Format.ratio(r.ratio)) | \(r.better) |\n"
        }
        return md + "\n"
    }

    private static func number(_ value: Double) -> String {
        value >= 100 ? Format.count(value) : String(format: "%.2f", value)
    }

    private func settings() -> String {
        var md = "## Settings\n\n"
        for key in report.meta.keys.sorted() where key.hasPrefix("setting.") {
            md += "- \(key.dropFirst("setting.".count)): \(report.meta[key]!)\n"
        }
        md += "\nPer run:\n\n"
        for run in report.runs {
            let pairs = run.settings.keys.sorted().map { "\($0)=\(run.settings[$0]!)" }.joined(separator: ", ")
            md += "- \(Format.label(run.target)) \(run.scenario): \(pairs)\n"
        }
        return md
    }

    private func notes(_ runs: [ScenarioRun]) -> String {
        var md = ""
        for run in runs {
            // Where the CPU went at the last (heaviest) step.
            let last =
                run.unicast?.steps.last.map { ($0.rate, $0.cpu, "msg/s") }
                ?? run.fanout?.steps.last.map { ($0.rate, $0.cpu, "msg/s to the group") }
            if let (rate, cpu, unit) = last, cpu.byProcess.count > 1 {
                let parts = cpu.byProcess.sorted { $0.value > $1.value }.map { "\($0.key) \(Format.cores($0.value))" }
                md +=
                    "\n\(Format.label(run.target)) CPU by process at \(Format.count(rate)) \(unit): "
                    + parts.joined(separator: ", ")
                md +=
                    ", load generator \(Format.cores(cpu.loadgenCores)), other \(Format.cores(cpu.otherCores)) (cores).\n"
            }
            var errors = run.harnessErrors.map { "harness: \($0)" }
            errors += run.connections?.errors ?? []
            errors += run.fanout?.errors ?? []
            for step in run.fanout?.steps ?? [] where !step.errors.isEmpty {
                errors.append("at \(Int(step.rate)) msg/s: " + step.errors.prefix(3).joined(separator: "; "))
            }
            errors += run.unicast?.connectErrors ?? []
            for step in run.unicast?.steps ?? [] where !step.errors.isEmpty {
                errors.append("at \(Int(step.rate))/s: " + step.errors.prefix(3).joined(separator: "; "))
            }
            if !errors.isEmpty {
                md += "\n\(Format.label(run.target)): " + errors.prefix(6).joined(separator: " · ") + "\n"
            }
        }
        return md
    }

    private func failedRow(_ run: ScenarioRun, columns: Int) -> String {
        "| \(Format.label(run.target)) | harness failed: \(run.harnessErrors.joined(separator: "; "))"
            + String(repeating: " |", count: columns) + "\n"
    }
}
