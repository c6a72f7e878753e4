import ArgumentParser
import Foundation
import HeraldCore
import HeraldServer
import Logging

@main
struct Herald: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Herald, a WebSocket push fabric.",
        subcommands: [Serve.self, Replay.self, Trace.self, Events.self, Nodes.self, Keygen.self])
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a fresh base64 client-ID key (AES-256).")

    func run() {
        print(ClientIDCodec.generateKey())
    }
}
