import ArgumentParser

@main
struct HeraldBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald-bench",
        abstract: "Load generator for Herald and Nchan: WebSocket clients, an HTTP publisher, latency histograms.",
        discussion: "scripts/bench runs every scenario against every server and writes the report.",
        subcommands: [RunCommand.self, KafkaPathCommand.self, ReconnectCommand.self, LifecycleCommand.self, ReportCommand.self, WorkerCommand.self])
}
