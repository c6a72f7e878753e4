import ArgumentParser
import Foundation
import HeraldServer
import Logging
import NIOCore

/// `herald serve`: every setting (`ServeSetting.all`) can also come from HERALD_<NAME> in the
/// environment or from a JSON config file (`--config`); the command line wins over the
/// environment, which wins over the file. The options are read from the settings table, not
/// declared here, so that a setting is named in one place.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Herald node.",
        usage: "herald serve [--<setting> <value>] ... [--dev]",
        discussion: """
            Every option below can also be set with the environment variable shown beside it, or \
            in a JSON config file given with --config (keys are the option names, e.g. \
            {"port": 7801, "lease-ttl": 10}). The command line wins over the environment, which \
            wins over the file. An invalid value stops the node at start, naming the setting.

            SETTINGS:
            """ + "\n" + ServeSetting.helpText)

    @Argument(parsing: .allUnrecognized, help: .hidden)
    var options: [String] = []

    func run() async throws {
        let configuration: HeraldConfiguration
        let level: Logger.Level
        do {
            let commandLine = try CommandLineSettings.parse(options)
            let environment = ProcessInfo.processInfo.environment
            let settings = try SettingsReader(
                commandLine: commandLine, environment: environment,
                configFile: commandLine["config"] ?? environment[ServeSetting.environmentName(of: "config")])
            var read = HeraldConfiguration()
            for setting in ServeSetting.all {
                if let text = settings.string(setting.name) { try setting.apply(text, to: &read) }
            }
            try settings.rejectUnknownFileKeys()
            configuration = read
            level = read.logLevel
        } catch {
            FileHandle.standardError.write(Data("herald: \(error)\n".utf8))
            throw ExitCode(2)
        }

        LoggingSystem.bootstrap { JSONLogHandler(label: $0, level: level) }
        let logger = Logger(label: "herald")
        let node: HeraldNode
        do {
            node = try HeraldNode(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            FileHandle.standardError.write(Data("herald: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if configuration.dev, configuration.clientIdKeys == nil {
            logger.warning("dev mode: using an ephemeral client-ID key; client IDs will not survive a restart")
        }
        do {
            try await node.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            let message = "port \(configuration.port) on \(configuration.host) is in use by another process; stop it or choose another with --port"
            logger.critical("cannot start: \(message)")
            FileHandle.standardError.write(Data("herald: \(message)\n".utf8))
            throw ExitCode(1)
        }
    }
}
