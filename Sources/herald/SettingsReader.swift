import Configuration
import Foundation
import HeraldServer

/// Reads `herald serve` settings by their option name (`lease-ttl`), in order of precedence from the
/// command line, the environment (`HERALD_LEASE_TTL`) and a JSON config file (`{"lease-ttl": 10}`),
/// falling back to the default. A value that does not parse fails with a message naming the setting.
///
/// swift-configuration layers the sources; the values are read as text and parsed here, because
/// its typed getters turn a malformed value into "missing", which would silently mean the default.
/// The config file is parsed here too, for the same reason and to reject unknown keys.
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

    /// The environment variable that carries a setting.
    static func environmentName(of name: String) -> String {
        "HERALD_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    func string(_ name: String) -> String? {
        asked.insert(name)
        return reader.string(forKey: ConfigKey([name]))
    }

    func string(_ name: String, default value: String) -> String {
        string(name) ?? value
    }

    func int(_ name: String, default value: Int) throws(ConfigurationError) -> Int {
        guard let text = string(name) else { return value }
        guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else { throw invalid(name, "an integer", text) }
        return parsed
    }

    func double(_ name: String, default value: Double) throws(ConfigurationError) -> Double {
        guard let text = string(name) else { return value }
        guard let parsed = Double(text.trimmingCharacters(in: .whitespaces)), parsed.isFinite else {
            throw invalid(name, "a number", text)
        }
        return parsed
    }

    func bool(_ name: String, default value: Bool) throws(ConfigurationError) -> Bool {
        guard let text = string(name) else { return value }
        switch text.trimmingCharacters(in: .whitespaces).lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off", "": return false
        default: throw invalid(name, "true or false", text)
        }
    }

    /// Call after every setting was read: a key in the config file that no setting asked for is a typo.
    func rejectUnknownFileKeys() throws(ConfigurationError) {
        if let unknown = fileKeys.subtracting(asked).sorted().first {
            throw .invalid(unknown, "is not a herald serve setting (in the config file); `herald serve --help` lists them")
        }
    }

    private func invalid(_ name: String, _ expected: String, _ text: String) -> ConfigurationError {
        .invalid("\(name) (--\(name) / \(Self.environmentName(of: name)))", "expected \(expected), got \"\(text)\"")
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
