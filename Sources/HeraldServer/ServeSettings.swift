import HeraldCore
import Logging

/// One `herald serve` setting. Its name is the option (`--lease-ttl`), the environment variable
/// (`HERALD_LEASE_TTL`) and the config file key (`"lease-ttl"`). `ServeSetting.all` is the one
/// list of them: `serve --help`, the environment, the config file, the start-up checks and the
/// table in docs/configuration.md all come from it.
public struct ServeSetting {
    public let name: String
    /// One line for `serve --help`.
    public let summary: String
    /// The fuller text of docs/configuration.md (markdown); the summary when nil.
    public let details: String?
    /// The default as shown in `--help` and the docs.
    public let shownDefault: String
    /// A flag (`--dev`) takes no value on the command line; every other setting takes one.
    public let isFlag: Bool
    /// Sets the parsed value, or throws what the text should have been.
    let apply: (inout HeraldConfiguration, String) throws(SettingValueError) -> Void
    /// What is wrong with the value in a configuration, if anything.
    let violation: (HeraldConfiguration) -> String?

    public var environmentName: String { Self.environmentName(of: name) }

    /// `HERALD_` and the name in capitals, `-` turned into `_`.
    public static func environmentName(of name: String) -> String {
        "HERALD_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// Parses `text` into the setting's place in `configuration`.
    public func apply(_ text: String, to configuration: inout HeraldConfiguration) throws(ConfigurationError) {
        do {
            try apply(&configuration, text)
        } catch {
            throw .invalid("\(name) (--\(name) / \(environmentName))", "expected \(error.expected), got \"\(text)\"")
        }
    }
}

/// What a setting's text should have been ("an integer").
public struct SettingValueError: Error {
    public let expected: String
}

/// A simple rule on one value; rules that tie settings together live in `HeraldConfiguration.validated`.
enum SettingRule {
    case none
    case positive
    /// 0 turns the setting off.
    case zeroOrPositive
    case range(ClosedRange<Int>)

    func violation(_ value: Double) -> String? {
        switch self {
        case .none: nil
        case .positive: value > 0 ? nil : "must be positive"
        case .zeroOrPositive: value >= 0 ? nil : "must be 0 (off) or positive"
        case .range(let range):
            range.contains(Int(value)) ? nil : "must be \(range.lowerBound)-\(range.upperBound), got \(Self.shown(value))"
        }
    }

    static func shown(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

typealias Settable<Value> = WritableKeyPath<HeraldConfiguration, Value>

extension ServeSetting {
    private static let defaults = HeraldConfiguration()

    /// A rule that applies only to cluster nodes (`--kafka` set).
    private static func cluster(_ rule: SettingRule) -> (HeraldConfiguration, Double) -> String? {
        { configuration, value in configuration.isCluster ? rule.violation(value) : nil }
    }

    static func int(
        _ name: String, _ path: Settable<Int>, _ summary: String, details: String? = nil, rule: SettingRule = .none,
        clusterOnly: Bool = false
    ) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: details, shownDefault: String(defaults[keyPath: path]), isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in
                guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else { throw .init(expected: "an integer") }
                configuration[keyPath: path] = value
            },
            violation: { configuration in
                guard !clusterOnly || configuration.isCluster else { return nil }
                return rule.violation(Double(configuration[keyPath: path]))
            })
    }

    static func number(
        _ name: String, _ path: Settable<Double>, _ summary: String, details: String? = nil, rule: SettingRule = .positive,
        clusterOnly: Bool = false
    ) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: details, shownDefault: SettingRule.shown(defaults[keyPath: path]),
            isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in
                guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                    throw .init(expected: "a number")
                }
                configuration[keyPath: path] = value
            },
            violation: { configuration in
                guard !clusterOnly || configuration.isCluster else { return nil }
                return rule.violation(configuration[keyPath: path])
            })
    }

    static func bool(
        _ name: String, _ path: Settable<Bool>, _ summary: String, details: String? = nil, flag: Bool = false
    ) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: details,
            shownDefault: flag ? (defaults[keyPath: path] ? "on" : "off") : String(defaults[keyPath: path]), isFlag: flag,
            apply: { (configuration, text) throws(SettingValueError) in
                switch text.trimmingCharacters(in: .whitespaces).lowercased() {
                case "true", "1", "yes", "on": configuration[keyPath: path] = true
                case "false", "0", "no", "off", "": configuration[keyPath: path] = false
                default: throw .init(expected: "true or false")
                }
            },
            violation: { _ in nil })
    }

    static func text(_ name: String, _ path: Settable<String>, _ summary: String, details: String? = nil) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: details, shownDefault: defaults[keyPath: path], isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in configuration[keyPath: path] = text },
            violation: { _ in nil })
    }

    static func optionalText(
        _ name: String, _ path: Settable<String?>, _ summary: String, details: String? = nil, shown: String = "none"
    ) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: details, shownDefault: shown, isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in configuration[keyPath: path] = text },
            violation: { _ in nil })
    }

    /// A comma-separated list; blanks are dropped.
    static func list(_ name: String, _ path: Settable<[String]>, _ summary: String, details: String? = nil) -> ServeSetting {
        let initial = defaults[keyPath: path]
        return ServeSetting(
            name: name, summary: summary, details: details,
            shownDefault: initial.isEmpty ? "none" : initial.joined(separator: ","), isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in
                configuration[keyPath: path] = text.split(separator: ",")
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            },
            violation: { _ in nil })
    }

    static func logLevel(_ name: String, _ summary: String, details: String? = nil) -> ServeSetting {
        let levels = Logger.Level.allCases.map(\.rawValue)
        return ServeSetting(
            name: name, summary: summary, details: details, shownDefault: defaults.logLevel.rawValue, isFlag: false,
            apply: { (configuration, text) throws(SettingValueError) in
                guard let level = Logger.Level(rawValue: text.trimmingCharacters(in: .whitespaces).lowercased()) else {
                    throw .init(expected: levels.dropLast().joined(separator: ", ") + " or " + (levels.last ?? ""))
                }
                configuration.logLevel = level
            },
            violation: { _ in nil })
    }

    /// `--config` names where the other settings may come from; it sets nothing itself.
    static func source(_ name: String, _ summary: String) -> ServeSetting {
        ServeSetting(
            name: name, summary: summary, details: nil, shownDefault: "none", isFlag: false,
            apply: { (_, _) throws(SettingValueError) in }, violation: { _ in nil })
    }
}
