import ArgumentParser

@main
struct HeraldBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald-bench",
        abstract: "Load generator for Herald and Nchan (being written).")

    func run() async throws {}
}
