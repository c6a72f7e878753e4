import Configuration
import Foundation
import HeraldServer

/// Reads `herald serve` settings as text by their option name (`lease-ttl`), in order of precedence
/// from the command line, the environment (`HERALD_LEASE_TTL`) and a JSON config file
/// (`{"lease-ttl": 10}`). Each setting's own parser (`ServeSetting.apply`) turns the text into its
/// value, so a malformed value fails with a message naming the setting.
///
/// swift-configuration layers the sources; values are read as text because its typed getters turn
/// a malformed value into "missing", which would silently mean the default. The config file is
/// parsed here too, for the same reason and to reject unknown keys.
final class SettingsReader {
    private let reader: ConfigReader
    private let fileKeys: Set<String>
    private var asked: Set<String> = []

    /// `commandLine` holds the options given on the command line, by option name, as text.
    init(commandLine: [String: String], environment: [String: String], configFile: String?) throws(ConfigurationError) {
        var providers: [any ConfigProvider] = [
            Self.provider(named: "command line", commandLine),
            EnvironmentVariablesProvider(environmentVariables: environment).prefixKeys(with: ConfigKey(["herald"])),
        ]
        var fileKeys: Set<String> = []
        if let configFile {
            let values = try Self.settings(inJSONFile: configFile)
            fileKeys = Set(values.keys)
            providers.append(Self.provider(named: "config file \(configFile)", values))
        }
        self.reader = ConfigReader(providers: providers)
        self.fileKeys = fileKeys
    }

    private static func provider(named name: String, _ values: [String: String]) -> InMemoryProvider {
        InMemoryProvider(
            name: name,
            values: Dictionary(
                uniqueKeysWithValues: values.map { (AbsoluteConfigKey([$0.key]), ConfigValue(.string($0.value), isSecret: false)) }))
    }

    func string(_ name: String) -> String? {
        asked.insert(name)
        return reader.string(forKey: ConfigKey([name]))
    }

    /// Call after every setting was read: a key in the config file that no setting asked for is a typo.
    func rejectUnknownFileKeys() throws(ConfigurationError) {
        if let unknown = fileKeys.subtracting(asked).sorted().first {
            throw .invalid(unknown, "is not a herald serve setting (in the config file); `herald serve --help` lists them")
        }
    }

    /// The file must be one JSON object of scalars. It is read here, as text by setting name, so that
    /// `"dev": true` and `"port": 7801` read like their command-line forms.
    private static func settings(inJSONFile path: String) throws(ConfigurationError) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalid("config", "cannot read \(path)")
        }
        do {
            return try JSONDecoder().decode([String: ScalarSetting].self, from: data).mapValues(\.text)
        } catch let DecodingError.typeMismatch(_, context) where context.codingPath.count == 1 {
            throw .invalid(context.codingPath[0].stringValue, "must be a string, number or boolean in \(path)")
        } catch {
            throw .invalid("config", "\(path) must hold one JSON object of settings: \(error)")
        }
    }
}

/// One value of the config file, kept as the text its command-line form would have.
private struct ScalarSetting: Decodable {
    let text: String

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            text = flag ? "true" : "false"
        } else if let whole = try? container.decode(Int.self) {
            text = String(whole)
        } else if let number = try? container.decode(Double.self) {
            text = String(number)
        } else if let string = try? container.decode(String.self) {
            text = string
        } else {
            throw DecodingError.typeMismatch(
                String.self, .init(codingPath: decoder.codingPath, debugDescription: "not a string, number or boolean"))
        }
    }
}

/// The command line of `herald serve`, by setting name: `--name value`, `--name=value`, and `--dev`
/// alone for a flag. The value after an option is taken as it is, so `--ping-interval -1` reaches
/// the setting's rule (which names what is wrong) instead of looking like another option.
enum CommandLineSettings {
    static func parse(_ arguments: [String]) throws(ConfigurationError) -> [String: String] {
        var values: [String: String] = [:]
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw .invalid(argument, "is not an option of herald serve; `herald serve --help` lists them")
            }
            let option = argument.dropFirst(2)
            let name = String(option.prefix { $0 != "=" })
            let inline = option.contains("=") ? String(option.drop { $0 != "=" }.dropFirst()) : nil
            guard let setting = ServeSetting.named(name) else {
                throw .invalid(name, "is not a herald serve setting; `herald serve --help` lists them")
            }
            if let inline {
                values[name] = inline
            } else if setting.isFlag {
                values[name] = "true"
            } else {
                guard index < arguments.endIndex else { throw .invalid(name, "needs a value: --\(name) <value>") }
                values[name] = arguments[index]
                index += 1
            }
        }
        return values
    }
}
