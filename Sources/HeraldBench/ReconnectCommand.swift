import ArgumentParser
import Foundation

/// `herald-bench reconnect`: kills a cluster node under its clients and measures their
/// resumes on the others (ReconnectScenario).
struct ReconnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconnect",
        abstract: "Clients on one node, the node killed, every client resumed on the others; write JSON results.")

    @Option(help: "The node the clients first connect to (it is killed), host:port.")
    var victim: String
    @Option(help: "The victim's pid (SIGKILL).")
    var victimPid: Int32
    @Option(help: "Where the clients resume, host:port, comma-separated (round-robin).")
    var resumeAt: String
    @Option(help: "Where the API calls go, host:port (a surviving node).")
    var api: String
    @Option(help: "File holding the admin token (/api/register needs it on a cluster).")
    var adminTokenFile: String?
    @Option(help: "Clients.")
    var clients = 2000
    @Option(help: "Groups (client i joins group i mod groups).")
    var groups = 20
    @Option(help: "System messages sent during the gap (each reaches every client).")
    var gapSystemMessages = 5
    @Option(help: "Connects in flight at once.")
    var concurrency = 2000
    @Option(help: "Seconds a connect or the recovery may take.")
    var timeoutSeconds = 60.0
    @OptionGroup var results: ResultOptions

    func run() async throws {
        FileLimit.raiseToHard()
        let settings: [String: String] = [
            "clients": "\(clients)", "groups": "\(groups)", "gapSystemMessages": "\(gapSystemMessages)",
            "victim": victim, "resumeAt": resumeAt, "api": api, "concurrency": "\(concurrency)",
        ].merging(ScenarioRun.settings(fromPairs: results.setting)) { $1 }
        var result = ScenarioRun(scenario: "reconnect", target: Report.cluster, kind: "herald", settings: settings)
        do {
            guard let victimEndpoint = Endpoint(victim), let apiEndpoint = Endpoint(api) else {
                throw ValidationError("--victim and --api are host:port")
            }
            let resumeEndpoints = try resumeAt.split(separator: ",").map { text in
                guard let endpoint = Endpoint(String(text)) else { throw ValidationError("bad --resume-at \(text)") }
                return endpoint
            }
            let token = try adminTokenFile.map {
                try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            result.reconnect = try await ReconnectScenario(
                clients: clients, groups: groups, gapSystemMessages: gapSystemMessages, victim: victimEndpoint,
                victimPid: victimPid, resumeAt: resumeEndpoints, api: apiEndpoint, adminToken: token,
                concurrency: concurrency, timeoutSeconds: timeoutSeconds
            ).run()
        } catch {
            result.harnessErrors.append("\(error)")
        }
        try results.finish(result)
    }
}
