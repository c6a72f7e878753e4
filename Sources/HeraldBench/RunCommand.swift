import ArgumentParser
import Foundation
import NIOPosix

/// `herald-bench run`: one scenario against one running server, results as JSON.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run one scenario against one running server and write its results as JSON.")

    enum Scenario: String, ExpressibleByArgument, CaseIterable { case connections, fanout, unicast }
    enum Kind: String, ExpressibleByArgument, CaseIterable { case herald, nchan }

    @Option(help: "connections, fanout or unicast.")
    var scenario: Scenario
    @Option(help: "herald or nchan.")
    var kind: Kind
    @Option(help: "Name in the report, e.g. herald-standalone.")
    var targetName: String
    @Option(help: "Where clients connect, host:port, comma-separated (clients spread round-robin).")
    var clientsAt: String
    @Option(help: "Where the publisher posts, host:port.")
    var publishTo: String
    @Option(help: "The server's processes (RSS and CPU): pid or name=pid, comma-separated.")
    var serverPid: String
    @Option(help: "The server's infrastructure (CPU only): pid or name=pid, comma-separated.")
    var infraPid: String = ""
    @Option(help: "File holding the admin token (Herald cluster: /api/register needs it).")
    var adminTokenFile: String?
    @Option(help: "Load-generator worker processes.")
    var workers = 3
    @Option(help: "Source addresses for the workers' sockets: <prefix>.2, <prefix>.3, …")
    var sourcePrefix = "127.0.1"
    @Option(help: "Clients (connections: idle clients; fanout: group members; unicast: clients).")
    var clients: Int
    @Option(help: "fanout: messages per second to the group, one step each, comma-separated, rising.")
    var fanoutRates = "5,10,20,40,80"
    @Option(help: "fanout, Herald: group (bind_to_group, send_to_group) or system (send_to_system).")
    var fanoutVia = "group"
    @Option(help: "Herald: the server announces joins to members (its --group-presence).")
    var presence = true
    @Option(help: "unicast: messages per second, one step each, comma-separated, rising.")
    var rates = "500,1000,2000,5000,10000"
    @Option(help: "fanout, unicast: seconds of publishing per step.")
    var stepSeconds = 5.0
    @Option(help: "unicast: p99 limit in ms that ends the ramp.")
    var p99Limit = 50.0
    @Option(help: "connections: seconds the clients stay open before the RSS is read.")
    var holdSeconds = 3.0
    @Option(help: "fanout, unicast: seconds of unmeasured publishing at a low rate first.")
    var warmupSeconds = 2.0
    @Option(help: "Length of each message's data string.")
    var payloadBytes = 100
    @Option(help: "Publisher keep-alive HTTP connections.")
    var publisherConnections = 256
    @Option(help: "Connects in flight at once (over all workers).")
    var connectConcurrency = 192
    @OptionGroup var results: ResultOptions

    func run() async throws {
        FileLimit.raiseToHard()
        var result = ScenarioRun(
            scenario: scenario.rawValue, target: targetName, kind: kind.rawValue, settings: recordedSettings)
        do {
            try await measure(into: &result)
        } catch {
            result.harnessErrors.append("\(error)")
        }
        try results.finish(result)
    }

    private var recordedSettings: [String: String] {
        var settings: [String: String] = [
            "workers": "\(workers)", "clients": "\(clients)", "payloadBytes": "\(payloadBytes)",
            "publisherConnections": "\(publisherConnections)", "connectConcurrency": "\(connectConcurrency)",
            "clientsAt": clientsAt, "publishTo": publishTo,
        ]
        switch scenario {
        case .connections: settings["holdSeconds"] = "\(holdSeconds)"
        case .fanout:
            settings["fanoutRates"] = fanoutRates
            settings["stepSeconds"] = "\(stepSeconds)"
            settings["warmupSeconds"] = "\(warmupSeconds)"
            if kind == .herald {
                settings["fanoutVia"] = fanoutVia
                settings["presence"] = "\(presence)"
            }
        case .unicast:
            settings["rates"] = rates
            settings["stepSeconds"] = "\(stepSeconds)"
            settings["p99LimitMs"] = "\(p99Limit)"
            settings["warmupSeconds"] = "\(warmupSeconds)"
        }
        return settings.merging(ScenarioRun.settings(fromPairs: results.setting)) { $1 }
    }

    private func measure(into result: inout ScenarioRun) async throws {
        let endpoints = try clientsAt.split(separator: ",").map { text in
            guard let endpoint = Endpoint(String(text)) else { throw ValidationError("bad --clients-at \(text)") }
            return endpoint
        }
        guard let publishEndpoint = Endpoint(publishTo) else { throw ValidationError("bad --publish-to \(publishTo)") }
        let target: any PushTarget
        switch kind {
        case .herald:
            guard let via = HeraldTarget.FanoutVia(rawValue: fanoutVia) else {
                throw ValidationError("--fanout-via: group or system")
            }
            var herald = HeraldTarget()
            herald.fanoutVia = via
            herald.presence = presence
            if let file = adminTokenFile {
                herald.adminToken = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)
            }
            target = herald
        case .nchan:
            target = NchanTarget()
        }
        let sources = (0..<workers).map { "\(sourcePrefix).\(2 + $0)" }
        let loadgen = try LoadGenerator.start(workers: workers, sourceAddresses: sources)
        let publisherGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let env = ScenarioEnvironment(
            targetName: targetName, target: target, clientEndpoints: endpoints, publishEndpoint: publishEndpoint,
            server: WatchedProcess.list(serverPid, defaultName: "server"),
            infra: WatchedProcess.list(infraPid, defaultName: "infra"), loadgen: loadgen,
            publisherLoop: publisherGroup.next(),
            publisherConnections: publisherConnections, connectConcurrency: connectConcurrency,
            payloadBytes: payloadBytes)
        do {
            switch scenario {
            case .connections:
                result.connections = try await ConnectionsScenario(clients: clients, holdSeconds: holdSeconds).run(env)
            case .fanout:
                result.fanout = try await FanoutScenario(
                    members: clients, rates: list(fanoutRates), secondsPerStep: stepSeconds,
                    warmupSeconds: warmupSeconds
                ).run(env)
            case .unicast:
                result.unicast = try await UnicastScenario(
                    clients: clients, rates: list(rates), secondsPerStep: stepSeconds, warmupSeconds: warmupSeconds,
                    p99LimitMillis: p99Limit
                ).run(env)
            }
        } catch {
            await loadgen.stop()
            try? await publisherGroup.shutdownGracefully()
            throw error
        }
        await loadgen.stop()
        try? await publisherGroup.shutdownGracefully()
    }

    private func list(_ text: String) -> [Double] {
        text.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
    }

}

/// The options every command that writes a run has: settings to record, where to write it.
struct ResultOptions: ParsableArguments {
    @Option(help: "A setting to record with the results, key=value (repeatable).")
    var setting: [String] = []
    @Option(help: "Where to write the JSON results.")
    var out: String

    /// Writes the run; a run the harness could not measure exits 2.
    func finish(_ run: ScenarioRun) throws {
        try run.write(to: out)
        if !run.harnessErrors.isEmpty { throw ExitCode(2) }
    }
}

extension ScenarioRun {
    /// `--setting key=value` options as a dictionary (a bare key gets "").
    static func settings(fromPairs pairs: [String]) -> [String: String] {
        var settings: [String: String] = [:]
        for pair in pairs {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard let key = parts.first else { continue }
            settings[String(key)] = parts.count > 1 ? String(parts[1]) : ""
        }
        return settings
    }

    /// Writes the run as JSON to `path` (creating its directory) and its one-line summary to stderr.
    func write(to path: String) throws {
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
        FileHandle.standardError.write(Data((Summary.line(self) + "\n").utf8))
    }
}
