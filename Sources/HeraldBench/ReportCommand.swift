import ArgumentParser
import Foundation

/// `herald-bench report`: merges the scenario results of one bench run into results.json
/// and results.md; exits non-zero when the harness failed (in quick mode also on errors
/// and lost messages; performance targets are reported, never fatal).
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Merge a bench run's scenario results into results.json and results.md.")

    @Option(help: "The run directory; scenario results are read from its raw/ folder.") var dir: String
    @Flag(help: "Quick mode: errors and lost messages fail the run too.") var quick = false
    @Option(help: "Facts to record (machine, build, settings), key=value (repeatable).") var meta: [String] = []

    func run() async throws {
        let raw = URL(fileURLWithPath: dir).appendingPathComponent("raw")
        let files = try FileManager.default.contentsOfDirectory(at: raw, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
        var runs: [ScenarioRun] = []
        var unreadable: [String] = []
        for file in files {
            do {
                runs.append(try JSONDecoder().decode(ScenarioRun.self, from: Data(contentsOf: file)))
            } catch {
                unreadable.append("\(file.lastPathComponent): \(error)")
            }
        }
        var facts: [String: String] = ["cores": "\(ProcFS.cores)"]
        for pair in meta {
            let parts = pair.split(separator: "=", maxSplits: 1)
            facts[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        var report = Report(meta: facts, quick: quick, runs: runs)
        report.failures += unreadable.map { "unreadable result \($0)" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let base = URL(fileURLWithPath: dir)
        try encoder.encode(report).write(to: base.appendingPathComponent("results.json"))
        try MarkdownReport(report: report).render().write(
            to: base.appendingPathComponent("results.md"), atomically: true, encoding: .utf8)
        for target in report.targets {
            FileHandle.standardError.write(
                Data(
                    "bench: target \(target.met ? "met" : "MISSED"): \(target.target): \(target.figure) (limit \(target.limit))\n"
                        .utf8))
        }
        if !report.failures.isEmpty {
            for failure in report.failures { FileHandle.standardError.write(Data("bench: FAILED: \(failure)\n".utf8)) }
            throw ExitCode(1)
        }
    }
}
