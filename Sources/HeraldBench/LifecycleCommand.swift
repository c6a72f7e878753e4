import ArgumentParser
import Foundation

/// `herald-bench lifecycle`: lifecycle events' latency and cost on the cluster, and how long a
/// killed node's clients take to be reported node_lost (LifecycleScenario).
struct LifecycleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifecycle",
        abstract: "Connect/disconnect churn with a webhook, then a node killed under its clients; write JSON results.")

    @Option(help: "The nodes the churn connects to, host:port, comma-separated (round-robin).")
    var nodes: String
    @Option(help: "Their pids, comma-separated (their CPU is measured).")
    var nodePids: String
    @Option(help: "The node killed at the end, host:port.")
    var victim: String
    @Option(help: "Its pid (SIGKILL).")
    var victimPid: Int32
    @Option(help: "Where the API calls go, host:port (not the victim).")
    var api: String
    @Option(help: "File holding the admin token.")
    var adminTokenFile: String?
    @Option(help: "Kafka bootstrap servers (the bench reads herald.lifecycle).")
    var brokers: String
    @Option(help: "Connect-and-disconnect cycles.")
    var cycles = 2000
    @Option(help: "Cycles a second.")
    var rate = 200.0
    @Option(help: "Clients on the victim when it is killed.")
    var lostClients = 500
    @Option(help: "The nodes' lease TTL, seconds (node_lost comes after it).")
    var leaseTTL = 10.0
    @OptionGroup var results: ResultOptions

    func run() async throws {
        FileLimit.raiseToHard()
        let settings: [String: String] = [
            "cycles": "\(cycles)", "rate": "\(rate)", "lostClients": "\(lostClients)", "nodes": nodes, "victim": victim,
            "leaseTTL": "\(leaseTTL)",
        ].merging(ScenarioRun.settings(fromPairs: results.setting)) { $1 }
        var result = ScenarioRun(scenario: "lifecycle", target: Report.cluster, kind: "herald", settings: settings)
        do {
            let endpoints = try nodes.split(separator: ",").map { text in
                guard let endpoint = Endpoint(String(text)) else { throw ValidationError("bad --nodes \(text)") }
                return endpoint
            }
            guard let victimEndpoint = Endpoint(victim), let apiEndpoint = Endpoint(api) else {
                throw ValidationError("--victim and --api are host:port")
            }
            let token = try adminTokenFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            result.lifecycle = try await LifecycleScenario(
                nodes: endpoints, nodePids: nodePids.split(separator: ",").compactMap { Int32($0) }, victim: victimEndpoint,
                victimPid: victimPid, api: apiEndpoint, adminToken: token, brokers: brokers, cycles: cycles, rate: rate,
                lostClients: lostClients, leaseTTL: leaseTTL
            ).run()
        } catch {
            result.harnessErrors.append("\(error)")
        }
        try results.finish(result)
    }
}
