import ArgumentParser
import Foundation

/// `herald-bench kafka-path`: the unicast ramp through the broker alone (KafkaPathScenario),
/// written as a unicast run of the target "kafka-path" beside the cross-node one.
struct KafkaPathCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka-path",
        abstract: "Produce and consume Herald's unicast records through the broker at rising rates; write JSON results.")

    @Option(help: "Kafka bootstrap servers, host:port.")
    var brokers: String
    @Option(help: "The topic to use (one partition; created if missing).")
    var topic = "herald-bench.kafka-path"
    @Option(help: "Messages per second, one step each, comma-separated, rising.")
    var rates = "500,1000,2000,5000,10000"
    @Option(help: "Seconds of producing per step.")
    var stepSeconds = 5.0
    @Option(help: "Seconds of unmeasured producing at a low rate first.")
    var warmupSeconds = 2.0
    @Option(help: "Length of each message's data string.")
    var payloadBytes = 100
    @Option(help: "The consumer's fetch.wait.max.ms (a Herald node's --fetch-wait-ms).")
    var fetchWaitMs = 10
    @Option(help: "p99 limit in ms that ends the ramp.")
    var p99Limit = 50.0
    @Option(help: "The broker's processes (CPU): pid or name=pid, comma-separated.")
    var infraPid = ""
    @OptionGroup var results: ResultOptions

    func run() async throws {
        let settings: [String: String] = [
            "brokers": brokers, "topic": topic, "rates": rates, "stepSeconds": "\(stepSeconds)",
            "warmupSeconds": "\(warmupSeconds)", "payloadBytes": "\(payloadBytes)", "fetchWaitMs": "\(fetchWaitMs)",
            "p99LimitMs": "\(p99Limit)",
        ].merging(ScenarioRun.settings(fromPairs: results.setting)) { $1 }
        var result = ScenarioRun(scenario: "unicast", target: Report.kafkaPath, kind: "kafka", settings: settings)
        let scenario = KafkaPathScenario(
            brokers: brokers, topic: topic,
            rates: rates.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) },
            secondsPerStep: stepSeconds, warmupSeconds: warmupSeconds, payloadBytes: payloadBytes,
            fetchWaitMillis: fetchWaitMs, p99LimitMillis: p99Limit)
        // No server and no workers: the producer and consumer are this process (the load generator).
        let meter = CPUMeter(
            server: [], infra: WatchedProcess.list(infraPid, defaultName: "infra"),
            loadgen: LoadGenerator(workers: [], sourceAddresses: []))
        do {
            result.unicast = try await scenario.run(meter: meter)
        } catch {
            result.harnessErrors.append("\(error)")
        }
        try results.finish(result)
    }
}
